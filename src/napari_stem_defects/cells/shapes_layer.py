"""Classified unit cells as napari Shapes layer data (no Qt, no napari import).

Every cell is a parallelogram (polygon) in pixels, carried onto the image by the
image's ``scale`` and ``units``. All cells are drawn, perfect ones too (in a
subdued grey), so a person can select and relabel any of them; the cell table is
the layer's ``features``. Edges are coloured by class (Paul Tol's colour-blind-safe
schemes), faces are transparent, and cells the classifier is unsure of (confidence
below a threshold, not verified by a person) get a thicker edge and a faint face
tint in their class colour.

Examples
--------
>>> class_colour("V_M"), class_colour("nonsense")
('#E88B74', '#BBBBBB')
>>> class_legend(["perfect", "V_M", "V_M"])["V_M"]
{'colour': '#E88B74', 'count': 2}
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..columns.points_layer import LayerDataTuple, hex_to_rgba, last_axes
from ..vocabulary import CELL_CLASSES, INCOMPLETE
from .geometry import cell_polygons

#: Edge colour (hex) of each cell class: 'perfect' a subdued grey, chalcogen vacancies in
#: blues, metal vacancies in salmon and reds, antisites in teal/purple, substitutions in
#: yellow/green, adatoms lavender. Any two classes differ by CIEDE2000 >= 10 for normal vision
#: and under simulated deuteranopia and protanopia (:mod:`napari_stem_defects.palette`).
CLASS_COLOURS: dict[str, str] = {
    "perfect": "#BBBBBB",
    "V_X1": "#8BD1FF",
    "V_X2": "#0077BB",
    "V_M": "#E88B74",
    "V_X1+V_M": "#D10000",
    "V_X2+V_M": "#EE3377",
    "M_X": "#00A2A2",
    "X_M": "#AA3377",
    "dopant_M": "#DDAA33",
    "sub_X": "#117733",
    "adatom": "#AA88EE",
    INCOMPLETE: "#444444",  # a cell cut by the image or analysed area's edge: no class
}
assert set(CLASS_COLOURS) == {*CELL_CLASSES, INCOMPLETE}, "every cell class needs a colour"
#: Colour of a class missing from :data:`CLASS_COLOURS`.
FALLBACK_COLOUR = "#BBBBBB"
#: Edge opacity of perfect cells (they are the background, defects the figure).
PERFECT_ALPHA = 0.35
#: Factor on the edge opacity of boundary cells (domain and grain boundaries, edges of holes, amorphous and
#: masked areas): kept out of the statistics, drawn fainter.
BOUNDARY_ALPHA = 0.5
#: Edge width as a fraction of the lattice constant (pixels), and its factor for unsure cells.
EDGE_FRACTION = 0.03
LOW_CONFIDENCE_WIDTH = 2.5
#: Face opacity of unsure cells (their class colour); other faces are transparent.
LOW_CONFIDENCE_FACE_ALPHA = 0.25


def class_colour(cls: str) -> str:
    """Hex colour of a cell class (:data:`FALLBACK_COLOUR` when unknown)."""
    return CLASS_COLOURS.get(str(cls), FALLBACK_COLOUR)


def class_counts(classes: pd.DataFrame | Iterable[str]) -> dict[str, int]:
    """Number of cells of each class present, in :data:`CELL_CLASSES` order (unknown classes last)."""
    values = classes["class"] if isinstance(classes, pd.DataFrame) else pd.Series(list(classes), dtype=object)
    counts = values.astype(str).value_counts()
    order = [c for c in CELL_CLASSES if c in counts.index] + sorted(set(counts.index) - set(CELL_CLASSES))
    return {c: int(counts[c]) for c in order}


def class_legend(classes: pd.DataFrame | Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{class: {"colour": hex, "count": n}}`` of the classes present, for a layer's metadata."""
    return {c: {"colour": class_colour(c), "count": n} for c, n in class_counts(classes).items()}


