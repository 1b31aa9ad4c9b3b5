"""Classify the unit cells of a site table with the CNN or the physics baseline: one entry point.

The widget, ``napari-stem-defects analyze`` and the benchmark all call
:func:`classify_site_table`, so they give the same classes for the same sites.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..materials import METALS, Material, parse_material
from .geometry import cells_from_sites
from ..vocabulary import CELL_CLASSES, INCOMPLETE
from .physics import PROBABILITY_COLUMNS, classify_cells_physics, pair_class_1t, with_classes

#: Classifier names: the CNN (softmax), the CNN's two-stage decision, the physics baseline, and the CNN times the
#: columns' species (physics rule on the column posteriors).
CLASSIFIERS: tuple[str, ...] = ("cnn", "cnn-two-stage", "physics", "cnn+columns")
#: Floor added to the columns' class probabilities before they multiply the CNN's (``cnn+columns``): a class
#: the columns' species rule out entirely is damped, not forbidden.
COLUMN_FLOOR: float = 0.02


def resolve_classifiers(material: str | Material | None, classifier: str | None = None,
                        column_classifier: str | None = None) -> tuple[str, str]:
    """The cell classifier and the column classifier an analysis uses: the ones given, or the defaults.

    With a material the defaults are the context-encoder column classifier and the CNN times the
    physics rule on its column posteriors ('context', 'cnn+columns'): on multislice images no
    training saw (``benchmarks/bench_multislice_classes.py``) this pair scores a higher cell
    macro-F1 than the CNN on Z-contrast species at 60, 80 and 200 kV, with and without the
    microscope settings, and on the real images it gives the same defect shares within about two
    points. Without a material the columns' species come from the Z-contrast mixture ('intensity':
    the context classifier's context is the material) and no cell is classified. A column
    classifier chosen as 'intensity' defaults the cells to 'cnn' (the fusion needs the context
    posteriors to help).

    Examples
    --------
    >>> resolve_classifiers("WSe2"), resolve_classifiers(None), resolve_classifiers("WSe2", None, "intensity")
    (('cnn+columns', 'context'), ('cnn', 'intensity'), ('cnn', 'intensity'))
    >>> resolve_classifiers("WSe2", "physics")
    ('physics', 'context')
    """
    column = column_classifier or ("context" if material else "intensity")
    return classifier or ("cnn+columns" if column == "context" else "cnn"), column


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
    posteriors: dict[str, pd.DataFrame] | None = None,
    stated: bool = True,
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
    posteriors : dict, optional
        ``ColumnResult.posteriors``: a class claimed for many cells is held to the count of the
        image's species fit (:func:`image_support`).
    stated : bool
        Weigh the classes by the stated composition (:func:`stated_composition`). False when the
        probabilities are to be fused with the columns' species, whose fit already holds it: then
        the stated atoms' pairs are left to the columns (:func:`stated_pairs_pooled`).

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
    # fused with the columns, which hold the stated composition, the CNN leaves them the stated pairs and
    # does not weigh the composition again; alone, it pools only what it never learnt and weighs it itself
    probs = stated_pairs_pooled(probs, mat, to_columns=not stated)
    if stated:
        probs = stated_composition(probs, mat)
    if posteriors is not None:
        probs = image_support(probs, posteriors, mat)
    return with_classes(cells, probs, complete, "cnn")


def stated_pairs_pooled(probs: np.ndarray, material: str | Material, to_columns: bool = False) -> np.ndarray:
    """The CNN's split between a stated foreign atom's class and the antisite it resembles, pooled and shared equally.

    Two cases leave that split to others:

    - a stated metal dopant the network never saw: it learnt metal dopants only from the clearly
      visible ones of each host (``dopant_elements(material, CLEAR_CONTRAST)``: W, Re, Ta ... in
      MoS2), and a light one (``MoS2+V``, ``MoS2+Cr``) scatters like the S2 pair of an ``X_M``
      antisite, which it did learn, so it calls those cells ``X_M``; its split says nothing there;
    - ``to_columns``: the cells are to be fused with the columns' species, which hold the stated
      composition and the image's own intensity calibration. Then a stated atom's pair that
      intensity barely tells apart (:func:`~napari_stem_defects.composition.resembles_antisite`:
      ``sub_X`` against ``M_X`` for an S+Se column and a Mo atom on an X site of MoS2,
      within 10 % at Z^1.7; W and an Se2 pair on a Mo site of MoSe2, alike at 60 kV by the
      multislice table, :func:`~napari_stem_defects.simulate.cross_sections.antisite_alike_in_table`)
      is theirs to split. A pair the network reads clearly (V against an
      Se2 pair on a W site) keeps the network's split.

    Other classes, and materials without a stated foreign atom, are returned unchanged.

    Examples
    --------
    >>> p = np.zeros((1, len(CELL_CLASSES)))
    >>> p[0, CELL_CLASSES.index("X_M")], p[0, CELL_CLASSES.index("perfect")] = 0.9, 0.1
    >>> float(stated_pairs_pooled(p, "MoS2+V")[0, CELL_CLASSES.index("dopant_M")])
    0.45
    >>> float(stated_pairs_pooled(p, "MoS2+W")[0, CELL_CLASSES.index("dopant_M")])  # W: learnt
    0.0
    >>> q = np.zeros((1, len(CELL_CLASSES)))
    >>> q[0, CELL_CLASSES.index("M_X")], q[0, CELL_CLASSES.index("perfect")] = 0.9, 0.1
    >>> float(stated_pairs_pooled(q, "MoS2+Se", to_columns=True)[0, CELL_CLASSES.index("sub_X")])  # S+Se ~ Mo
    0.45
    """
    from ..composition import CLEAR_CONTRAST, class_mask, dopant_elements, resembles_antisite
    from ..simulate.cross_sections import antisite_alike_in_table

    mat = parse_material(material)
    seen = set(dopant_elements(mat, CLEAR_CONTRAST) or dopant_elements(mat))
    allowed = class_mask(mat)
    out = np.array(probs, dtype=np.float64)
    for atom in mat.dopants:
        metal = atom in METALS
        alike = to_columns and (resembles_antisite(mat, atom) or antisite_alike_in_table(mat, atom))
        if not ((metal and atom not in seen) or alike):
            continue
        d, a = (CELL_CLASSES.index(c) for c in (("dopant_M", "X_M") if metal else ("sub_X", "M_X")))
        if allowed[d] and allowed[a]:
            out[:, d] = out[:, a] = 0.5 * (out[:, d] + out[:, a])
    return out


def stated_composition(probs: np.ndarray, material: str | Material) -> np.ndarray:
    """Class probabilities re-weighted by the composition the user states (``MoS2+Se``), renormalised.

    See :func:`~napari_stem_defects.composition.composition_weights`; without stated foreign atoms the
    probabilities are returned unchanged.
    """
    from ..composition import composition_weights

    weights = composition_weights(material)
    if np.all(weights == 1.0):
        return probs
    out = np.asarray(probs, dtype=np.float64) * weights[None, :]
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-300)


#: A class the network gives at least this share of the cells must show in the columns' species fit.
LARGE_SHARE: float = 0.10


def image_support(probs: np.ndarray, posteriors: dict[str, pd.DataFrame], material: str | Material) -> np.ndarray:
    """Class probabilities checked against the image's own species fit, renormalised.

    A defect class the network gives to a large share of the cells (at least :data:`LARGE_SHARE`)
    must be backed by a population of columns in the species fit, which is calibrated on the
    image's perfect majority (:func:`~napari_stem_defects.columns.species.fit_species_physics`):
    its count is expected from the fit's contents (the share of metal sites times the share of X2
    columns of every pair of contents that forms the class). When the network claims more than
    the fit holds, the class's probabilities are scaled down to the fit's count, so a broad
    single population (thickness, contamination, a background gradient) is not counted as
    defects. Smaller classes, and ``perfect``, are left to the network, which sees rare and
    low-dose defects the intensity fit cannot separate.

    Examples
    --------
    A quarter of a WSe2 image called substituted while the fit puts nearly every X2 column at Se2:

    >>> post = {"M": pd.DataFrame({"W": [1.0] * 4}), "X": pd.DataFrame({"Se2": [1.0, 1.0, 1.0, 0.96],
    ...                                                                "SSe": [0.0, 0.0, 0.0, 0.04]})}
    >>> p = np.zeros((4, len(CELL_CLASSES)))
    >>> p[:, CELL_CLASSES.index("perfect")] = [1.0, 1.0, 1.0, 0.2]
    >>> p[:, CELL_CLASSES.index("sub_X")] = [0.0, 0.0, 0.0, 0.8]
    >>> out = image_support(p, post, "WSe2")  # the fit holds 0.04 of the 0.8 substituted cells claimed
    >>> round(float(out[3, CELL_CLASSES.index("sub_X")]), 2), CELL_CLASSES[int(out[3].argmax())]
    (0.17, 'perfect')
    """
    from .joint import classes_of_pairs

    mat = parse_material(material)
    probs = np.asarray(probs, dtype=np.float64)
    share = {}
    for sub in ("M", "X"):
        table = posteriors.get(sub)
        if table is None or table.empty:
            return probs
        mass = table.sum(axis=0)
        share[sub] = mass / max(float(mass.sum()), 1e-300)
    pairs = classes_of_pairs([str(c) for c in share["M"].index], [str(c) for c in share["X"].index], mat, False)
    pair_share = np.outer(share["M"].to_numpy(float), share["X"].to_numpy(float))
    claimed = probs.sum(axis=0)
    weights = np.ones(len(CELL_CLASSES))
    for k, name in enumerate(CELL_CLASSES):
        if name in ("perfect", "adatom") or claimed[k] < LARGE_SHARE * len(probs):
            continue
        held = float(pair_share[pairs == name].sum()) * len(probs)
        weights[k] = min(1.0, max(held, 1e-3) / claimed[k])
    if np.all(weights == 1.0):
        return probs
    out = probs * weights[None, :]
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
    classifier : {'cnn', 'cnn-two-stage', 'physics', 'cnn+columns'}
        Which classifier ('cnn+columns': the CNN's probabilities times those of the columns' species,
        :func:`fuse_with_columns`; with the context column classifier's posteriors the best on
        multislice images). With a CNN, a cell whose metal or X2 site a person
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
    # the columns' species already weigh the stated composition: fused, the CNN must not weigh it twice
    cells = classify_cells_cnn(image, sites, material, nn_px, mode=mode, prior=prior, model=model,
                               posteriors=posteriors, stated=classifier != "cnn+columns")
    if classifier == "cnn+columns":
        cells = fuse_with_columns(cells, classify_cells_physics(sites, posteriors, material))
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


def fuse_with_columns(cnn: pd.DataFrame, columns: pd.DataFrame) -> pd.DataFrame:
    """The CNN's class probabilities times those its cells' column species give (:data:`COLUMN_FLOOR` added), renormalised.

    Two views of one cell: the CNN reads its crop, the columns' species posteriors (the Z-contrast
    mixture or the context-encoder classifier) read each column on its own with the stated material
    and microscope. Cells the physics rule leaves without probabilities keep the CNN's.

    Parameters
    ----------
    cnn, columns : DataFrame
        The same sites' cells classified by the CNN and by
        :func:`~napari_stem_defects.cells.physics.classify_cells_physics`.

    Returns
    -------
    DataFrame
        ``cnn`` with fused ``p_<class>``, class, confidence, and ``classifier`` 'cnn+columns'.

    Examples
    --------
    >>> p = lambda **kw: {f"p_{c}": kw.get(c.replace("+", "_"), 0.0) for c in CELL_CLASSES}
    >>> cnn = pd.DataFrame([{"m_site_id": 0, "class": "V_X1", "confidence": 0.6, **p(V_X1=0.6, sub_X=0.4)}])
    >>> cols = pd.DataFrame([{"m_site_id": 0, "class": "sub_X", **p(sub_X=0.9, perfect=0.1)}])
    >>> out = fuse_with_columns(cnn, cols)
    >>> out.loc[0, "class"], round(float(out.loc[0, "confidence"]), 2)
    ('sub_X', 0.97)
    """
    out = cnn.copy()
    probs = out[list(PROBABILITY_COLUMNS)].to_numpy(float)
    other = columns.set_index("m_site_id").reindex(out["m_site_id"])[list(PROBABILITY_COLUMNS)].to_numpy(float)
    fused = probs * (COLUMN_FLOOR + np.nan_to_num(other))
    total = fused.sum(axis=1, keepdims=True)
    ok = out["class"].isin(CELL_CLASSES).to_numpy() & np.isfinite(other).all(axis=1) & (total[:, 0] > 0)
    fused = np.where(ok[:, None], fused / np.where(total > 0, total, 1.0), probs)
    out[list(PROBABILITY_COLUMNS)] = fused
    best = fused[ok].argmax(axis=1)
    out.loc[ok, "class"] = np.asarray(CELL_CLASSES)[best]
    out.loc[ok, "confidence"] = fused[ok].max(axis=1)
    out.loc[ok, "classifier"] = "cnn+columns"
    return out


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
