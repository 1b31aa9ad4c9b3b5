"""Per-site defect labels derived from cell classes (the ``defect`` column of ``sites.csv``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Site defect labels, as in the twins' ground truth (:data:`napari_stem_defects.simulate.defects.SITE_DEFECTS`).
SITE_DEFECT_LABELS = ("none", "V_X1", "V_X2", "V_M", "M_X", "X_M", "dopant_M", "sub_X", "adatom")

_METAL = {"V_M": "V_M", "V_X1+V_M": "V_M", "V_X2+V_M": "V_M", "X_M": "X_M", "dopant_M": "dopant_M"}
_CHALCOGEN = {"V_X1": "V_X1", "V_X2": "V_X2", "V_X1+V_M": "V_X1", "V_X2+V_M": "V_X2", "M_X": "M_X", "sub_X": "sub_X"}


def site_defects(sites: pd.DataFrame, cells: pd.DataFrame) -> np.ndarray:
    """The defect label of every site, from the class of the cell it belongs to.

    A metal site carries the metal part of its cell's class (``V_M`` of
    ``V_X1+V_M``), an X2 column the chalcogen part, and a column on a hollow
    site is an ``adatom``; everything else is ``none``. In a 1T cell
    (``x2_site_id`` >= 0) the chalcogen part goes to the column(s) that hold
    it: the empty one of a ``V_X1``, both of a ``V_X2``, the foreign one of a
    ``sub_X`` or ``M_X`` (the partner when the species do not tell).

    Examples
    --------
    >>> sites = pd.DataFrame({"site_id": [0, 1, 2], "sublattice": ["M", "X", "H"], "species": ["empty", "S", "adatom"]})
    >>> cells = pd.DataFrame({"m_site_id": [0], "x_site_id": [1], "class": ["V_X1+V_M"]})
    >>> site_defects(sites, cells).tolist()
    ['V_M', 'V_X1', 'adatom']
    """
    keys = ["frame"] if "frame" in sites and "frame" in cells else []
    out = pd.Series("none", index=sites.index, dtype=object)
    cells = _one_t_chalcogen_columns(sites, cells)
    for col, mapping in (("m_site_id", _METAL), ("x_site_id", _CHALCOGEN), ("x2_site_id", _CHALCOGEN)):
        if col not in cells:
            continue
        labels = cells[keys + [col, "class"]].assign(label=cells["class"].map(mapping)).dropna(subset=["label"])
        labels = labels.rename(columns={col: "site_id"})
        merged = sites[keys + ["site_id"]].reset_index().merge(labels[keys + ["site_id", "label"]], on=keys + ["site_id"])
        out.loc[merged["index"].to_numpy()] = merged["label"].to_numpy()
    out[(sites["sublattice"] == "H") & (sites["species"] != "empty")] = "adatom"
    return out.to_numpy()


def _one_t_chalcogen_columns(sites: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Cells whose ``x_site_id`` / ``x2_site_id`` point at the 1T chalcogen column(s) that carry the defect.

    A 1T cell's two single-chalcogen columns: for V_X1 (+V_M) the empty one, for sub_X and M_X the one
    whose species is not the partner's normal content; the other column gets -1. V_X2 keeps both.
    """
    if "x2_site_id" not in cells or not (cells["x2_site_id"] >= 0).any():
        return cells
    out = cells.copy()
    species = sites.set_index("site_id")["species"].astype(str).replace("", "empty")
    one_t = (out["x2_site_id"] >= 0).to_numpy()
    cls = out["class"].astype(str).to_numpy()
    x_sp = species.reindex(out["x_site_id"]).fillna("empty").to_numpy()
    x2_sp = species.reindex(out["x2_site_id"]).fillna("empty").to_numpy()
    vacancy = np.isin(cls, ["V_X1", "V_X1+V_M"])
    other = np.isin(cls, ["sub_X", "M_X"])
    columns = np.concatenate([x_sp[one_t], x2_sp[one_t]])
    normal = pd.Series(columns).mode().iloc[0]  # the commonest single-chalcogen content of the 1T cells
    x_is_it = np.where(vacancy, x_sp == "empty", np.where(other, (x_sp != normal) | (x2_sp == normal), True))
    single = one_t & (vacancy | other)
    out.loc[single & ~x_is_it, "x_site_id"] = -1
    out.loc[single & x_is_it, "x2_site_id"] = -1
    out.loc[one_t & ~np.isin(cls, ["V_X2", "V_X2+V_M"]) & ~single, "x2_site_id"] = -1
    return out
