"""What napari needs to show heatmaps and regions: layer data and keyword arguments.

Pure functions (no napari import), so the widget stays thin and the tests can
check the layers' meaning without a viewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .classes import HEATMAP_COLORMAPS
from .engines import HeatmapResult
from .regions import Regions, region_boxes

#: Edge colour of each family's regions in the Shapes layer.
REGION_COLOURS: dict[str, str] = {
    "defect": "#ff8c00", "vacancy": "#ff3030", "antisite": "#ff40ff", "adatom": "#00e5ff", "substitution": "#ffe600",
}


def _placement(scale: tuple[float, float], units: tuple[str, str] | None,
               translate: tuple[float, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"scale": tuple(float(s) for s in scale), "translate": tuple(float(t) for t in translate)}
    if units is not None:
        out["units"] = tuple(units)
    return out


def heatmap_layers(
    result: HeatmapResult,
    image_name: str,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    units: tuple[str, str] | None = None,
    translate: tuple[float, float] = (0.0, 0.0),
    stacked: bool = False,
    material: str | None = None,
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Layer data tuples (data, kwargs, 'image') for the maps and the uncertainty.

    Parameters
    ----------
    result : HeatmapResult
    image_name : str
        Name of the analysed image layer (layers are called ``<material> <image> <family> probability``,
        so the layer list, which elides names in the middle, shows the material and the family).
    scale, units, translate : optional
        The image layer's placement (the maps share its physical scale).
    stacked : bool
        One layer with a channel axis (``channel_axis=0``: napari makes one
        toggleable layer per family) instead of separate layers.
    material : str, optional
        The material the maps were made for, first in the names.

    Returns
    -------
    list of (ndarray, dict, str)
        The probability layers (value range 0-1, additive blending, one colormap per
        family), then ``<material> <image> uncertainty`` (entropy in bits, grey).
    """
    place = _placement(scale, units, translate)
    meta = {"engine": result.engine, "window_px": result.window_px, "stride_px": result.stride_px,
            "image_layer": image_name, "classes": list(result.classes), "material": material}
    prefix = f"{material} {image_name}" if material else image_name
    names = [f"{prefix} {c} probability" for c in result.classes]
    cmaps = [HEATMAP_COLORMAPS.get(c, "inferno") for c in result.classes]
    out: list[tuple[np.ndarray, dict[str, Any], str]] = []
    if stacked:
        kw = {"channel_axis": 0, "name": names, "colormap": cmaps, "blending": "additive",
              "contrast_limits": [(0.0, 1.0)] * len(names), "opacity": 0.7,
              "visible": [c == "defect" for c in result.classes], "metadata": meta, **place}
        out.append((result.maps, kw, "image"))
    else:
        for k, c in enumerate(result.classes):
            kw = {"name": names[k], "colormap": cmaps[k], "blending": "additive", "contrast_limits": (0.0, 1.0),
                  "opacity": 0.7, "visible": c == "defect", "metadata": {**meta, "class": c}, **place}
            out.append((result.maps[k], kw, "image"))
    out.append((result.uncertainty, {"name": f"{prefix} uncertainty", "colormap": "gray_r",
                                     "blending": "additive", "contrast_limits": (0.0, 1.0), "opacity": 0.5,
                                     "visible": False, "metadata": {**meta, "what": "binary entropy of defect map"},
                                     **place}, "image"))
    return out


def region_shapes(
    regions: Regions,
    image_name: str,
    *,
    boxes: bool = False,
    scale: tuple[float, float] = (1.0, 1.0),
    units: tuple[str, str] | None = None,
    translate: tuple[float, float] = (0.0, 0.0),
    labels: bool = False,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Data and keyword arguments of the Shapes layer of regions (contours, or boxes).

    The layer's ``features`` are the region table (class, area in nm^2, max and
    mean probability, centroid, box), edges are coloured by family, and the
    text (shown only with ``labels``: hundreds of labels would hide the image; the
    status bar and the dock tell a region's family and probability on hover or
    selection) gives each region's family and peak probability.
    """
    table: pd.DataFrame = regions.table
    data = region_boxes(table) if boxes else [c for c in regions.contours]
    colours = [REGION_COLOURS.get(c, "#ffffff") for c in table["class"]]
    kw = {
        "name": f"{image_name} defect regions",
        "shape_type": "rectangle" if boxes else "polygon",
        "features": table.reset_index(drop=True),
        "edge_color": colours if len(table) else "#ffffff",
        "face_color": "transparent",
        "edge_width": 1.5,
        "text": {"string": "{class} {max_probability:.2f}", "size": 8, "color": "white",
                 "anchor": "upper_left", "visible": bool(labels)} if len(table) else None,
        "metadata": {"threshold": regions.threshold, "min_area_px": regions.min_area_px, "image_layer": image_name,
                     "outline": "boxes" if boxes else "contours", "labels": bool(labels)},
        **_placement(scale, units, translate),
    }
    return data, kw


def legend_html(classes: tuple[str, ...], counts: dict[str, int] | None = None) -> str:
    """One coloured line per family (map colour and region edge), with region counts."""
    lines = []
    for c in classes:
        n = "" if counts is None else f": {counts.get(c, 0)} regions"
        lines.append(f"<span style='color:{REGION_COLOURS.get(c, '#fff')}'>&#9632;</span> {c} "
                     f"({HEATMAP_COLORMAPS.get(c, 'inferno')} map){n}")
    return "<br>".join(lines)


def region_description(row: pd.Series | dict) -> str:
    """One line about a region: family, peak and mean probability, area.

    Examples
    --------
    >>> region_description({"class": "vacancy", "max_probability": 0.97, "mean_probability": 0.71,
    ...                     "area_px": 40, "area_nm2": 0.58})
    'vacancy region: probability up to 0.97 (mean 0.71), 40 px (0.58 nm²)'
    """
    area = f"{int(row['area_px'])} px"
    nm2 = row.get("area_nm2") if hasattr(row, "get") else None
    if nm2 is not None and np.isfinite(float(nm2)):
        area += f" ({float(nm2):.2f} nm²)"
    return (f"{row['class']} region: probability up to {float(row['max_probability']):.2f} "
            f"(mean {float(row['mean_probability']):.2f}), {area}")
