"""Physics baseline: a cell's class from the species of its metal site and X2 column (no network).

Each sublattice's species probabilities (the Z-contrast mixtures of
:mod:`napari_stem_defects.columns.species`) are combined into a probability
for every cell class: P(class) sums P(metal content) * P(X2 content) over the
pairs of contents that make that class. It needs no training, explains
itself, and is the fallback and the yardstick for the CNN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..materials import CHALCOGENS, METALS, Material, parse_material
from ..vocabulary import CELL_CLASSES, INCOMPLETE
from .geometry import cells_from_sites

#: Per-class probability columns added to a cell table.
PROBABILITY_COLUMNS = tuple(f"p_{c}" for c in CELL_CLASSES)


def _elements(label: str) -> list[str]:
    import re

    out: list[str] = []
    for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", label):
        out += [el] * (int(n) if n else 1)
    return out


def _metal_state(label: str, host: set[str]) -> str:
    if label in ("", "empty"):
        return "V"
    els = _elements(label)
    if all(e in CHALCOGENS for e in els):
        return "X_M"
    return "ok" if set(els) <= host else "dopant"


def _x_state(label: str, host_pairs: set[str], host: set[str]) -> str:
    if label in ("", "empty"):
        return "V_X2"
    els = _elements(label)
    if any(e in METALS for e in els):
        return "M_X"
    if len(els) == 1:
        return "V_X1" if els[0] in host else "sub_X"
    return "ok" if label in host_pairs else "sub_X"


def pair_class(m_label: str, x_label: str, adatom: bool, material: Material) -> str:
    """Cell class of one metal-site content and one X2-column content.

    Examples
    --------
    >>> mat = parse_material("MoS2")
    >>> [pair_class(m, x, False, mat) for m, x in [("Mo", "S2"), ("empty", "S"), ("W", "S2"), ("Mo", "SSe")]]
    ['perfect', 'V_X1+V_M', 'dopant_M', 'sub_X']
    """
    from ..columns.species import candidates, host_labels

    host_m = host_labels(material, "M")
    host_pairs = {lab for lab, els, prior in candidates(material, "X") if prior > 0 and len(els) == 2}
    m = _metal_state(m_label, host_m)
    x = _x_state(x_label, host_pairs, set(material.chalcogens))
    if m == "V":
        if x in ("V_X1", "V_X2"):
            return f"{x}+V_M"
        return "V_M"
    for state, cls in ((x, "M_X"), (m, "X_M")):
        if state == cls:
            return cls
    if m == "dopant":
        return "dopant_M"
    if x in ("sub_X", "V_X1", "V_X2"):
        return x
    return "adatom" if adatom else "perfect"


def pair_class_1t(m_label: str, x_label: str, x2_label: str, material: Material) -> str:
    """Cell class of a 1T cell: its metal and its two single-chalcogen columns (two X atoms in all).

    Examples
    --------
    >>> mat = parse_material("WSe2")
    >>> [pair_class_1t(m, a, b, mat) for m, a, b in [("W", "Se", "Se"), ("W", "empty", "Se"), ("W", "", "empty"),
    ...                                                ("empty", "Se", "Se"), ("W", "S", "Se")]]
    ['perfect', 'V_X1', 'V_X2', 'V_M', 'sub_X']
    """
    from ..columns.species import candidates

    host_m = {lab for lab, _, prior in candidates(material, "M") if prior > 0}
    m = _metal_state(m_label, host_m)
    states = []
    for label in (x_label, x2_label):
        els = _elements(label) if label not in ("", "empty") else []
        if not els:
            states.append("V")
        elif any(e in METALS for e in els):
            states.append("M_X")
        else:
            states.append("ok" if set(els) <= set(material.chalcogens) else "sub_X")
    n_vacant = states.count("V")
    x = "V_X2" if n_vacant == 2 else "V_X1" if n_vacant == 1 else next(
        (st for st in ("M_X", "sub_X") if st in states), "ok")
    if m == "V":
        return f"{x}+V_M" if x in ("V_X1", "V_X2") else "V_M"
    if x == "M_X" or m == "X_M":
        return "M_X" if x == "M_X" else "X_M"
    if m == "dopant":
        return "dopant_M"
    return x if x != "ok" else "perfect"


def site_posteriors(sites: pd.DataFrame, material: str | Material,
                    posteriors: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """Species probabilities per sublattice for every site, from a fit where there is one.

    Sites without a fitted posterior, and sites a person has verified (the
    ``verified`` column), are certain of the species in the table, so edits
    made in the viewer carry into the cell classes.
    """
    from ..columns.species import candidates

    mat = parse_material(material)
    out = {}
    for sub in ("M", "X"):
        rows = sites[sites["sublattice"] == sub]
        labels = [c[0] for c in candidates(mat, sub)]
        fitted = None if posteriors is None else posteriors.get(sub)
        if fitted is not None:
            labels += [c for c in fitted.columns if c not in labels]
        table = pd.DataFrame(0.0, index=pd.Index(rows["site_id"].to_numpy(), name="site_id"), columns=labels)
        if fitted is not None:
            common = table.index.intersection(fitted.index)
            table.loc[common, list(fitted.columns)] = fitted.loc[common].to_numpy()
        species = rows.set_index("site_id")["species"].astype(str).replace("", "empty")
        verified = rows.set_index("site_id")["verified"].astype(bool) if "verified" in rows else False
        certain = (table.sum(axis=1) <= 0) | verified
        for site_id in table.index[certain]:
            label = species.loc[site_id]
            if label not in table.columns:
                table[label] = 0.0
            table.loc[site_id] = 0.0
            table.loc[site_id, label] = 1.0
        out[sub] = table
    return out


def classify_cells_physics(
    sites: pd.DataFrame,
    posteriors: dict[str, pd.DataFrame] | None,
    material: str | Material,
) -> pd.DataFrame:
    """Cells of a site table with the class probabilities their columns' species imply.

    Parameters
    ----------
    sites : DataFrame
        Site table (``ColumnResult.sites``).
    posteriors : dict of str to DataFrame, optional
        ``ColumnResult.posteriors``: species probabilities per sublattice,
        indexed by site_id. Sites without one, or verified by a person, count
        as certain of their ``species`` (see :func:`site_posteriors`).
    material : str or Material
        Host material (which contents are normal and which are defects).

    Returns
    -------
    DataFrame
        The cell table of :func:`cells_from_sites` plus ``class``, ``confidence``
        (its probability), one ``p_<class>`` column per class, ``complete``
        (its X2 column is in the image), ``verified`` (False), ``source``
        ('model') and ``classifier`` ('physics').
    """
    mat = parse_material(material)
    cells = cells_from_sites(sites)
    both = site_posteriors(sites, mat, posteriors)
    pm, px = both["M"], both["X"]
    classes = {c: k for k, c in enumerate(CELL_CLASSES)}
    n = len(cells)
    probs = np.zeros((n, len(CELL_CLASSES)))
    p_m = pm.reindex(cells["m_site_id"]).to_numpy(float)
    complete = cells["x_site_id"].to_numpy() >= 0
    p_x = np.zeros((n, px.shape[1]))
    p_x[complete] = px.reindex(cells.loc[complete, "x_site_id"]).to_numpy(float)
    host_pair = [lab for lab in px.columns if pair_class("", lab, False, mat) == "V_M"]
    if host_pair:
        p_x[~complete, list(px.columns).index(host_pair[0])] = 1.0  # unseen partner: assume it is normal
    for flag in (False, True):
        rows = cells["adatom"].to_numpy() == flag
        if not rows.any():
            continue
        table = np.zeros((pm.shape[1], px.shape[1], len(CELL_CLASSES)))
        for a, m_lab in enumerate(pm.columns):
            for b, x_lab in enumerate(px.columns):
                table[a, b, classes[pair_class(m_lab, x_lab, flag, mat)]] = 1.0
        probs[rows] = np.einsum("na,nb,abc->nc", p_m[rows], p_x[rows], table)
    probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    return with_classes(cells, probs, complete, "physics")


def with_classes(cells: pd.DataFrame, probs: np.ndarray, complete: np.ndarray, classifier: str) -> pd.DataFrame:
    """Add a classifier's result to a cell table, in place.

    Parameters
    ----------
    cells : DataFrame
        Cell table of :func:`cells_from_sites`.
    probs : ndarray, shape (N, len(CELL_CLASSES))
        Class probabilities per cell.
    complete : ndarray of bool, shape (N,)
        Cells whose X2 column is in the image. The others are
        :data:`~napari_stem_defects.vocabulary.INCOMPLETE` (never a defect);
        their ``confidence`` and ``p_<class>`` say what the classifier would
        call them were the missing column a normal one.
    classifier : str
        Name of the classifier ('cnn', 'physics', ...).

    Returns
    -------
    DataFrame
        ``cells`` with ``class`` (most probable), ``confidence`` (its
        probability), ``p_<class>`` columns, ``complete``, ``verified`` (False),
        ``source`` ('model': who set the label; a person's edit makes it
        'human') and ``classifier`` (the classifier's name).
    """
    best = probs.argmax(axis=1)
    cells["class"] = np.where(complete, np.asarray(CELL_CLASSES, dtype=object)[best], INCOMPLETE)
    cells["confidence"] = probs[np.arange(len(probs)), best]
    for k, col in enumerate(PROBABILITY_COLUMNS):
        cells[col] = probs[:, k]
    cells["complete"] = complete
    cells["verified"] = False
    cells["source"] = "model"
    cells["classifier"] = classifier
    return cells


def reference_classes(cells: pd.DataFrame, sites: pd.DataFrame, truth: pd.DataFrame, nn_px: float,
                      material: str | Material) -> np.ndarray:
    """Ground-truth class of each of our cells, pairing the true sites the way our cells pair them.

    Which of a metal's three X2 neighbours is "its" column is a convention;
    a twin's cells follow the simulator's lattice vectors, ours the measured
    ones. Scoring our cells against the true contents of the very sites they
    hold avoids comparing two conventions. Cells whose sites match no true
    site get ''.
    """
    from ..columns.evaluate import match_points

    mat = parse_material(material)
    true_species = truth["species"].fillna("").astype(str).to_numpy()
    a, b = match_points(sites[["y_px", "x_px"]].to_numpy(float), truth[["y_px", "x_px"]].to_numpy(float), nn_px / 3)
    species_of = dict(zip(sites["site_id"].to_numpy()[a], true_species[b]))
    adatoms = truth[(truth["sublattice"] == "H") & (truth["species"].fillna("") != "")][["y_px", "x_px"]].to_numpy(float)
    out = np.full(len(cells), "", dtype=object)
    for r, row in enumerate(cells.itertuples(index=False)):
        m = species_of.get(row.m_site_id)
        x = species_of.get(row.x_site_id) if row.x_site_id >= 0 else None
        if m is None or x is None:
            continue
        hollow = np.array([2 * row.x_y_px - row.m_y_px, 2 * row.x_x_px - row.m_x_px])
        # the hollow site of a cell sits one more M-X step beyond its X2 column
        adatom = bool(len(adatoms)) and bool(np.min(np.linalg.norm(adatoms - hollow, axis=1)) < nn_px / 3)
        out[r] = pair_class(m, x, adatom, mat)
    return out
