"""How well heatmaps find known defects: region-level precision / recall and pixel IoU / F1.

Used by the tests and ``benchmarks/bench_heatmaps.py`` on digital twins,
whose site tables say where every defect is.

- **Region level**: the regions of each family's map at the threshold, specks
  under 0.6 nn^2 dropped as in the viewer and ``analyze``
  (:func:`~napari_stem_defects.heatmaps.regions.find_regions`), against the
  defective sites of that family. A site is found when a region of its family
  comes within ``tolerance_nn`` nn of it; a region is correct when it finds at
  least one site. Precision = correct regions / regions, recall = found sites
  / sites.
- **Pixel level**: each thresholded map against discs of 0.5 nn around the
  family's sites (:func:`~napari_stem_defects.heatmaps.classes.target_maps`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .classes import HEATMAP_CLASSES, defect_sites, target_maps
from .regions import MIN_AREA_NN2, find_regions, min_region_px

#: Radius of the pixel-level target discs, in nn.
PIXEL_TARGET_NN = 0.5
#: How close (nn) a region must come to a defective site to find it.
TOLERANCE_NN = 0.5


def localisation_counts(
    maps: np.ndarray, sites: pd.DataFrame, nn_px: float, threshold: float = 0.5,
    tolerance_nn: float = TOLERANCE_NN, min_area_nn2: float = MIN_AREA_NN2,
) -> dict[str, dict[str, int]]:
    """Counts behind the region- and pixel-level scores of one image, per family.

    Parameters
    ----------
    maps : ndarray, shape (C, H, W)
        Heatmaps (:attr:`HeatmapResult.maps`).
    sites : DataFrame
        Ground-truth site table (``y_px``, ``x_px``, ``defect``).
    nn_px : float
        Metal to chalcogen distance in pixels.
    threshold : float
        Map threshold.
    tolerance_nn : float
        Matching distance in nn.
    min_area_nn2 : float
        Smaller regions are dropped (nn^2; 0 keeps every region).

    Returns
    -------
    dict
        Per family: ``regions``, ``regions_correct``, ``sites``, ``sites_found``,
        ``tp_px``, ``fp_px``, ``fn_px``.
    """
    regions = find_regions(maps, threshold, min_area_px=min_region_px(nn_px, min_area_nn2))
    yx, fam = defect_sites(sites)
    truth = target_maps(sites, maps.shape[1:], PIXEL_TARGET_NN * nn_px)
    h, w = maps.shape[1:]
    r = max(1, int(round(tolerance_nn * nn_px)))
    out = {}
    for c, name in enumerate(HEATMAP_CLASSES):
        lab = regions.labels[c]
        ids = set(regions.table.loc[regions.table["class"] == name, "region_id"])
        hit_regions: set[int] = set()
        found = 0
        for y, x in yx[fam[:, c]]:
            iy, ix = int(round(y)), int(round(x))
            win = lab[max(0, iy - r) : min(h, iy + r + 1), max(0, ix - r) : min(w, ix + r + 1)]
            near = set(np.unique(win[win > 0]).tolist())
            if near:
                found += 1
                hit_regions |= near
        pred = maps[c] >= threshold
        out[name] = {
            "regions": len(ids), "regions_correct": len(hit_regions & ids),
            "sites": int(fam[:, c].sum()), "sites_found": found,
            "tp_px": int((pred & truth[c]).sum()), "fp_px": int((pred & ~truth[c]).sum()),
            "fn_px": int((~pred & truth[c]).sum()),
        }
    return out


def add_counts(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Sum two count dicts of :func:`localisation_counts` (``total`` may be empty)."""
    for name, counts in part.items():
        acc = total.setdefault(name, dict.fromkeys(counts, 0))
        for k, v in counts.items():
            acc[k] += v
    return total


def scores(counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Region precision / recall / F1 and pixel IoU / F1 per family from summed counts.

    Examples
    --------
    >>> c = {"defect": {"regions": 10, "regions_correct": 9, "sites": 12, "sites_found": 11,
    ...                 "tp_px": 80, "fp_px": 10, "fn_px": 10}}
    >>> scores(c).round(3).loc["defect", ["region_precision", "region_recall", "pixel_iou"]].tolist()
    [0.9, 0.917, 0.8]
    """
    rows = {}
    for name, c in counts.items():
        prec = c["regions_correct"] / c["regions"] if c["regions"] else float("nan")
        rec = c["sites_found"] / c["sites"] if c["sites"] else float("nan")
        if not (c["regions"] or c["sites"]):
            f1 = float("nan")  # nothing there and nothing found: no score
        else:
            p0, r0 = (0.0 if np.isnan(prec) else prec), (0.0 if np.isnan(rec) else rec)
            f1 = 2 * p0 * r0 / (p0 + r0) if p0 + r0 > 0 else 0.0
        union = c["tp_px"] + c["fp_px"] + c["fn_px"]
        rows[name] = {
            "region_precision": prec, "region_recall": rec, "region_f1": f1, "sites": c["sites"],
            "pixel_iou": c["tp_px"] / union if union else float("nan"),
            "pixel_f1": 2 * c["tp_px"] / (union + c["tp_px"]) if union else float("nan"),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