def legend_html(counts: Mapping[str, int] | pd.DataFrame, n_low: int | None = None) -> str:
    """A coloured legend (swatch, class, count; entries wrap with the width) as rich text for a QLabel.

    Parameters
    ----------
    counts : mapping or DataFrame
        Cells per class, or a cell table (its ``class`` column is counted).
    n_low : int, optional
        Number of low-confidence cells, added as a last line.
    """
    if isinstance(counts, pd.DataFrame):
        counts = class_counts(counts)
    entries = [f'<span style="white-space:nowrap"><span style="color:{class_colour(c)}; font-size:large">&#9634;'
               f"</span>&nbsp;{html.escape(c)}: {n}</span>" for c, n in counts.items()]
    text = " &nbsp; ".join(entries)  # entries flow on as few lines as the dock's width allows
    if n_low:
        text += f"<br><i>{n_low} low-confidence cells (thick edge, tinted face)</i>"
    return text


def low_confidence_mask(cells: pd.DataFrame, threshold: float) -> np.ndarray:
    """Cells whose confidence is below ``threshold`` and that no person has verified."""
    confidence = cells["confidence"].to_numpy(float) if "confidence" in cells else np.ones(len(cells))
    verified = cells["verified"].to_numpy(bool) if "verified" in cells else np.zeros(len(cells), bool)
    return (confidence < float(threshold)) & ~verified


