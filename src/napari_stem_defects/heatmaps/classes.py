"""The defect families a heatmap shows, and their ground truth on digital twins.

Heatmaps group the site-level defects of :data:`napari_stem_defects.simulate.SITE_DEFECTS`
into the families a person scans an image for:

=============  ============================================
map            site defects
=============  ============================================
defect         any of the below (defect against perfect lattice)
vacancy        V_X1, V_X2, V_M
antisite       M_X, X_M
adatom         adatom (interstitial)
substitution   dopant_M, sub_X
=============  ============================================

A composite cell defect such as V_X2+V_M puts a vacancy on both of its sites.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Heatmap channels, in order.
HEATMAP_CLASSES: tuple[str, ...] = ("defect", "vacancy", "antisite", "adatom", "substitution")
#: Family of each site-level defect label.
SITE_FAMILY: dict[str, str] = {
    "V_X1": "vacancy", "V_X2": "vacancy", "V_M": "vacancy",
    "M_X": "antisite", "X_M": "antisite",
    "adatom": "adatom",
    "dopant_M": "substitution", "sub_X": "substitution",
}
#: Colormap of each map in the viewer (additive blending over the grey image).
HEATMAP_COLORMAPS: dict[str, str] = {
    "defect": "inferno", "vacancy": "red", "antisite": "magenta", "adatom": "cyan", "substitution": "yellow",
}


def site_families(defects: pd.Series | np.ndarray) -> np.ndarray:
    """Which heatmap channels each site belongs to.

    Parameters
    ----------
    defects : array of str
        Site defect labels ("none" or one of SITE_FAMILY's keys).

    Returns
    -------
    ndarray of bool, shape (N, len(HEATMAP_CLASSES))

    Examples
    --------
    >>> site_families(np.array(["none", "V_X1", "adatom"])).astype(int).tolist()
    [[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 1, 0]]
    """
    labels = np.asarray(defects, dtype=object)
    out = np.zeros((len(labels), len(HEATMAP_CLASSES)), dtype=bool)
    for k, name in enumerate(HEATMAP_CLASSES[1:], start=1):
        out[:, k] = np.isin(labels, [d for d, fam in SITE_FAMILY.items() if fam == name])
    out[:, 0] = out[:, 1:].any(axis=1)
    return out


def defect_sites(sites: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 2) in pixels and channel membership (N, C) of a twin's defective sites."""
    fam = site_families(sites["defect"].to_numpy())
    keep = fam[:, 0]
    return sites.loc[keep, ["y_px", "x_px"]].to_numpy(dtype=float), fam[keep]


def target_maps(sites: pd.DataFrame, shape: tuple[int, int], radius_px: float) -> np.ndarray:
    """Ground-truth maps: discs of ``radius_px`` around every defective site, per channel.

    Parameters
    ----------
    sites : DataFrame
        Site table of a twin (``y_px``, ``x_px``, ``defect``).
    shape : tuple of int
        Image shape.
    radius_px : float
        Disc radius in pixels (the benchmark and training use half the nn distance).

    Returns
    -------
    ndarray of bool, shape (len(HEATMAP_CLASSES), H, W)

    Examples
    --------
    >>> t = pd.DataFrame({"y_px": [5.0, 12.0], "x_px": [5.0, 12.0], "defect": ["V_M", "none"]})
    >>> m = target_maps(t, (20, 20), 2.0)
    >>> int(m[1].sum()), int(m[2].sum()), bool(m[0, 5, 5])
    (13, 0, True)
    """
    h, w = shape
    out = np.zeros((len(HEATMAP_CLASSES), h, w), dtype=bool)
    yx, fam = defect_sites(sites)
    r = float(radius_px)
    ri = int(np.ceil(r))
    dy, dx = np.mgrid[-ri : ri + 1, -ri : ri + 1]
    for (y, x), f in zip(yx, fam):
        cy, cx = int(round(y)), int(round(x))
        yy, xx = cy + dy, cx + dx
        inside = ((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        for k in np.flatnonzero(f):
            out[k, yy[inside], xx[inside]] = True
    return out
