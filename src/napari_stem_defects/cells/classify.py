"""Classify the unit cells of a site table with the CNN or the physics baseline: one entry point.

The widget, ``napari-stem-defects analyze`` and the benchmark all call
:func:`classify_site_table`, so they give the same classes for the same sites.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..materials import Material, parse_material
from .geometry import cells_from_sites
from ..vocabulary import CELL_CLASSES, INCOMPLETE
from .physics import PROBABILITY_COLUMNS, classify_cells_physics, pair_class_1t, with_classes

#: Classifier names: the CNN (softmax), the CNN's two-stage decision, and the physics baseline.
CLASSIFIERS: tuple[str, ...] = ("cnn", "cnn-two-stage", "physics")


def cell_positions(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Metal and X2 positions (N, 2) of a cell table, and which cells have their X2 column.

    A cell whose X2 column is outside the image gets the X position one median
    M -> X step from its metal.
    """
    m = np.array(cells[["m_y_px", "m_x_px"]], dtype=float)
    x = np.array(cells[["x_y_px", "x_x_px"]], dtype=float)
    complete = cells["x_site_id"].to_numpy() >= 0
    if complete.any():
        step = np.median(x[complete] - m[complete], axis=0)
        x[~complete] = m[~complete] + step
    return m, x, complete


def median_nn(m: np.ndarray, x: np.ndarray, complete: np.ndarray) -> float:
    """Median metal to X2 distance (pixels) over the complete cells (those with their X2 column)."""
    return float(np.median(np.hypot(*(x[complete] - m[complete]).T)))


def classify_cells_cnn(
    image: np.ndarray,
    sites: pd.DataFrame,
    material: str | Material,
    nn_px: float | None = None,
    *,
    mode: str = "single",
    prior: str | float = "image",
    model: Any = None,
) -> pd.DataFrame:
    """Cells of a site table, classified by the CNN on the image.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image the sites were detected on.
    sites : DataFrame
        Site table (``ColumnResult.sites`` or a Points layer's features).
    material : str or Material
        Host material.
    nn_px : float, optional
        Metal to X2 distance in pixels; by default the median over the cells.
    mode : {'single', 'two-stage'}
        Decision rule (:func:`napari_stem_defects.cells.cnn.probabilities`).
    prior : {'image', 'balanced'} or float
        Class prior (:func:`napari_stem_defects.cells.cnn.probabilities`):
        by default each class's share is estimated from this image's cells.
    model : torch.nn.Module, optional
        Classifier; defaults to the packaged one.

    Returns
    -------
    DataFrame
        The columns of :func:`~napari_stem_defects.cells.physics.classify_cells_physics`,
        with ``classifier`` 'cnn' (and ``source`` 'model').
    """
    from .cnn import classify_cells

    mat = parse_material(material)
    cells = cells_from_sites(sites)
    m, x, complete = cell_positions(cells)
    if not complete.any():
        raise ValueError("no cell has both its metal site and its X2 column; cannot classify with the CNN")
    if nn_px is None:
        nn_px = median_nn(m, x, complete)
    probs = classify_cells(image, m, x, nn_px, mat, mode=mode, prior=prior, model=model).astype(np.float64)
    return with_classes(cells, stated_composition(probs, mat), complete, "cnn")


def stated_composition(probs: np.ndarray, material: str | Material) -> np.ndarray:
    """Class probabilities re-weighted by the composition the user states (``MoS2+Se``), renormalised.

    See :func:`~napari_stem_defects.cells.classes.composition_weights`; without stated foreign atoms the
    probabilities are returned unchanged.
    """
    from .classes import composition_weights

    weights = composition_weights(material)
    if np.all(weights == 1.0):
        return probs
    out = np.asarray(probs, dtype=np.float64) * weights[None, :]
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-300)


