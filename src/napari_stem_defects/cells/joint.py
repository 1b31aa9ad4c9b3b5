"""One answer per column: a site's species and its cell's class come from one decision.

The column step labels each column by its intensity alone; the cell
classifier decides the cell's class from the image around both columns.
Left alone the two can disagree (a "perfect" cell holding an SSe column, a
``sub_X`` cell whose column says Se2). Here the class decides which pairs of
contents the cell can hold, and of those the pair the columns' species
probabilities make most likely becomes the species of its metal site and X
column(s), so ``sites.csv``, ``cells.csv``, the heatmaps and the statistics
tell one story. A person's verified species are certain, and their cells
already take the class those species imply.

Pure numpy/pandas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..materials import Material, parse_material
from ..vocabulary import CELL_CLASSES
from .physics import pair_class, pair_class_1t, site_posteriors


def classes_of_pairs(m_labels: list[str], x_labels: list[str], material: Material, adatom: bool) -> np.ndarray:
    """The class of every (metal content, X2 content) pair, shape (len(m_labels), len(x_labels))."""
    return np.array([[pair_class(m, x, adatom, material) for x in x_labels] for m in m_labels], dtype=object)


def one_answer(sites: pd.DataFrame, cells: pd.DataFrame, material: str | Material,
               posteriors: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The site table with every classified 2H cell's metal and X2 species set to the pair its class implies.

    Parameters
    ----------
    sites : DataFrame
        Site table (``site_id``, ``sublattice``, ``species``, ``probability``; ``verified`` optional).
    cells : DataFrame
        Classified cells (``m_site_id``, ``x_site_id``, ``class``, ``confidence``, ``adatom``; ``phase``
        optional).
    material : str or Material
    posteriors : dict, optional
        ``ColumnResult.posteriors``; sites without one are certain of their species.

    Returns
    -------
    DataFrame
        A copy of ``sites``: for each complete 2H cell of a known class, ``species`` of its metal
        site and X2 column is the most probable pair of contents whose class is the cell's, and
        ``probability`` is the cell's confidence times that pair's share of the class. Other
        sites are unchanged.

    Examples
    --------
    A cell called ``sub_X`` whose X2 column alone looked most like S2 gets the substituted content:

    >>> sites = pd.DataFrame({"site_id": [0, 1], "sublattice": ["M", "X"], "species": ["Mo", "S2"],
    ...                       "probability": [0.99, 0.6]})
    >>> post = {"M": pd.DataFrame({"Mo": [1.0]}, index=[0]),
    ...         "X": pd.DataFrame({"S2": [0.6], "SSe": [0.4]}, index=[1])}
    >>> cells = pd.DataFrame({"m_site_id": [0], "x_site_id": [1], "class": ["sub_X"], "confidence": [0.9],
    ...                       "adatom": [False]})
    >>> one_answer(sites, cells, "MoS2", post)["species"].tolist()
    ['Mo', 'SSe']
    """
    mat = parse_material(material)
    out = sites.copy()
    phase = cells["phase"].astype(str).to_numpy() if "phase" in cells else np.full(len(cells), "2H")
    known = cells["class"].isin(CELL_CLASSES).to_numpy() & (cells["x_site_id"].to_numpy() >= 0) & (phase == "2H")
    # (1T and boundary-band cells take their class from their columns' species: consistent already)
    if not known.any():
        return out
    table = cells[known]
    both = site_posteriors(sites, mat, posteriors)
    pm, px = both["M"], both["X"]
    p_m = pm.reindex(table["m_site_id"]).to_numpy(float)
    p_x = px.reindex(table["x_site_id"]).to_numpy(float)
    ok = np.isfinite(p_m).all(axis=1) & np.isfinite(p_x).all(axis=1)
    joint = p_m[:, :, None] * p_x[:, None, :]
    cls = table["class"].astype(str).to_numpy()
    flag = cls == "adatom"
    allowed = np.zeros(joint.shape, bool)
    for adatom in (False, True):
        pairs = classes_of_pairs(list(pm.columns), list(px.columns), mat, adatom)
        rows = flag == adatom
        allowed[rows] = pairs[None, :, :] == cls[rows, None, None]
    possible = ok & allowed.any(axis=(1, 2))
    masked = np.where(allowed, joint, 0.0)
    # a class the columns' fits make impossible still gets its pair, at least as likely as it is rare
    masked = np.where(allowed & (masked.sum(axis=(1, 2), keepdims=True) <= 0), 1.0, masked)
    flat = masked.reshape(len(table), -1)
    best = flat.argmax(axis=1)
    share = flat[np.arange(len(table)), best] / np.maximum(flat.sum(axis=1), 1e-300)
    a, b = np.unravel_index(best, joint.shape[1:])
    confidence = table["confidence"].to_numpy(float)
    index = pd.Series(np.arange(len(out)), index=out["site_id"].to_numpy())
    m_rows = index.reindex(table["m_site_id"].to_numpy()).to_numpy()
    x_rows = index.reindex(table["x_site_id"].to_numpy()).to_numpy()
    use = possible & np.isfinite(m_rows) & np.isfinite(x_rows)
    species = out["species"].to_numpy(object).copy()
    probability = out["probability"].to_numpy(float).copy() if "probability" in out else np.ones(len(out))
    m_rows, x_rows = m_rows[use].astype(int), x_rows[use].astype(int)
    species[m_rows] = np.asarray(pm.columns, dtype=object)[a[use]]
    species[x_rows] = np.asarray(px.columns, dtype=object)[b[use]]
    probability[m_rows] = probability[x_rows] = confidence[use] * share[use]
    out["species"] = species
    out["probability"] = probability
    return _hollows_follow_their_cells(out, cells)


