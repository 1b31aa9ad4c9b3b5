"""A batch in the viewer, without Qt: a finished file's results as layer data, and settings from the docks' layers.

:func:`result_layers` reads what ``batch`` (or ``analyze``) wrote for one file
and returns napari layer data tuples named as the docks name theirs
(``<image> columns``, ``<image> cells``), so the Correct labels dock can
take them up. :func:`settings_from_layers` reads the settings the other docks
recorded in their layers' metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def result_layers(source: str | Path, results: str | Path) -> list[tuple[Any, dict[str, Any], str]]:
    """The image, its columns (Points), its classified cells (Shapes) and defect map, as layer data tuples.

    Parameters
    ----------
    source : str or Path
        The analysed file (its first image is shown; a stack stays lazy).
    results : str or Path
        The file's results folder (``sites.csv``, ``cells.csv``, ``analysis.json``...).

    Returns
    -------
    list of (data, kwargs, layer type)
    """
    from ..cells.shapes_layer import cells_to_shapes_data
    from ..columns.points_layer import points_kwargs
    from ..io.rsciio_reader import read_stem_file

    results = Path(results)
    info = json.loads((results / "analysis.json").read_text(encoding="utf-8"))
    image = read_stem_file(source, lazy=True)[0]
    pixel = info.get("pixel_size_A") or image.pixel_size
    stack = image.data.ndim == 3
    yx = tuple(float(v) for v in pixel) if pixel else (1.0, 1.0)
    units = ("angstrom", "angstrom") if pixel else ("pixel", "pixel")
    scale = ((1.0,) if stack else ()) + yx
    all_units = (("",) if stack else ()) + units
    name = image.name
    out: list[tuple[Any, dict[str, Any], str]] = [
        (image.data, {"name": name, "scale": scale, "units": all_units, "colormap": "gray",
                      "metadata": {k: v for k, v in image.metadata.items() if k != "original_metadata"}}, "image")]
    sites = pd.read_csv(results / "sites.csv", keep_default_na=False)
    nn = float(np.nanmedian([f.get("nn_px", np.nan) for f in info.get("frames", [])] or [np.nan]))
    coords = ["frame", "y_px", "x_px"] if stack else ["y_px", "x_px"]
    features = sites.copy()
    for col in ("verified",):
        features[col] = False
    features["source"] = "model"
    out.append((sites[coords].to_numpy(float),
                points_kwargs(features, nn, name=f"{name} columns", scale=scale, units=all_units,
                              parameters=info.get("settings", {})), "points"))
    if (results / "cells.csv").is_file():
        cells = pd.read_csv(results / "cells.csv", keep_default_na=False)
        frames = [0] if not stack else sorted(cells["frame"].unique())
        polygons, kwargs = [], None
        for t in frames:
            mine = cells[cells["frame"] == t] if stack else cells
            lattice = info["frames"][int(t)]
            data, kwargs_t, _ = cells_to_shapes_data(mine, lattice["a1_px"], lattice["a2_px"], scale=yx, units=units,
                                                     name=f"{name} cells",
                                                     metadata={"material": info["settings"].get("material"),
                                                               "classifier": info["settings"].get("classifier"),
                                                               "image_layer": name})
            if stack:
                data = np.concatenate([np.full((*data.shape[:2], 1), float(t)), data], axis=2)
            polygons.append(data)
            kwargs = _merge_shapes(kwargs, kwargs_t)
        kwargs.update(scale=scale, units=all_units)
        out.append((list(np.concatenate(polygons)), kwargs, "shapes"))
    if (results / "heatmaps.npy").is_file():
        maps = np.load(results / "heatmaps.npy", mmap_mode="r")
        defect = maps[:, 0] if stack else maps[0]
        out.append((defect, {"name": f"{name} defect probability", "scale": scale, "units": all_units,
                             "colormap": "inferno", "blending": "additive", "contrast_limits": (0.0, 1.0),
                             "opacity": 0.7}, "image"))
    return out


def _merge_shapes(total: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the per-shape entries of two frames' Shapes layer kwargs."""
    if total is None:
        return dict(part)
    merged = dict(total)
    merged["features"] = pd.concat([total["features"], part["features"]], ignore_index=True)
    for key in ("edge_color", "face_color", "edge_width"):
        merged[key] = np.concatenate([np.asarray(total[key]), np.asarray(part[key])])
    return merged


def settings_from_layers(layers: Iterable[Any]) -> dict[str, Any]:
    """The analysis settings the docks recorded in their layers, the most recent layer first.

    Reads the ``parameters`` of a columns Points layer (method, threshold,
    refinement, material, species by (column classifier), column model), the metadata of a cells Shapes layer
    (material, classifier, cell model) and of a heatmap layer (engine, window).

    Returns
    -------
    dict
        :class:`~napari_stem_defects.batch.settings.BatchSettings` field names to values
        (only those found).
    """
    found: dict[str, Any] = {}

    def take(key: str, value: Any) -> None:
        if value is not None and key not in found:
            found[key] = value

    for layer in reversed(list(layers)):
        meta = getattr(layer, "metadata", {}) or {}
        params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else None
        if params and meta.get("source") == "napari-stem-defects column detection":
            take("method", params.get("method"))
            take("threshold", params.get("threshold"))
            take("refine", params.get("refine"))
            take("material", params.get("material"))
            take("column_classifier", params.get("species_by"))
            if params.get("method") == "deep":
                take("column_model", params.get("model"))
        elif meta.get("source") == "napari-stem-defects cell classification":
            take("material", meta.get("material"))
            take("classifier", meta.get("classifier"))
            take("cell_model", meta.get("model"))
        elif "engine" in meta and "classes" in meta:
            take("heatmaps", meta.get("engine"))
            take("heatmap_window", meta.get("window_px"))
    return found


__all__ = ["result_layers", "settings_from_layers"]