def classify_site_table(
    image: np.ndarray | None,
    sites: pd.DataFrame,
    material: str | Material,
    classifier: str = "cnn",
    *,
    posteriors: dict[str, pd.DataFrame] | None = None,
    nn_px: float | None = None,
    prior: str | float = "image",
    model: Any = None,
) -> pd.DataFrame:
    """Classify every cell of a site table.

    Parameters
    ----------
    image : ndarray or None
        The image (needed by the CNN classifiers).
    sites : DataFrame
        Site table; sites with ``verified`` True hold a person's species.
    material : str or Material
        Host material.
    classifier : {'cnn', 'cnn-two-stage', 'physics'}
        Which classifier. With a CNN, a cell whose metal or X2 site a person
        verified takes the physics class of the verified species instead
        (``classifier`` 'verified sites'; ``source`` stays 'model'), so
        corrections are never overruled.
    posteriors : dict, optional
        ``ColumnResult.posteriors`` for the physics baseline.
    nn_px : float, optional
        Metal to X2 distance in pixels (CNN only).
    prior : {'image', 'balanced'} or float
        Class prior of the CNN (:func:`napari_stem_defects.cells.cnn.probabilities`).
    model : torch.nn.Module, optional
        CNN to use instead of the packaged one.

    Returns
    -------
    DataFrame
        Cell table with class, confidence, ``p_<class>``, complete, verified,
        source ('model') and classifier.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, not {classifier!r}")
    if classifier == "physics":
        return classify_1t_cells(classify_cells_physics(sites, posteriors, material), sites, material)
    if image is None or np.ndim(image) != 2:
        raise ValueError("the CNN classifier needs the 2D image the sites were found on")
    mode = "two-stage" if classifier == "cnn-two-stage" else "single"
    cells = classify_cells_cnn(image, sites, material, nn_px, mode=mode, prior=prior, model=model)
    cells = classify_1t_cells(cells, sites, material)
    verified = sites["verified"].astype(bool) if "verified" in sites else pd.Series(False, index=sites.index)
    if verified.any():
        # the physics classes of a person's species, for the cells that hold a verified site
        physics = classify_cells_physics(sites, posteriors, material)
        ids = sites.loc[verified, "site_id"]
        touched = cells["m_site_id"].isin(ids) | cells["x_site_id"].isin(ids)
        cols = ["class", "confidence", *PROBABILITY_COLUMNS]
        cells.loc[touched, cols] = physics.loc[touched, cols].to_numpy()
        cells.loc[touched, "classifier"] = "verified sites"
    return cells


def classify_1t_cells(cells: pd.DataFrame, sites: pd.DataFrame, material: str | Material) -> pd.DataFrame:
    """Classes of the 1T (and boundary-band) cells of a classified table, from their three columns' species (in place).

    The networks know 2H cells only; a 1T cell (metal, partner and opposite single-chalcogen
    columns; without both it is incomplete) takes :func:`~napari_stem_defects.cells.physics.pair_class_1t` of its species, with
    the product of the three sites' species probabilities as confidence and ``classifier``
    'physics (1T)'.
    """
    if "phase" not in cells:
        return cells
    three = (cells["phase"].astype(str) != "2H").to_numpy()
    cut = three & ((cells["x_site_id"].to_numpy() < 0) | (cells["x2_site_id"].to_numpy() < 0))
    cells.loc[cut, "class"] = INCOMPLETE  # a 1T cell needs both its chalcogen columns
    cells.loc[cut, "complete"] = False
    rows = three & ~cut
    if not rows.any():
        return cells
    mat = parse_material(material)
    species = sites.set_index("site_id")["species"].astype(str)
    prob = sites.set_index("site_id")["probability"].astype(float) if "probability" in sites else None
    table = cells[rows]
    labels = [pair_class_1t(species.get(m, "empty"), species.get(x, "empty"), species.get(x2, "empty"), mat)
              for m, x, x2 in zip(table["m_site_id"], table["x_site_id"], table["x2_site_id"])]
    probs = np.zeros((len(table), len(CELL_CLASSES)))
    probs[np.arange(len(table)), [CELL_CLASSES.index(c) for c in labels]] = 1.0
    confidence = np.ones(len(table))
    if prob is not None:
        for col in ("m_site_id", "x_site_id", "x2_site_id"):
            confidence *= prob.reindex(table[col]).fillna(1.0).to_numpy()
    cells.loc[rows, "class"] = labels
    cells.loc[rows, "confidence"] = confidence
    cells.loc[rows, list(PROBABILITY_COLUMNS)] = probs
    cells.loc[rows, "classifier"] = "physics (1T)"
    return cells
