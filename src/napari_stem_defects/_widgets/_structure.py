"""What the columns dock shows of a specimen's structure: its phase map, unexplained peaks, and the mask it takes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..columns.result import ColumnResult
from ..columns.structure_layers import phase_layer_data, unexplained_layer_data


def show_structure(viewer: Any, layer: Any, result: ColumnResult) -> None:
    """Add (or replace) ``<image> phases`` (Labels) and ``<image> unexplained peaks`` (Points, when any)."""
    common = {"scale": tuple(layer.scale), "units": tuple(str(u) for u in layer.units),
              "translate": tuple(layer.translate)}
    for data, kwargs, kind in (phase_layer_data(result, f"{layer.name} phases", **common),
                               unexplained_layer_data(result, f"{layer.name} unexplained peaks", **common)):
        name = kwargs["name"]
        if name in viewer.layers:
            viewer.layers.remove(name)
        if kind == "points" and len(data) == 0:
            continue
        add = viewer.add_labels if kind == "labels" else viewer.add_points
        add(data, **kwargs)


def is_mask_layer(layer: Any) -> bool:
    """A 2D Labels or Shapes layer a person can paint or draw a mask on."""
    from napari.layers import Labels, Shapes

    return isinstance(layer, Shapes) or (isinstance(layer, Labels) and layer.ndim in (2, 3))


def mask_of(layer: Any, shape: tuple[int, int], frame: int | None, image: Any = None) -> np.ndarray | None:
    """The mask a Labels (non-zero pixels) or Shapes layer (inside any shape) gives an image of ``shape``.

    With the ``image`` layer, a Shapes layer's vertices are taken to its pixels through world coordinates,
    so shapes drawn in a layer of another scale or offset mask where they show."""
    if layer is None:
        return None
    from napari.layers import Labels

    if isinstance(layer, Labels):
        data = np.asarray(layer.data)
        data = data[frame or 0] if data.ndim == 3 else data
        if data.shape != tuple(shape):
            raise ValueError(f"the mask '{layer.name}' has shape {data.shape}, the image {tuple(shape)}")
        return data > 0
    if len(layer.data) == 0:
        return None
    shapes = layer if image is None else _in_pixels_of(layer, image)
    return np.asarray(shapes.to_masks(mask_shape=tuple(shape))).any(axis=0)


def _in_pixels_of(shapes: Any, image: Any) -> Any:
    """A copy of a Shapes layer (same shape types) whose vertices are (y, x) pixels of the ``image`` layer."""
    from napari.layers import Shapes

    lead = np.zeros(image.ndim - 2)
    data = [np.array([image.world_to_data(np.r_[lead, shapes.data_to_world(v)[-2:]])[-2:]
                      for v in np.asarray(vertices, float)]) for vertices in shapes.data]
    return Shapes(data, shape_type=list(shapes.shape_type))


