"""Annotations from napari layers, and napari layer data from annotations (no napari import).

Layers are duck-typed: anything with ``.data``, ``.features``, ``.metadata``,
``.scale``, ``.units``, ``.translate``, ``.name`` (and, for the image,
``.source.path``) works, so tests and scripts need no viewer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cells.shapes_layer import cell_styles
from ..columns.points_layer import LayerDataTuple, last_axes, points_kwargs
from .edits import sync_positions
from .schema import unique_ids
from .store import Annotations, ImageReference, LayerAnnotation, image_sha256

__all__ = ["annotation_layer_data", "annotations_from_layers", "image_path_of", "image_placement", "layer_units"]

#: Point diameter as a fraction of the nearest-neighbour distance when no style is known.
_POINT_SIZE_FRACTION = 0.6


def image_path_of(image_layer: Any) -> Path | None:
    """The file an image layer was opened from, if any.

    Parameters
    ----------
    image_layer : napari Image layer or look-alike
        Checked in order: ``layer.source.path``, then ``metadata["path"]``
        and ``metadata["source_path"]``.

    Returns
    -------
    Path or None
    """
    source = getattr(image_layer, "source", None)
    path = getattr(source, "path", None)
    if path:
        return Path(path)
    metadata = getattr(image_layer, "metadata", None) or {}
    for key in ("path", "source_path"):
        value = metadata.get(key)
        if value:
            return Path(value)
    return None


def layer_units(layer: Any, ndim: int) -> tuple[str, ...]:
    """A layer's units as strings (napari keeps pint units); ``"pixel"`` when it has none."""
    units = getattr(layer, "units", None)
    if units is None:
        return ("pixel",) * ndim
    if isinstance(units, str):
        return (units,) * ndim
    return tuple(str(u) for u in units)


def annotations_from_layers(
    image_layer: Any,
    sites_layer: Any = None,
    cells_layer: Any = None,
    material: str | None = None,
    image_file: str | os.PathLike | None = None,
) -> Annotations:
    """Annotations of an image from its layers: the image reference, sites and cells.

    Parameters
    ----------
    image_layer : Image layer
        The annotated image (its data is hashed, its calibration kept).
    sites_layer : Points layer, optional
        Sites; positions come from the layer data (moved points count): rows
        whose ``y_px``/``x_px`` features disagree with the data are updated
        (:func:`~.edits.sync_positions`); a row that repeats an earlier row's
        ``site_id`` (a pasted copy) gets ``site_id`` -1, as points a person adds.
    cells_layer : Shapes layer, optional
        Cells (polygons of four corners); repeated ``cell_id`` become -1 likewise.
    material : str, optional
        Host material; by default from the cells' or sites' metadata.
    image_file : str or Path, optional
        The image file; by default :func:`image_path_of` the image layer.

    Returns
    -------
    Annotations
        With ``image.file`` absolute (None without a file) and no provenance yet
        (:func:`~.store.save_annotations` sets it).

    Raises
    ------
    ValueError
        The cells layer holds shapes that are not all of the same number of vertices.
    """
    image = np.asarray(image_layer.data)
    ndim = image.ndim
    file = image_file if image_file is not None else image_path_of(image_layer)
    reference = ImageReference(
        file=None if file is None else os.path.abspath(file),
        name=str(image_layer.name),
        shape=tuple(int(s) for s in image.shape),
        dtype=str(image.dtype),
        sha256=image_sha256(image),
        scale=tuple(float(s) for s in image_layer.scale),
        units=layer_units(image_layer, ndim),
        translate=tuple(float(t) for t in getattr(image_layer, "translate", (0.0,) * ndim)),
    )
    sites = None if sites_layer is None else _sites_annotation(sites_layer)
    cells = None if cells_layer is None else _cells_annotation(cells_layer)
    if material is None:
        material = _material_of(cells_layer, sites_layer)
    return Annotations(image=reference, material=material, sites=sites, cells=cells)


def _material_of(*layers: Any) -> str | None:
    for layer in layers:
        if layer is None:
            continue
        metadata = getattr(layer, "metadata", None) or {}
        params = metadata.get("parameters") if isinstance(metadata.get("parameters"), Mapping) else {}
        for value in (metadata.get("material"), params.get("material")):
            if value:
                return str(value)
    return None


def _sites_annotation(layer: Any) -> LayerAnnotation:
    data = np.array(layer.data, dtype=float)
    if data.ndim != 2:
        data = data.reshape(-1, int(np.asarray(getattr(layer, "scale", (1.0, 1.0))).size))
    features = pd.DataFrame(layer.features).reset_index(drop=True).copy()
    if {"y_px", "x_px"} <= set(features.columns) and len(features) == len(data) and len(data):
        moved = ((features["y_px"].to_numpy(float) != data[:, -2])
                 | (features["x_px"].to_numpy(float) != data[:, -1]))
        if moved.any():
            features = sync_positions(features, data, tuple(layer.scale), np.flatnonzero(moved))
    features, _ = unique_ids(features, "site_id")  # pasted copies of points: items a person added
    return LayerAnnotation("sites", str(layer.name), data, features, dict(getattr(layer, "metadata", {}) or {}))


