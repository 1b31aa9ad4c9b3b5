"""Whole-image analysis behind ``napari-stem-defects analyze``: run the stages, write the files.

Files written to the output folder (their columns are a contract, documented
in the README):

``sites.csv``
    One row per lattice site (empty sites included) and per frame of a
    stack: :data:`SITES_CSV_COLUMNS` plus ``y_pm``, ``x_pm`` (empty when
    the image has no calibration) and ``frame`` for stacks.
``cells.csv`` (needs a material)
    One row per metal site: its cell, partner X2 column, class, confidence
    and the probability of every class (``p_<class>``).
``summary.json`` (needs a material)
    Pixel size, analysed area, counts, concentrations per cm^2 and
    composition, per frame and over all frames.
``analysis.json``
    Input file, pixel size, material, method, threshold, lattice vectors,
    the fitted species mixtures and any messages, per frame.
``heatmaps.npy``, ``uncertainty.npy``, ``heatmaps.json``, ``regions.csv`` (with heatmaps)
    Per-family defect probability maps (C, H, W) in the order of
    :data:`~napari_stem_defects.heatmaps.classes.HEATMAP_CLASSES` ((T, C, H, W)
    for a stack), the binary entropy of the ``defect`` map (H, W), their
    settings, and one row per region above the threshold and at least the
    smallest region's area
    (:data:`~napari_stem_defects.heatmaps.regions.REGION_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis_files import FORMAT_VERSION, write_analysis
from .analysis_heatmaps import (
    CELLS_ENGINE,
    HEATMAP_CHOICES,
    cell_heatmaps_of,
    check_heatmap_settings,
    heatmaps_of,
)
from .cells.alike_pairs import alike_pair_notes
from .cells.classify import classify_site_table, resolve_classifiers
from .cells.geometry import CELL_STRUCTURE_COLUMNS, with_structure
from .cells.joint import one_answer
from .cells.site_labels import site_defects
from .cells.statistics import defect_statistics
from .columns import (
    SITES_CSV_COLUMNS,
    ColumnResult,
    columns_from_map,
    compute_detection_map,
)
from .columns.intensity import metal_x2_intensity
from .columns.phase_map import phase_areas, phase_maps
from .columns.pipeline import lattice_spacing, validate_image
from .columns.result import SITE_STRUCTURE_COLUMNS, ColumnDetectionError
from .columns.stated_shares import stated_share_notes
from .heatmaps.regions import MIN_AREA_NN2
from .image_check import (
    Finding,
    ImageCheck,
    ImageCheckError,
    check_image,
    check_lattice,
)
from .io.metadata import as_float
from .io.stem_image import StemImage
from .materials import Material


@dataclass
class Analysis:
    """Results of :func:`analyze_image` for one image or stack.

    Attributes
    ----------
    image : StemImage
        What was analysed.
    columns : list of ColumnResult
        One per frame (one for a 2D image).
    settings : dict
        Method, threshold, refinement and material used.
    cells : list of DataFrame
        Classified cells per frame (empty without a material).
    heatmaps : list of HeatmapResult
        Defect probability maps per frame (empty unless heatmaps were asked for).
    regions : list of Regions
        Regions of those maps above the heatmap threshold, per frame.
    check : ImageCheck, optional
        What the image check found (lattice, spacing, honeycomb, composition)
        and which pixel size was used; :attr:`image` carries that pixel size.
    """

    image: StemImage
    columns: list[ColumnResult]
    settings: dict = field(default_factory=dict)
    cells: list[pd.DataFrame] = field(default_factory=list)
    heatmaps: list[Any] = field(default_factory=list)
    regions: list[Any] = field(default_factory=list)
    check: ImageCheck | None = None
    lattice: list[Any] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What every output file repeats: an adopted calibration, or a failed check analysed anyway."""
        if self.check is None:
            return []
        out = list(self.check.warnings)
        if self.check.forced and not self.check.ok:
            out.insert(0, "analysed although the image check failed (--force): " + self.check.message)
        return out

    def sites_table(self) -> pd.DataFrame:
        """The ``sites.csv`` table: all frames, with positions in pm when calibrated."""
        parts = []
        stack = self.image.data.ndim == 3
        for frame, result in enumerate(self.columns):
            table = result.sites_csv()
            if self.image.pixel_size is not None:
                table["y_pm"] = table["y_px"] * self.image.pixel_size[0] * 100.0
                table["x_pm"] = table["x_px"] * self.image.pixel_size[1] * 100.0
            else:
                table["y_pm"] = np.nan
                table["x_pm"] = np.nan
            if self.cells:
                table["defect"] = site_defects(result.sites, self.cells[frame])
            for column in SITE_STRUCTURE_COLUMNS:  # added later than the others: after them
                table[column] = with_structure(result.sites)[column].to_numpy()
            if self.lattice:  # analyze --strain (lattice.analysis.LATTICE_SITE_COLUMNS): after all others
                for column, values in self.lattice[frame].site_values.items():
                    table[column] = values.to_numpy()
            if stack:
                table.insert(0, "frame", frame)
            parts.append(table)
        return pd.concat(parts, ignore_index=True)

    def cells_table(self) -> pd.DataFrame:
        """The ``cells.csv`` table (all frames)."""
        stack = self.image.data.ndim == 3
        parts = []
        for frame, cells in enumerate(self.cells):
            table = cells.drop(columns=["verified", "source"])
            later = [c for c in CELL_STRUCTURE_COLUMNS if c in table]  # added later than the others: after them
            table = table[[c for c in table.columns if c not in later] + later]
            if stack:
                table.insert(0, "frame", frame)
            parts.append(table)
        return pd.concat(parts, ignore_index=True)

    def summary(self) -> dict:
        """Counts, concentrations and composition per frame and over all frames."""
        material = self.settings["material"]
        pixel = None if self.image.pixel_size is None else float(np.mean(self.image.pixel_size))
        edges = bool(self.settings.get("include_boundary", False))
        frames = [defect_statistics(c, material, pixel, edges).as_dict() for c in self.cells]
        total = defect_statistics(pd.concat(self.cells, ignore_index=True), material, pixel, edges).as_dict()
        out = {"pixel_size_A": self.image.pixel_size, "material": material, "total": total, "frames": frames,
               "phases": [phase_areas(p, self.image.pixel_size) for p in self.phase_maps()[0]],
               "excluded_cells": [_excluded(c, edges) for c in self.cells]}
        if self.check is not None:
            out["warnings"] = self.warnings
            out["image_check"] = self.check.as_dict()
        if self.heatmaps:
            out["heatmaps"] = self.heatmaps_summary()
        return out

    def phase_maps(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Phase map (uint8 codes) and domain map (int32) of every frame (see :mod:`~.columns.phase_map`)."""
        phases, domains = [], []
        for result in self.columns:
            p, d = phase_maps(result.sites, self.image.data.shape[-2:], result.regions)
            phases.append(p)
            domains.append(d)
        return phases, domains

    def heatmap_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``heatmaps.npy`` (float32, (C, H, W); (T, C, H, W) for a stack) and ``uncertainty.npy``
        (float32, (H, W); (T, H, W) for a stack)."""
        maps = np.stack([r.maps for r in self.heatmaps]).astype(np.float32, copy=False)
        unc = np.stack([r.uncertainty for r in self.heatmaps]).astype(np.float32, copy=False)
        if self.image.data.ndim == 2:
            maps, unc = maps[0], unc[0]
        return maps, unc

    def regions_table(self) -> pd.DataFrame:
        """The ``regions.csv`` table: REGION_COLUMNS, after a ``frame`` column for a stack."""
        stack = self.image.data.ndim == 3
        parts = []
        for frame, regions in enumerate(self.regions):
            table = regions.table.copy()
            if stack:
                table.insert(0, "frame", frame)
            parts.append(table)
        return pd.concat(parts, ignore_index=True)

    def _region_counts(self, regions: Any) -> dict[str, int]:
        counts = regions.table["class"].value_counts()
        return {c: int(counts.get(c, 0)) for c in self.heatmaps[0].classes}

    def heatmaps_summary(self) -> dict:
        """The ``heatmaps`` entry of ``summary.json``: engine, window, stride, threshold, smallest
        region and region counts per family (all frames, and per frame)."""
        first = self.heatmaps[0]
        frames = [self._region_counts(r) for r in self.regions]
        total = {c: sum(f[c] for f in frames) for c in first.classes}
        return {"engine": first.engine, "window_px": first.window_px, "stride_px": first.stride_px,
                "threshold": self.regions[0].threshold, "min_area_nn2": self.settings["heatmaps"]["min_area_nn2"],
                "min_area_px": [r.min_area_px for r in self.regions], "region_counts": total, "frames": frames}

    def heatmaps_info(self) -> dict:
        """The ``heatmaps.json`` sidecar of ``heatmaps.npy`` and ``uncertainty.npy``."""
        first = self.heatmaps[0]
        maps, unc = self.heatmap_arrays()
        calibrated = self.image.pixel_size is not None
        return {
            "format_version": FORMAT_VERSION,
            "maps_file": "heatmaps.npy",
            "axes": "tcyx" if maps.ndim == 4 else "cyx",
            "shape": list(maps.shape),
            "dtype": "float32",
            "classes": list(first.classes),
            "engine": first.engine,
            "window_px": first.window_px,
            "stride_px": first.stride_px,
            "pixel_size": list(self.image.pixel_size) if calibrated else None,
            "units": "angstrom" if calibrated else "pixel",
            "threshold": self.regions[0].threshold,
            "min_area_nn2": self.settings["heatmaps"]["min_area_nn2"],
            "min_area_px": [r.min_area_px for r in self.regions],
            "regions_file": "regions.csv",
            "uncertainty_file": "uncertainty.npy",
            "uncertainty_axes": "tyx" if unc.ndim == 3 else "yx",
            "uncertainty": "binary entropy in bits (0 sure, 1 undecided) of the defect map",
            "warnings": self.warnings,
        }


def analyze_image(
    image: StemImage,
    *,
    material: str | None = None,
    method: str = "classical",
    threshold: float | None = None,
    refine: str = "gaussian",
    classifier: str | None = None,
    heatmaps: str | None = None,
    heatmap_threshold: float = 0.5,
    heatmap_window: float | None = None,
    heatmap_min_area: float = MIN_AREA_NN2,
    cell_model: str | Path | None = None,
    column_model: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
    pixel_size_source: str = "file",
    mask: np.ndarray | None = None,
    include_boundary: bool = False,
    microscope: Any = None,
    strain: bool = False,
    strain_reference: str = "domain",
    trust_model_file: bool = False,
    column_classifier: str | None = None,
) -> Analysis:
    """Detect the atom columns of every frame of an image, and classify its cells when the material is known.

    Parameters
    ----------
    image : StemImage
        2D image or (t, y, x) stack with its calibration.
    material : str, optional
        Host material; defaults to the image metadata's 'material' if present.
    method, threshold, refine
        See :func:`napari_stem_defects.columns.columns_from_map`.
    classifier : {'cnn+columns', 'cnn', 'cnn-two-stage', 'physics'}, optional
        Cell classifier (see :func:`napari_stem_defects.cells.classify.classify_site_table`);
        default :func:`~napari_stem_defects.cells.classify.resolve_classifiers`.
    heatmaps : {None, 'none', 'sliding-window', 'attention-unet', 'cells'}
        Also compute defect probability heatmaps with this engine (needs a
        material), at the detected columns' nn distance (see
        :func:`napari_stem_defects.heatmaps.engines.compute_heatmaps`), and the
        regions where they reach ``heatmap_threshold``. 'cells' draws them from
        the cells' class probabilities (:mod:`napari_stem_defects.heatmaps.from_cells`),
        so they never contradict the cells.
    heatmap_threshold : float
        Probability at which a pixel belongs to a region, in (0, 1].
    heatmap_window : float, optional
        Sliding-window side in image pixels (default automatic: 64 px when the
        lattice suits it). The frames of a stack share the first frame's window.
    heatmap_min_area : float
        Smallest region kept, in squared metal-to-chalcogen distances (nn^2) of
        the frame's lattice (default 0.6: a point defect lights up about 0.8
        nn^2; smaller specks are noise); 0 keeps every region.
    cell_model : str or Path, optional
        Weights of the CNN cell classifier: a model version name
        (:func:`napari_stem_defects.model_registry.list_models`) or a ``.pt`` file;
        default the shipped model. Recorded in the settings (``cell_model``).
    column_model : str or Path, optional
        Weights of the column U-Net for ``method='deep'``: a model version name
        (``list_models("columns")``) or a ``.pt`` file; default the shipped model.
        Recorded in the settings (``column_model``). Ignored by the classical method.
        For ``method='atomai'``: the file of a trained atomai Segmentor (required), loaded only
        with ``trust_model_file`` (see :mod:`napari_stem_defects.columns.atomai_engine`).
    progress : callable, optional
        ``progress(frames_done, n_frames)``.
    force : bool
        Analyse even when the image check fails (its findings go into every output's warnings).
    pixel_size_source : {'file', 'typed'}
        Where ``image.pixel_size`` came from; a typed pixel size is never replaced by the lattice's.
    mask : ndarray of bool, shape (H, W), optional
        Pixels not to analyse (every frame); NaN pixels are always left out.
    include_boundary : bool
        Count boundary cells (domain and grain boundaries, edges of holes, amorphous and masked
        areas) in the statistics; by default they are left out.
    microscope : MicroscopeSettings, optional
        The image's beam energy, convergence and detector angles: which sublattice is the metal
        one then follows the multislice-calibrated table instead of Z^1.7 (see
        :func:`~napari_stem_defects.columns.columns_from_map`). By default the file's, when its
        metadata give both energy and detector angles
        (:func:`~napari_stem_defects.simulate.microscope.settings_from_metadata`).
    trust_model_file : bool
        Opt-in to unpickle an atomai model file (``method='atomai'``); without it that method refuses.
    column_classifier : {'context', 'intensity'}, optional
        What decides each metal and X2 column's species before the cells: the context-encoder
        classifier (Zernike contrast + the material, beam and detector;
        :mod:`~napari_stem_defects.columns.context_classifier`; needs a material), whose column
        types then share the one joint decision with the cell classifier, or the image's
        Z-contrast mixture alone. Default 'context' with a material, 'intensity' without
        (:func:`~napari_stem_defects.cells.classify.resolve_classifiers`).

    Returns
    -------
    Analysis
        Its ``image`` carries the pixel size the check chose (the lattice's when the file's is
        wrong and no other material fits; see :mod:`napari_stem_defects.image_check`).

    Raises
    ------
    ImageCheckError
        The image is not a 2H-MX2 monolayer of the stated material (no hexagonal lattice, no
        honeycomb, intensities or spacing of another material), unless ``force``; raised before
        any cell is classified.
    ValueError
        Bad heatmap settings (checked before any work), an unknown cell or column model, or heatmaps
        that cannot be computed (e.g. a window outside the patch classifier's trained range).
    """
    material = material or image.metadata.get("material")
    if material:
        from .materials import parse_material

        # The one place the formula is read: an unknown one stops here, with a message, before any work;
        # every stage below gets the parsed Material.
        material = parse_material(material)
    classifier, column_classifier = resolve_classifiers(material, classifier, column_classifier)
    model = _model("cells", cell_model) if (material and classifier != "physics") else None
    unet = _model("columns", column_model) if method == "deep" else None
    if method == "atomai":  # refused without the opt-in, or a bad file, before any work
        from .columns.atomai_engine import atomai_model

        unet = atomai_model(column_model, trust_model_file)
    context_model = _column_classifier(column_classifier, material)
    engine = None if heatmaps in (None, "none") else heatmaps
    if engine is not None:
        check_heatmap_settings(engine, material, heatmap_threshold, heatmap_window, heatmap_min_area)
    if microscope is None:
        from .simulate.microscope import settings_from_metadata

        microscope = settings_from_metadata(image.metadata)
    frames = image.data[None] if image.data.ndim == 2 else image.data
    lattice, lattice_finding = _lattice_of(frames[0], material, image.pixel_size)
    if not lattice_finding.ok and not force:
        raise ImageCheckError(ImageCheck(material=material.name if material else None, findings=[lattice_finding],
                                         file_pixel_size=image.pixel_size))
    results, maps, regions = [], [], []
    window = heatmap_window
    check = None
    for t, frame in enumerate(frames):
        dmap = compute_detection_map(frame, method, material=material, pixel_size=image.pixel_size, model=unet,
                                     lattice=lattice if t == 0 else None)
        result = columns_from_map(frame, dmap, threshold=threshold, refine=refine, material=material,
                                  pixel_size=image.pixel_size, mask=mask, microscope=microscope)
        if t == 0:
            check = check_image(frame, dmap.lattice, result.sites, result.nn_px, material, image.pixel_size,
                                pixel_size_source=pixel_size_source, lattice_finding=lattice_finding,
                                fitted=(result.a1, result.a2), microscope=microscope)
            check.forced = force and not check.ok
            if not check.ok and not force:
                raise ImageCheckError(check)
            if check.pixel_size != image.pixel_size and check.pixel_size_source == "lattice" \
                    and image.pixel_size is not None:
                image = replace(image, pixel_size=check.pixel_size,
                                metadata={**image.metadata, "pixel_size_A": check.pixel_size,
                                          "file_pixel_size_A": image.pixel_size})
        result.pixel_size = image.pixel_size
        if context_model is not None:
            from .columns.context_classifier import apply_context_classifier

            apply_context_classifier(result, frame, material, microscope, context_model,
                                     energy_kV=as_float(image.metadata.get("beam_energy_keV")))
        results.append(result)
        if engine is not None and engine != CELLS_ENGINE:
            hm, found = heatmaps_of(frame, material, engine, result.nn_px, image.pixel_size, window,
                                     heatmap_threshold, heatmap_min_area, f" of frame {t}" if len(frames) > 1 else "")
            window = hm.window_px if hm.window_px is not None else window
            maps.append(hm)
            regions.append(found)
        if progress is not None:
            progress(t + 1, len(frames))
    settings = {"material": material.name if material else None, "method": method, "threshold": threshold,
                "refine": refine,
                "classifier": classifier if material else None, "column_classifier": column_classifier,
                "include_boundary": bool(include_boundary),
                "mask": None if mask is None else int(np.count_nonzero(mask))}
    if unet is not None:
        settings["column_model"] = str(column_model) if column_model is not None else "shipped"
    if model is not None:
        settings["cell_model"] = str(cell_model) if cell_model is not None else "shipped"
    if engine is not None:
        settings["heatmaps"] = {"engine": engine, "threshold": float(heatmap_threshold), "window_px": heatmap_window,
                                "min_area_nn2": float(heatmap_min_area)}
    cells = [classify_site_table(frame, r.sites, material, classifier, posteriors=r.posteriors, nn_px=r.nn_px,
                                 model=model)
             for frame, r in zip(frames, results)] if material else []
    for result, table in zip(results, cells):  # one answer per column: species follow their cell's class
        result.sites = one_answer(result.sites, table, material, result.posteriors)
        counted = defect_statistics(table, material, None, include_boundary).counts  # the cells the summary counts
        result.messages.extend(alike_pair_notes(material, counted, microscope, metal_x2_intensity(result.sites)))
        result.messages.extend(stated_share_notes(material, result.sites))
    if engine == CELLS_ENGINE:  # drawn from the cells, after them: one answer
        for frame, result, table in zip(frames, results, cells):
            hm, found = cell_heatmaps_of(result.sites, table, frame.shape, result.nn_px, image.pixel_size,
                                         heatmap_threshold, heatmap_min_area)
            maps.append(hm)
            regions.append(found)
    lattice = []
    if strain:
        from .lattice.analysis import analyse_frames

        settings["strain"] = {"reference": strain_reference}
        lattice = analyse_frames(image, frames, results, cells, material, strain_reference)
    return Analysis(image, results, settings, cells, maps, regions, check, lattice)


def _lattice_of(frame: np.ndarray, material: Material | None,
                pixel_size: tuple[float, float] | None) -> tuple[tuple[Any, float] | None, Finding]:
    """The frame's lattice and nn distance (as column detection finds them) and the lattice check's finding.

    Raises
    ------
    ColumnDetectionError
        The frame cannot be analysed at all (not 2D, constant, all NaN, ...).
    """
    img = validate_image(frame)
    try:
        lattice = lattice_spacing(img, material, pixel_size)
    except ColumnDetectionError:
        lattice = None
    return lattice, check_lattice(img, None if lattice is None else lattice[0], pixel_size)


def _column_classifier(name: str, material: Material | None) -> Any:
    """The context classifier for ``column_classifier='context'`` (None for 'intensity'); refused without a material."""
    from .columns.context_classifier import COLUMN_CLASSIFIERS, load_context_classifier

    if name not in COLUMN_CLASSIFIERS:
        raise ValueError(f"column classifier must be one of {', '.join(COLUMN_CLASSIFIERS)}, not {name!r}")
    if name == "intensity":
        return None
    if not material:
        raise ValueError("the context column classifier needs the material (e.g. --material WSe2): it is its context")
    return load_context_classifier()


def _model(kind: str, name_or_path: str | Path | None) -> Any:
    """The network of a model version name or weights file (None: the shipped one), for 'cells' or 'columns'.

    Raises
    ------
    ValueError
        No model version of that name and no such file.
    """
    from .model_registry import resolve_model

    try:
        path = resolve_model(kind, name_or_path)
    except KeyError as err:
        raise ValueError(err.args[0] if err.args else str(err)) from None
    if kind == "cells":
        from .cells.cnn import load_cell_model

        return load_cell_model(path)
    from .columns.unet import load_column_model

    return load_column_model(path)


def _excluded(cells: pd.DataFrame, include_boundary: bool) -> dict[str, int]:
    """Cells left out of a frame's statistics: incomplete ones, and boundary ones unless included."""
    complete = cells["complete"].to_numpy(bool) if "complete" in cells else np.ones(len(cells), bool)
    boundary = cells["boundary"].to_numpy(bool) if "boundary" in cells else np.zeros(len(cells), bool)
    return {"incomplete": int((~complete).sum()),
            "boundary": 0 if include_boundary else int((complete & boundary).sum())}


__all__ = ["FORMAT_VERSION", "HEATMAP_CHOICES", "SITES_CSV_COLUMNS", "Analysis", "analyze_image", "write_analysis"]
