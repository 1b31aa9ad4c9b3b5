"""Reviewing cells in the "Correct labels" dock: going to a cell, and the shortcut table of the active layer.

Kept apart from the dock's saving and editing code: :func:`focus_on_cell` moves the
view (centre and zoom to a few cells around the target) and selects the cell, and
:func:`shortcut_table` lists the keys of the layer a person is working on.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Cells across the shorter side of the canvas after a jump to a cell.
CELLS_ACROSS = 5.0
#: Keys of the review actions (napari key names).
NEXT_KEY, PREVIOUS_KEY, UNDO_KEY, REDO_KEY = "Alt-N", "Alt-P", "Control-Z", "Control-Shift-Z"


def cell_centre_px(cells: Any, row: int) -> np.ndarray:
    """Centre (y, x) of a cell in the layer's data coordinates (pixels)."""
    features = cells.features
    if {"y_px", "x_px"} <= set(features.columns):
        return np.array([features["y_px"].iat[row], features["x_px"].iat[row]], float)
    return np.asarray(cells.data[row], float).mean(axis=0)[-2:]


def cell_size_px(cells: Any, row: int) -> float:
    """Size of one cell in pixels: the lattice constant from the layer metadata, or the polygon's extent."""
    a1, a2 = cells.metadata.get("a1_px"), cells.metadata.get("a2_px")
    if a1 is not None and a2 is not None:
        return float(np.mean([np.hypot(*a1), np.hypot(*a2)]))
    corners = np.asarray(cells.data[row], float)[:, -2:]
    return float(np.ptp(corners, axis=0).max()) or 10.0


def focus_on_cell(viewer: Any, cells: Any, row: int, cells_across: float = CELLS_ACROSS) -> tuple[float, float]:
    """Centre the view on cell ``row``, zoom so that about ``cells_across`` cells fill the canvas, select it.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The real viewer (not napari's plugin proxy: this uses its canvas size).
    cells : napari.layers.Shapes
        The cells layer.
    row : int
        The cell's row.
    cells_across : float
        How many cells fit across the shorter side of the canvas.

    Returns
    -------
    (float, float)
        The camera centre (y, x) in world coordinates.
    """
    centre = cell_centre_px(cells, row)
    world = np.asarray(cells.data_to_world(centre), float)[-2:]
    scale = float(np.mean(np.abs(np.asarray(cells.scale, float)[-2:])))
    span = cells_across * cell_size_px(cells, row) * scale  # world units across the canvas
    size = float(min(canvas_size(viewer)))
    camera = getattr(getattr(viewer, "scene", None), "camera", None) or viewer.camera
    camera.center = tuple(float(v) for v in world)
    camera.zoom = size / max(span, 1e-9)
    if viewer.layers.selection.active is not cells:
        viewer.layers.selection.active = cells
    cells.selected_data = {int(row)}
    return float(world[0]), float(world[1])


def canvas_size(viewer: Any) -> tuple[int, int]:
    """The canvas size (height, width) in screen pixels (``viewer.canvas.size`` since napari 0.9)."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    if size is None:
        size = getattr(viewer, "_canvas_size", None)
    return (600, 600) if size is None or min(size) <= 1 else (int(size[0]), int(size[1]))


def shortcut_table(role: str | None, class_keys: Mapping[str, str], species: Sequence[str],
                   species_keys: Mapping[str, str]) -> str:
    """The keys of the active layer as an HTML table (one table: cells or sites).

    Parameters
    ----------
    role : {'cells', 'sites'} or None
        The layer the person works on (the viewer's active layer), None for another layer.
    class_keys : mapping
        Class -> key on the cells layer.
    species : sequence of str
        The species offered for the selected sites.
    species_keys : mapping
        Species -> key on the sites layer.

    Examples
    --------
    >>> text = shortcut_table("sites", {"perfect": "Alt-0"}, ["Mo", "empty"], {"Mo": "Alt-1", "empty": "Alt-2"})
    >>> "Alt-1" in text and "perfect" not in text
    True
    """
    common = [(f"{NEXT_KEY} / {PREVIOUS_KEY}", "next / previous uncertain cell"),
              ("Ctrl-Z / Ctrl-Shift-Z", "undo / redo")]
    if role == "cells":
        title = "Keys on the cells layer (select cells first)"
        rows = [(key, cls) for cls, key in class_keys.items()] + common
    elif role == "sites":
        title = "Keys on the sites layer (select sites first)"
        rows = [(species_keys[s], f"species {s}") for s in species if s in species_keys] + common[1:]
    else:
        return ("<b>Keys</b>: select the cells layer (one key per class) or the sites layer (one key per "
                f"species) in the layer list to see its keys; {NEXT_KEY} / {PREVIOUS_KEY} go to the next / "
                "previous uncertain cell.")
    cells = "".join(f"<tr><td><b>{html.escape(k)}</b>&nbsp;&nbsp;</td><td>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    return f"<b>{title}</b><table>{cells}</table>"


__all__ = ["CELLS_ACROSS", "NEXT_KEY", "PREVIOUS_KEY", "REDO_KEY", "UNDO_KEY", "canvas_size", "cell_centre_px",
           "focus_on_cell",
           "shortcut_table"]
