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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .analysis_files import FORMAT_VERSION, write_analysis
from .analysis_heatmaps import (
    CELLS_ENGINE,
    HEATMAP_CHOICES,
    cell_heatmaps_of,
    check_heatmap_settings,
    heatmaps_of,
)
from .analysis_result import Analysis
from .cells.alike_pairs import alike_pair_notes
from .cells.classify import classify_site_table, resolve_classifiers
from .cells.joint import one_answer
from .cells.statistics import defect_statistics
from .columns import (
    SITES_CSV_COLUMNS,
    columns_from_map,
    compute_detection_map,
)
from .columns.intensity import metal_x2_intensity
from .columns.pipeline import lattice_spacing, validate_image
from .columns.result import ColumnDetectionError
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


__all__ = ["FORMAT_VERSION", "HEATMAP_CHOICES", "SITES_CSV_COLUMNS", "Analysis", "analyze_image", "write_analysis"]
