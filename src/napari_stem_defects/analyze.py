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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .columns import SITES_CSV_COLUMNS, ColumnResult, compute_detection_map, columns_from_map
from .io.atomic import atomic_write, atomic_write_text, json_default
from .cells.classify import classify_site_table
from .cells.site_labels import site_defects
from .cells.statistics import defect_statistics
from .io.stem_image import StemImage

#: Version of the files ``analyze`` writes; bumped when a column changes meaning.
FORMAT_VERSION = 1


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
    """

    image: StemImage
    columns: list[ColumnResult]
    settings: dict = field(default_factory=dict)
    cells: list[pd.DataFrame] = field(default_factory=list)

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
            if stack:
                table.insert(0, "frame", frame)
            parts.append(table)
        return pd.concat(parts, ignore_index=True)

    def summary(self) -> dict:
        """Counts, concentrations and composition per frame and over all frames."""
        material = self.settings["material"]
        pixel = None if self.image.pixel_size is None else float(np.mean(self.image.pixel_size))
        frames = [defect_statistics(c, material, pixel).as_dict() for c in self.cells]
        total = defect_statistics(pd.concat(self.cells, ignore_index=True), material, pixel).as_dict()
        return {"pixel_size_A": self.image.pixel_size, "material": material, "total": total, "frames": frames}


def analyze_image(
    image: StemImage,
    *,
    material: str | None = None,
    method: str = "classical",
    threshold: float | None = None,
    refine: str = "gaussian",
    classifier: str = "cnn",
    progress: Callable[[int, int], None] | None = None,
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
    classifier : {'cnn', 'cnn-two-stage', 'physics'}
        Cell classifier (see :func:`napari_stem_defects.cells.classify.classify_site_table`).
    progress : callable, optional
        ``progress(frames_done, n_frames)``.

    Returns
    -------
    Analysis
    """
    material = material or image.metadata.get("material")
    frames = image.data[None] if image.data.ndim == 2 else image.data
    results = []
    for t, frame in enumerate(frames):
        dmap = compute_detection_map(frame, method, material=material, pixel_size=image.pixel_size)
        results.append(columns_from_map(frame, dmap, threshold=threshold, refine=refine, material=material,
                                        pixel_size=image.pixel_size))
        if progress is not None:
            progress(t + 1, len(frames))
    settings = {"material": material, "method": method, "threshold": threshold, "refine": refine,
                "classifier": classifier if material else None}
    cells = [classify_site_table(frame, r.sites, material, classifier, posteriors=r.posteriors, nn_px=r.nn_px)
             for frame, r in zip(frames, results)] if material else []
    return Analysis(image, results, settings, cells)


def write_analysis(analysis: Analysis, out_dir: str | Path, source: str | None = None) -> dict[str, Path]:
    """Write ``sites.csv``, ``analysis.json`` and (with a material) ``cells.csv`` and ``summary.json`` atomically.

    Returns
    -------
    dict of str to Path
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sites": out / "sites.csv", "analysis": out / "analysis.json"}
    table = analysis.sites_table()
    atomic_write(paths["sites"], lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    if analysis.cells:
        paths["cells"], paths["summary"] = out / "cells.csv", out / "summary.json"
        cells = analysis.cells_table()
        atomic_write(paths["cells"], lambda p: cells.to_csv(p, index=False, float_format="%.4f"))
        atomic_write_text(paths["summary"], json.dumps(analysis.summary(), indent=2, default=json_default))
    info = {
        "format_version": FORMAT_VERSION,
        "software": f"napari-stem-defects {__version__}",
        "source": source,
        "name": analysis.image.name,
        "shape": list(analysis.image.data.shape),
        "pixel_size_A": None if analysis.image.pixel_size is None else list(analysis.image.pixel_size),
        "settings": analysis.settings,
        "sites_columns": list(table.columns),
        "frames": [_frame_info(r) for r in analysis.columns],
    }
    atomic_write_text(paths["analysis"], json.dumps(info, indent=2, default=json_default))
    return paths


def _frame_info(result: ColumnResult) -> dict:
    counts = result.sites.groupby(["sublattice", "species"]).size()
    return {
        "a1_px": result.a1.tolist(),
        "a2_px": result.a2.tolist(),
        "nn_px": result.nn_px,
        "n_sites": int(len(result.sites)),
        "n_detected": int(result.sites["detected"].sum()),
        "counts": {f"{sub}:{sp}": int(n) for (sub, sp), n in counts.items()},
        "species_fits": {
            sub: {"labels": fit.labels, "means": fit.means.tolist(), "sigmas": fit.sigmas.tolist(),
                  "weights": fit.weights.tolist(), "gamma": fit.gamma}
            for sub, fit in result.species_fits.items()
        },
        "messages": result.messages,
    }



__all__ = ["Analysis", "FORMAT_VERSION", "SITES_CSV_COLUMNS", "analyze_image", "write_analysis"]
