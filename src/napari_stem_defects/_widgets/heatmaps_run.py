"""What one run of the "Defect heatmaps" dock produced, and how the dock words it (summary, counts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..heatmaps.engines import HeatmapResult
from ..heatmaps.regions import Regions


@dataclass
class HeatmapsRun:
    """What one heatmap run produced (the cache the threshold and outline work on).

    Attributes
    ----------
    result : HeatmapResult or None
        The maps, uncertainty, engine, window and stride used.
    regions : Regions or None
        Regions of the maps at the current threshold.
    image : napari.layers.Image or None
        The analysed image layer.
    frame : int or None
        Stack frame analysed (None for a 2D image).
    placement : dict
        ``scale``, ``units`` and ``translate`` (last two axes) of the image.
    pixel_size : (float, float) or None
        Å per pixel (y, x) when known.
    params : dict
        Settings of the run (material, engine, nn_px and where it came from).
    error : str
        Why nothing was computed ("" when it worked).
    cancelled : bool
        The run was cancelled before it finished (nothing is shown).
    layers : list
        The probability and uncertainty Image layers.
    shapes : napari.layers.Shapes or None
        The regions layer.
    """

    result: HeatmapResult | None = None
    regions: Regions | None = None
    image: Any = None
    frame: int | None = None
    placement: dict[str, Any] = field(default_factory=dict)
    pixel_size: tuple[float, float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    cancelled: bool = False
    layers: list = field(default_factory=list)
    shapes: Any = None



def region_counts(regions: Regions, classes: tuple[str, ...]) -> dict[str, int]:
    """Number of regions of each family (0 for the families without any)."""
    found = regions.table["class"].value_counts()
    return {c: int(found.get(c, 0)) for c in classes}


def _length(px: float | None, pixel_size: tuple[float, float] | None) -> str:
    if px is None:
        return "?"
    return f"{px:.1f} px" + ("" if pixel_size is None else f" ({px * float(np.mean(pixel_size)):.2f} Å)")


def summary(run: HeatmapsRun, counts: dict[str, int]) -> str:
    """Engine, window and stride used, the lattice spacing's source and the regions per family."""
    result, params = run.result, run.params
    where = f"'{getattr(run.image, 'name', 'image')}'" + ("" if run.frame is None else
                                                           f" (frame {run.frame}, current frame only)")
    if result.window_px is not None:
        how = f"window {_length(result.window_px, run.pixel_size)}, stride {_length(result.stride_px, run.pixel_size)}"
    elif result.engine == "cells":
        how = "drawn from the classified cells (one answer with them)"
    else:
        how = "per-pixel maps (no window)"
    nn_px = params.get("nn_px") if params.get("nn_px") is not None else result.nn_px
    nn = (f"nn {nn_px:.2f} px {params.get('nn_source', 'measured from the image')}" if nn_px is not None
          else f"lattice {params.get('nn_source', 'measured from the image')}")
    regions = ", ".join(f"{c} {n}" for c, n in counts.items())
    return (f"{result.engine} heatmaps of {where}, {params.get('material', '')}: {how}; {nn}.\n"
            f"Regions at threshold {run.regions.threshold:.2f}, at least {run.regions.min_area_px} px: {regions}.")


__all__ = ["HeatmapsRun", "region_counts", "summary"]