def estimate_lattice_vectors(sites: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Lattice vectors a1, a2 (y, x pixels) from metal sites: median step to the neighbour at i+1, j+1.

    With the site table's cell indices (``i``, ``j``) the vectors follow its
    convention (the X2 partner of a metal sits at ``M + (a1 + a2) / 3``).
    Without them, the median nearest-neighbour M-M vector along the lattice
    and the one 60 degrees from it are returned.

    Parameters
    ----------
    sites : DataFrame
        Site table (``sublattice``, ``y_px``, ``x_px``; ``i``, ``j`` and ``frame`` if any).

    Raises
    ------
    ValueError
        Fewer than three metal sites, or no neighbouring pair of them.
    """
    m = sites[sites["sublattice"].astype(str) == "M"]
    if len(m) < 3:
        raise ValueError("too few metal sites to measure the lattice")
    keys = ["frame"] if "frame" in m else []
    if {"i", "j"} <= set(m.columns):
        base = m[keys + ["i", "j", "y_px", "x_px"]].astype({"i": int, "j": int})
        out = []
        for di, dj in ((1, 0), (0, 1)):
            shifted = base.assign(i=base["i"] - di, j=base["j"] - dj)
            pairs = base.merge(shifted, on=keys + ["i", "j"], suffixes=("", "_n"))
            if pairs.empty:
                break
            out.append(np.median(pairs[["y_px_n", "x_px_n"]].to_numpy(float)
                                 - pairs[["y_px", "x_px"]].to_numpy(float), axis=0))
        if len(out) == 2:
            return out[0], out[1]
    from scipy.spatial import cKDTree

    xy = m[["y_px", "x_px"]].to_numpy(float)
    dist, idx = cKDTree(xy).query(xy, k=min(7, len(xy)))
    vectors = (xy[idx[:, 1:]] - xy[:, None, :]).reshape(-1, 2)
    vectors = vectors[np.isfinite(dist[:, 1:]).ravel() & (dist[:, 1:].ravel() < 1.3 * np.median(dist[:, 1]))]
    if len(vectors) < 2:
        raise ValueError("no neighbouring metal sites to measure the lattice")
    angle = np.arctan2(vectors[:, 0], vectors[:, 1])
    theta0 = np.angle(np.mean(np.exp(6j * angle))) / 6  # the six neighbours share angle mod 60 degrees
    near = np.abs(np.angle(np.exp(1j * (angle - theta0)))) < np.pi / 6
    a1 = np.median(vectors[near], axis=0)
    theta = -np.pi / 3
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])  # a2: a1 turned by 60 deg
    return a1, rot @ a1


def cell_styles(cells: pd.DataFrame, a_px: float, low_confidence: float = 0.8
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edge colours, face colours (RGBA, (N, 4)) and edge widths (N,) of cells.

    Perfect cells have faint grey edges; unsure cells (see
    :func:`low_confidence_mask`) a wider edge and a tinted face.
    """
    classes = cells["class"].astype(str).to_numpy() if "class" in cells else np.full(len(cells), "perfect")
    edge = np.array([hex_to_rgba(class_colour(c)) for c in classes], float).reshape(-1, 4)
    edge[classes == "perfect", 3] = PERFECT_ALPHA
    if "boundary" in cells:  # boundary cells are there, but are not the figure
        edge[cells["boundary"].to_numpy(bool), 3] *= BOUNDARY_ALPHA
    low = low_confidence_mask(cells, low_confidence)
    face = edge.copy()
    face[:, 3] = np.where(low, LOW_CONFIDENCE_FACE_ALPHA, 0.0)
    width = EDGE_FRACTION * max(float(a_px), 1.0) * np.where(low, LOW_CONFIDENCE_WIDTH, 1.0)
    return edge, face, width


def cells_to_shapes_data(
    cells: pd.DataFrame,
    a1: Sequence[float],
    a2: Sequence[float],
    *,
    scale: Sequence[float] = (1.0, 1.0),
    units: str | Sequence[str] = "pixel",
    name: str = "cells",
    low_confidence: float = 0.8,
    translate: Sequence[float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> LayerDataTuple:
    """Layer data for classified cells: one polygon per cell, the cell table as features.

    Parameters
    ----------
    cells : DataFrame
        Cell table of :func:`napari_stem_defects.cells.physics.classify_cells_physics`
        (at least ``y_px``, ``x_px`` and ``class``).
    a1, a2 : sequence of float
        Lattice vectors (y, x) in pixels, spanning each cell's parallelogram.
    scale : sequence of float
        The image layer's scale (y, x); only the last two values are used.
    units : str or sequence of str
        The image layer's units.
    name : str
        Layer name.
    low_confidence : float
        Cells below this confidence (and not verified) are marked.
    translate : sequence of float, optional
        The image layer's translate (last two values).
    metadata : mapping, optional
        Extra entries for the layer's metadata (material, source layers...).

    Returns
    -------
    tuple
        ``(data, kwargs, "shapes")``: ``data`` of shape (N, 4, 2), corners (y, x) in pixels.
    """
    a1 = np.asarray(a1, float)
    a2 = np.asarray(a2, float)
    polygons = cell_polygons(cells, a1, a2) if len(cells) else np.zeros((0, 4, 2))
    a_px = float(np.mean([np.hypot(*a1), np.hypot(*a2)]))
    edge, face, width = cell_styles(cells, a_px, low_confidence)
    low = low_confidence_mask(cells, low_confidence)
    features = cells.reset_index(drop=True).copy()
    scale2 = tuple(float(v) for v in last_axes(scale, 2, 1.0))
    units2 = (str(units),) * 2 if isinstance(units, str) else tuple(str(u) for u in last_axes(units, 2, "pixel"))
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "polygon",
        "scale": scale2,
        "units": units2,
        "features": features,
        "edge_color": edge,
        "face_color": face,
        "edge_width": width,
        "opacity": 1.0,
        "metadata": {
            "legend": class_legend(features) if len(features) else {},
            "low_confidence": {"threshold": float(low_confidence), "count": int(low.sum())},
            "a1_px": [float(v) for v in a1],
            "a2_px": [float(v) for v in a2],
            "source": "napari-stem-defects cell classification",
            **dict(metadata or {}),
        },
    }
    if translate is not None:
        kwargs["translate"] = tuple(float(t) for t in last_axes(translate, 2, 0.0))
    return polygons, kwargs, "shapes"



__all__ = [
    "CLASS_COLOURS", "cell_styles", "cells_to_shapes_data", "class_colour", "class_counts", "class_legend",
    "estimate_lattice_vectors", "legend_html", "low_confidence_mask",
]
