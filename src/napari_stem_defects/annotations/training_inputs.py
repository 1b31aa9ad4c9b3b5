"""What the networks learn from an annotated image: the cells' crops, context and labels, and the site mask.

:func:`~.training_set_export.export_training_set` writes these into a dataset
folder (see :mod:`.training_set` for its layout); the fine-tuning code reads
the positions of an annotated cells table the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..simulate.defects import CELL_CLASSES
from .store import Annotations

#: Radius of a site's disc in the masks, in units of the nn (metal to chalcogen) distance.
MASK_RADIUS_NN = 0.25

#: Mask value of an occupied site, per sublattice (0 is the background).
MASK_VALUES: dict[str, int] = {"M": 1, "X": 2, "H": 3}

#: Species labels of an empty site.
_EMPTY = ("", "empty", "nan", "None")


def cell_table_positions(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Metal and X2 positions (N, 2) of a cells table and which cells have their X2 column.

    The same rule as the classifier
    (:func:`napari_stem_defects.cells.classify.cell_positions`): a cell whose
    X2 column is outside the image gets one median M -> X step from its metal.

    Raises
    ------
    ValueError
        When the table lacks the position columns.
    """
    from ..cells.classify import cell_positions

    needed = {"m_y_px", "m_x_px", "x_y_px", "x_x_px", "x_site_id"}
    missing = needed - set(cells.columns)
    if missing:
        raise ValueError(f"the cells table has no {', '.join(sorted(missing))} column(s); "
                         "it is not a classified cells layer")
    return cell_positions(cells)


def nn_of_cells(m: np.ndarray, x: np.ndarray, complete: np.ndarray) -> float:
    """Median metal to X2 distance (pixels) of the complete cells (as the classifier measures it)."""
    if not np.any(complete):
        raise ValueError("no cell has both its metal site and its X2 column; cannot measure the lattice")
    from ..cells.classify import median_nn

    return median_nn(m, x, complete)


def cell_inputs(image: np.ndarray, m: np.ndarray, x: np.ndarray, nn_px: float, material: str,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's inputs for some cells of an image, built as ``classify_cells`` builds them.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The raw image.
    m, x : ndarray, shape (N, 2)
        Metal and X2 positions (pixels) of all the image's cells (the strength
        context comes from those inside the image).
    nn_px : float
        Metal to X2 distance in pixels.
    material : str
        Host material.
    rows : ndarray of int, optional
        Cells to crop (default all).

    Returns
    -------
    crops : ndarray of float32, shape (n, 2, 32, 32)
    context : ndarray of float32, shape (12,)
    """
    from ..cells.cnn import context_vector
    from ..cells.crops import cell_crops, prepare_image, strength_context

    prepared = prepare_image(image, nn_px)
    h, w = prepared.shape
    inside = np.all((m >= 0) & (x >= 0) & (m <= (h - 1, w - 1)) & (x <= (h - 1, w - 1)), axis=1)
    ref = inside if inside.any() else np.ones(len(m), bool)
    ctx = context_vector(material, nn_px, strength_context(prepared, m[ref], x[ref], nn_px))
    sel = np.arange(len(m)) if rows is None else np.asarray(rows, dtype=np.int64)
    crops = cell_crops(prepared, m[sel], x[sel], nn_px, prepared=True)
    return crops.astype(np.float32, copy=False), ctx.astype(np.float32, copy=False)


def class_indices(classes: Sequence[str]) -> np.ndarray:
    """Index of each class name in CELL_CLASSES (int16); ValueError for an unknown name."""
    index = {c: k for k, c in enumerate(CELL_CLASSES)}
    unknown = sorted({str(c) for c in classes} - set(index))
    if unknown:
        raise ValueError(f"unknown cell class(es) {', '.join(map(repr, unknown))}; "
                         f"expected one of {', '.join(CELL_CLASSES)}")
    return np.array([index[str(c)] for c in classes], dtype=np.int16)


def site_mask(shape: tuple[int, int], positions: np.ndarray, sublattices: Sequence[str], occupied: np.ndarray,
              nn_px: float, radius_nn: float = MASK_RADIUS_NN) -> np.ndarray:
    """A uint8 mask with a disc of :data:`MASK_VALUES` at every occupied site.

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the image.
    positions : ndarray, shape (N, 2)
        (y, x) of the sites in pixels.
    sublattices : sequence of str
        'M', 'X' or 'H' per site (others are ignored).
    occupied : ndarray of bool, shape (N,)
        Sites holding a column.
    nn_px : float
        Metal to chalcogen distance in pixels.
    radius_nn : float
        Disc radius in units of ``nn_px``.

    Returns
    -------
    ndarray of uint8, shape (H, W)
        Metal discs painted first, then chalcogen, then adatom ones.

    Examples
    --------
    >>> m = site_mask((9, 9), np.array([[4.0, 4.0]]), ["X"], np.array([True]), 8.0)
    >>> int(m[4, 4]), int(m[4, 6]), int(m[0, 0])
    (2, 2, 0)
    """
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.uint8)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    subs = np.asarray([str(s) for s in sublattices], dtype=object)
    occ = np.asarray(occupied, bool)
    r = float(radius_nn) * float(nn_px)
    ri = int(math.ceil(r))
    for sub in ("M", "X", "H"):
        for y, x in pos[(subs == sub) & occ]:
            if not (np.isfinite(y) and np.isfinite(x)):
                continue
            iy, ix = int(round(y)), int(round(x))
            y0, y1 = max(iy - ri, 0), min(iy + ri + 1, out.shape[0])
            x0, x1 = max(ix - ri, 0), min(ix + ri + 1, out.shape[1])
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
            out[y0:y1, x0:x1][disc] = MASK_VALUES[sub]
    return out


def _occupied(species: Sequence[Any]) -> np.ndarray:
    return np.array([s is not None and str(s) not in _EMPTY for s in species], dtype=bool)


def annotation_mask(shape: tuple[int, int], ann: Annotations, nn_px: float) -> tuple[np.ndarray, int]:
    """Site mask of an image from its sites layer (positions from the layer data, so moved points
    count), or from its cells' metal and X2 species when there is no sites layer.

    Returns
    -------
    mask : ndarray of uint8, shape (H, W)
    n_sites : int
        Sites considered (occupied or not).
    """
    if ann.sites is not None and len(ann.sites.features):
        feats = ann.sites.features
        data = np.asarray(ann.sites.data, dtype=np.float64)
        pos = data[:, -2:] if len(data) == len(feats) else feats[["y_px", "x_px"]].to_numpy(float)
        return site_mask(shape, pos, feats["sublattice"].astype(str).to_numpy(),
                         _occupied(feats["species"].tolist()), nn_px), int(len(feats))
    cells = ann.cells.features
    m, x, complete = cell_table_positions(cells)
    pos = np.concatenate([m, x[complete]])
    subs = ["M"] * len(m) + ["X"] * int(complete.sum())
    occ = np.concatenate([_occupied(cells["m_species"].tolist()),
                          _occupied(cells.loc[complete, "x_species"].tolist())])
    if "adatom" in cells:
        ad = complete & cells["adatom"].to_numpy(bool)
        pos = np.concatenate([pos, 2 * x[ad] - m[ad]])
        subs += ["H"] * int(ad.sum())
        occ = np.concatenate([occ, np.ones(int(ad.sum()), bool)])
    return site_mask(shape, pos, subs, occ, nn_px), 0


__all__ = [
    "MASK_RADIUS_NN", "MASK_VALUES", "annotation_mask", "cell_inputs", "cell_table_positions", "class_indices",
    "nn_of_cells", "site_mask",
]
