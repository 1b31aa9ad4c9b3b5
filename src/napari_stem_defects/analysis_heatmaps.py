"""The heatmap stage of ``analyze``: its settings checked before any work, and one frame's maps and regions."""

from __future__ import annotations

from typing import Any

import numpy as np

from .heatmaps.from_cells import ENGINE as CELLS_ENGINE
from .materials import Material

#: Heatmap engines ``analyze`` accepts ('none' for no heatmaps): the networks of
#: :data:`napari_stem_defects.heatmaps.engines.ENGINES`, then the cells.
HEATMAP_CHOICES: tuple[str, ...] = ("none", "sliding-window", "attention-unet", CELLS_ENGINE)


def check_heatmap_settings(engine: str, material: Material | None, threshold: float, window: float | None,
                            min_area: float) -> None:
    """Reject bad heatmap settings before the long work starts."""
    if engine not in HEATMAP_CHOICES:
        raise ValueError(f"heatmaps must be one of {', '.join(HEATMAP_CHOICES)}, not {engine!r}")
    if not material:
        raise ValueError("heatmaps need the material (e.g. --material MoS2): it is the networks' context")
    if not (np.isfinite(threshold) and 0.0 < float(threshold) <= 1.0):
        raise ValueError(f"the heatmap threshold must be in (0, 1], got {threshold}")
    if window is not None and not (np.isfinite(window) and float(window) > 0):
        raise ValueError(f"the heatmap window must be a positive number of pixels, got {window}")
    if not (np.isfinite(min_area) and float(min_area) >= 0):
        raise ValueError(f"the smallest heatmap region must be a non-negative area in nn^2, got {min_area}")


def heatmaps_of(frame: np.ndarray, material: Material, engine: str, nn_px: float,
                 pixel_size: tuple[float, float] | None, window: float | None, threshold: float,
                 min_area: float, where: str) -> tuple[Any, Any]:
    """Heatmaps and their regions of one frame; a ValueError says which heatmaps failed and why."""
    from .heatmaps.engines import compute_heatmaps

    try:
        result = compute_heatmaps(frame, material, engine, nn_px=nn_px, pixel_size=pixel_size, window_px=window)
    except ValueError as err:
        raise ValueError(f"cannot compute {engine} heatmaps{where}: {err}") from err
    return result, _regions(result, pixel_size, threshold, min_area)


def cell_heatmaps_of(sites: Any, cells: Any, shape: tuple[int, int], nn_px: float,
                     pixel_size: tuple[float, float] | None, threshold: float, min_area: float) -> tuple[Any, Any]:
    """The ``cells`` engine's heatmaps of one frame (drawn from its cells) and their regions."""
    from .heatmaps.from_cells import cell_heatmaps

    result = cell_heatmaps(sites, cells, shape, nn_px)
    return result, _regions(result, pixel_size, threshold, min_area)


def _regions(result: Any, pixel_size: tuple[float, float] | None, threshold: float, min_area: float) -> Any:
    """The regions of one frame's maps at ``threshold``, none under ``min_area`` nn^2."""
    from .heatmaps.regions import find_regions, min_region_px

    return find_regions(result.maps, threshold, pixel_size=pixel_size, classes=result.classes,
                        min_area_px=min_region_px(result.nn_px, min_area))


__all__ = ["CELLS_ENGINE", "HEATMAP_CHOICES", "cell_heatmaps_of", "check_heatmap_settings", "heatmaps_of"]