def _cells_annotation(layer: Any) -> LayerAnnotation:
    shapes = [np.asarray(s, dtype=float) for s in layer.data]
    if shapes and len({s.shape for s in shapes}) > 1:
        counts = sorted({s.shape[0] for s in shapes})
        raise ValueError(f"cells layer {layer.name!r} holds shapes of {counts} vertices; a cell is four corners "
                         "(delete the shapes drawn by hand before saving)")
    ndim = int(np.asarray(getattr(layer, "scale", (1.0, 1.0))).size)
    data = np.stack(shapes) if shapes else np.zeros((0, 4, ndim))
    features = pd.DataFrame(layer.features).reset_index(drop=True).copy()
    features, _ = unique_ids(features, "cell_id")  # pasted copies of cells
    return LayerAnnotation("cells", str(layer.name), data, features, dict(getattr(layer, "metadata", {}) or {}))


def annotation_layer_data(ann: Annotations) -> list[LayerDataTuple]:
    """napari layer data of saved annotations: a Points and/or a Shapes tuple.

    Data and features are exactly as saved; colours, sizes and edge widths
    are computed from the features the way the detection and classification
    widgets draw them; scale, units and translate are the image reference's
    (its last two or three axes); metadata is the saved metadata.

    Parameters
    ----------
    ann : Annotations
        Loaded or built annotations.

    Returns
    -------
    list of tuple
        ``(data, kwargs, "points")`` for the sites and ``(data, kwargs, "shapes")``
        for the cells, those present.
    """
    out: list[LayerDataTuple] = []
    if ann.sites is not None:
        out.append(_points_tuple(ann.sites, ann.image))
    if ann.cells is not None:
        out.append(_shapes_tuple(ann.cells, ann.image))
    return out


def image_placement(image: ImageReference, n: int) -> dict[str, tuple]:
    """The image's scale, units and translate for a layer of ``n`` dimensions (last axes; padded)."""
    return {"scale": tuple(float(s) for s in last_axes(image.scale, n, 1.0)),
            "units": tuple(str(u) for u in last_axes(image.units, n, "pixel")),
            "translate": tuple(float(t) for t in last_axes(image.translate, n, 0.0))}


def _points_tuple(layer: LayerAnnotation, image: ImageReference) -> LayerDataTuple:
    data = np.array(layer.data, copy=True)
    n = data.shape[1] if data.ndim == 2 and data.shape[1] else 2
    place = image_placement(image, n)
    features = layer.features.copy()
    nn_px = _nn_px(layer.metadata, data)
    if {"species", "sublattice"} <= set(features.columns):
        kwargs = points_kwargs(features, nn_px, name=layer.name, scale=place["scale"], units=place["units"],
                               translate=place["translate"])
    else:
        kwargs = {"name": layer.name, **place, "features": features, "size": _POINT_SIZE_FRACTION * nn_px,
                  "opacity": 0.6}
    kwargs["metadata"] = dict(layer.metadata)
    return data, kwargs, "points"


def _nn_px(metadata: Mapping[str, Any], data: np.ndarray) -> float:
    """Nearest-neighbour distance (pixels): from the detection parameters, else measured on the points."""
    params = metadata.get("parameters") if isinstance(metadata.get("parameters"), Mapping) else {}
    value = params.get("nn_px")
    frames = params.get("frames")
    if value is None and isinstance(frames, Mapping) and frames:
        values = [f.get("nn_px") for f in frames.values() if isinstance(f, Mapping) and f.get("nn_px")]
        value = float(np.median(values)) if values else None
    if value is not None and np.isfinite(float(value)) and float(value) > 0:
        return float(value)
    if data.ndim != 2 or len(data) < 2:
        return 1.0 / _POINT_SIZE_FRACTION * 5.0
    from scipy.spatial import cKDTree

    pts = data[:, -2:]
    if data.shape[1] == 3:  # one frame is enough, and points of different frames may coincide
        pts = pts[data[:, 0] == data[0, 0]]
    if len(pts) < 2:
        return 1.0 / _POINT_SIZE_FRACTION * 5.0
    dist, _ = cKDTree(pts).query(pts, k=2)
    d = dist[:, 1][np.isfinite(dist[:, 1]) & (dist[:, 1] > 0)]
    return float(np.median(d)) if d.size else 1.0 / _POINT_SIZE_FRACTION * 5.0


def _shapes_tuple(layer: LayerAnnotation, image: ImageReference) -> LayerDataTuple:
    data = np.array(layer.data, copy=True)
    n = data.shape[-1] if data.ndim == 3 else 2
    place = image_placement(image, n)
    features = layer.features.copy()
    metadata = dict(layer.metadata)
    a1, a2 = metadata.get("a1_px"), metadata.get("a2_px")
    if a1 is not None and a2 is not None:
        a_px = float(np.mean([np.hypot(*np.asarray(a1, float)[-2:]), np.hypot(*np.asarray(a2, float)[-2:])]))
    elif len(data):
        edges = np.concatenate([data[:, 1] - data[:, 0], data[:, 3] - data[:, 0]])[:, -2:]
        a_px = float(np.median(np.hypot(edges[:, 0], edges[:, 1])))
    else:
        a_px = 1.0
    low = metadata.get("low_confidence")
    threshold = float(low["threshold"]) if isinstance(low, Mapping) and "threshold" in low else 0.8
    edge, face, width = cell_styles(features, a_px, threshold)
    kwargs = {
        "name": layer.name,
        "shape_type": "polygon",
        **place,
        "features": features,
        "edge_color": edge,
        "face_color": face,
        "edge_width": width,
        "opacity": 1.0,
        "metadata": metadata,
    }
    return data, kwargs, "shapes"
