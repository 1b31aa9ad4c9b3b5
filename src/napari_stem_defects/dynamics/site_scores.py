"""Per-site scores from frame-to-frame step changes: normalising, summarising, fusing, mapping, ranking.

Every instability measure of :mod:`.instability` is a (steps, sites) table of
changes; :func:`normalise_steps` divides it by its median (1 = the stack's
typical change), :func:`summarize_steps` gives one value per site,
:func:`fuse_steps` combines two measures step by step, :func:`instability_map`
splats site values into an image and :func:`roc_auc` scores a ranking
against ground truth. Plain numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .patch_sampling import _check_positions

#: Per-site summaries of the step changes :func:`summarize_steps` knows.
SUMMARIES: tuple[str, ...] = ("max", "p90", "mean")


def summarize_steps(per_step: np.ndarray, how: str = "max") -> np.ndarray:
    """Per-site summary of step changes (rows = steps), ignoring NaN.

    Parameters
    ----------
    per_step : ndarray, shape (T - 1, n)
    how : {'max', 'p90', 'mean'}
        Largest step (default: one event is one big step), 90th percentile, or mean.

    Returns
    -------
    ndarray of float, shape (n,)
        NaN for a site without any finite step.

    Examples
    --------
    >>> s = np.array([[1.0, np.nan], [5.0, np.nan], [2.0, np.nan]])
    >>> summarize_steps(s).tolist(), float(summarize_steps(s, "mean")[0])
    ([5.0, nan], 2.6666666666666665)
    """
    if how not in SUMMARIES:
        raise ValueError(f"how must be one of {SUMMARIES}, got {how!r}")
    x = np.asarray(per_step, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"per_step must have shape (steps, sites), got {x.shape}")
    out = np.full(x.shape[1], np.nan)
    has = np.isfinite(x).any(axis=0)
    if has.any():
        y = x[:, has]
        out[has] = {"max": lambda a: np.nanmax(a, axis=0), "mean": lambda a: np.nanmean(a, axis=0),
                    "p90": lambda a: np.nanpercentile(a, 90, axis=0)}[how](y)
    return out


def normalise_steps(per_step: np.ndarray) -> tuple[np.ndarray, float]:
    finite = per_step[np.isfinite(per_step)]
    scale = float(np.median(finite)) if len(finite) else 1.0
    if not (np.isfinite(scale) and scale > 0):
        scale = float(finite.mean()) if len(finite) and finite.mean() > 0 else 1.0
    return per_step / scale, scale



def fuse_steps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Step-by-step fusion of two normalised step-change tables: their geometric mean, normalised again.

    Both tables hold 1 for a typical (noise) step. A real event (a column
    leaving, appearing, dimming, moving) is a large step in both measures at
    once, while their noise is nearly independent, so the product picks out
    the event steps better than either table alone. The result is divided by
    its median (:func:`normalise_steps`): 1 is again the typical step. NaN
    where either is NaN.

    Parameters
    ----------
    a, b : ndarray, shape (T - 1, n)
        Non-negative normalised step changes (e.g. the code's and the intensity's).

    Returns
    -------
    ndarray of float, shape (T - 1, n)

    Examples
    --------
    >>> a = np.array([[1.0, 1.0, 1.0, 9.0], [1.0, 9.0, 1.0, 1.0]])
    >>> b = np.array([[1.0, 1.0, 1.0, 9.0], [9.0, 1.0, 1.0, 1.0]])
    >>> fuse_steps(a, b).tolist()  # the step where both jump stands out, a jump in one only is damped
    [[1.0, 1.0, 1.0, 9.0], [3.0, 3.0, 1.0, 1.0]]
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        raise ValueError(f"the step tables differ in shape: {x.shape} and {y.shape}")
    return normalise_steps(np.sqrt(np.clip(x, 0, None) * np.clip(y, 0, None)))[0]


def instability_map(
    shape: tuple[int, int],
    positions: np.ndarray,
    values: np.ndarray,
    sigma_px: float,
    *,
    truncate: float = 4.0,
) -> np.ndarray:
    """Site values splatted as Gaussians into an image.

    Each site adds ``v * exp(-r^2 / (2 sigma^2))``: a lone site of value ``v``
    on a pixel centre peaks at exactly ``v``; overlapping sites add up.
    Sites with a NaN value or position are skipped.

    Parameters
    ----------
    shape : (int, int)
        (H, W) of the map.
    positions : ndarray, shape (n, 2)
        (y, x) in pixels.
    values : ndarray, shape (n,)
    sigma_px : float
        Gaussian width (about half the nearest-neighbour distance).
    truncate : float
        The Gaussian is cut at this many sigma.

    Returns
    -------
    ndarray of float32, shape (H, W)

    Examples
    --------
    >>> m = instability_map((20, 30), [[5, 5], [12, 20]], [2.0, 0.5], 1.5)
    >>> float(m[5, 5]), float(m[12, 20]), m.shape
    (2.0, 0.5, (20, 30))
    """
    h, w = (int(s) for s in shape)
    pos = _check_positions(positions)
    vals = np.asarray(values, dtype=float).reshape(-1)
    if len(vals) != len(pos):
        raise ValueError(f"{len(pos)} positions but {len(vals)} values")
    if not (np.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f"sigma_px must be positive, got {sigma_px!r}")
    keep = np.isfinite(vals) & np.isfinite(pos).all(axis=1) & (vals != 0)
    pos, vals = pos[keep], vals[keep]
    out = np.zeros(h * w, float)
    r = int(np.ceil(truncate * sigma_px))
    d = np.arange(-r, r + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    chunk = max(1, 2_000_000 // len(dy))
    for s in range(0, len(pos), chunk):
        p, v = pos[s:s + chunk], vals[s:s + chunk]
        cy, cx = np.rint(p[:, 0]).astype(int), np.rint(p[:, 1]).astype(int)
        yy, xx = cy[:, None] + dy[None], cx[:, None] + dx[None]
        wgt = v[:, None] * np.exp(-((yy - p[:, :1]) ** 2 + (xx - p[:, 1:]) ** 2) / (2.0 * sigma_px ** 2))
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        out += np.bincount((yy * w + xx)[inside], weights=wgt[inside], minlength=h * w)
    return out.reshape(h, w).astype(np.float32)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (rank-based, ties count half).

    Equals the probability that a random positive scores above a random
    negative (the Mann-Whitney U statistic over n_pos * n_neg). NaN scores
    rank below every finite score.

    Returns
    -------
    float
        NaN when either class is empty.

    Examples
    --------
    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> roc_auc([1, 1, 0], [1, 0, 0])
    0.75
    """
    s = np.asarray(scores, dtype=float).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    s = np.where(np.isfinite(s), s, -np.inf)
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
