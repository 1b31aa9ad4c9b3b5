"""What :func:`~napari_stem_defects.analyze.analyze_image` returns: the results of every stage, and the
tables and summaries the output files are written from (:mod:`.analysis_files`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .analysis_files import FORMAT_VERSION
from .cells.geometry import CELL_STRUCTURE_COLUMNS, with_structure
from .cells.site_labels import site_defects
from .cells.statistics import defect_statistics
from .columns import ColumnResult
from .columns.phase_map import phase_areas, phase_maps
from .columns.result import SITE_STRUCTURE_COLUMNS
from .image_check import ImageCheck
from .io.stem_image import StemImage


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


def _excluded(cells: pd.DataFrame, include_boundary: bool) -> dict[str, int]:
    """Cells left out of a frame's statistics: incomplete ones, and boundary ones unless included."""
    complete = cells["complete"].to_numpy(bool) if "complete" in cells else np.ones(len(cells), bool)
    boundary = cells["boundary"].to_numpy(bool) if "boundary" in cells else np.zeros(len(cells), bool)
    return {"incomplete": int((~complete).sum()),
            "boundary": 0 if include_boundary else int((complete & boundary).sum())}


__all__ = ["Analysis"]
