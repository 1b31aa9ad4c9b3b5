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
    site is an ``adatom``; everything else is ``none``.

    Examples
    --------
    >>> sites = pd.DataFrame({"site_id": [0, 1, 2], "sublattice": ["M", "X", "H"], "species": ["empty", "S", "adatom"]})
    >>> cells = pd.DataFrame({"m_site_id": [0], "x_site_id": [1], "class": ["V_X1+V_M"]})
    >>> site_defects(sites, cells).tolist()
    ['V_M', 'V_X1', 'adatom']
    """
    keys = ["frame"] if "frame" in sites and "frame" in cells else []
    out = pd.Series("none", index=sites.index, dtype=object)
    for col, mapping in (("m_site_id", _METAL), ("x_site_id", _CHALCOGEN)):
        labels = cells[keys + [col, "class"]].assign(label=cells["class"].map(mapping)).dropna(subset=["label"])
        labels = labels.rename(columns={col: "site_id"})
        merged = sites[keys + ["site_id"]].reset_index().merge(labels[keys + ["site_id", "label"]], on=keys + ["site_id"])
        out.loc[merged["index"].to_numpy()] = merged["label"].to_numpy()
    out[(sites["sublattice"] == "H") & (sites["species"] != "empty")] = "adatom"
    return out.to_numpy()