def _hollows_follow_their_cells(sites: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """A column on a cell's hollow site is that cell's adatom only when the cell is classed 'adatom'.

    Hollow ('H') sites carry their cell's keys (domain, i, j); in cells of another class the column
    is kept (it was detected) but its species becomes 'empty'.
    """
    keys = [k for k in ("frame", "domain", "i", "j") if k in sites and k in cells]
    hollow = (sites["sublattice"] == "H").to_numpy() & (sites["species"].astype(str) == "adatom").to_numpy()
    if not hollow.any() or not {"i", "j"} <= set(keys):
        return sites
    classes = sites.loc[hollow, keys].merge(cells[keys + ["class"]].drop_duplicates(keys), on=keys, how="left")
    not_adatom = classes["class"].isin(CELL_CLASSES).to_numpy() & (classes["class"] != "adatom").to_numpy()
    rows = np.flatnonzero(hollow)[not_adatom]
    sites.loc[sites.index[rows], "species"] = "empty"
    return sites


def contradictions(sites: pd.DataFrame, cells: pd.DataFrame, material: str | Material) -> int:
    """Number of complete cells whose class is not the one their columns' species imply.

    2H cells: :func:`~napari_stem_defects.cells.physics.pair_class` of the metal and X2 species
    (with an adatom where the class names one); 1T cells:
    :func:`~napari_stem_defects.cells.physics.pair_class_1t` of the metal and both X columns.
    Incomplete cells are never counted.
    """
    mat = parse_material(material)
    species = sites.set_index("site_id")["species"].astype(str).replace("", "empty")
    count = 0
    phase = cells["phase"].astype(str).to_numpy() if "phase" in cells else np.full(len(cells), "2H")
    x2_ids = cells["x2_site_id"].to_numpy() if "x2_site_id" in cells else np.full(len(cells), -1)
    for m_id, x_id, x2_id, cls, ph in zip(cells["m_site_id"], cells["x_site_id"], x2_ids,
                                         cells["class"].astype(str), phase):
        if x_id < 0 or cls not in CELL_CLASSES:
            continue
        m, x = species.get(m_id, "empty"), species.get(x_id, "empty")
        if ph != "2H":
            implied = pair_class_1t(m, x, species.get(x2_id, "empty"), mat)
        else:
            implied = pair_class(m, x, cls == "adatom", mat)
        count += implied != cls
    return count
