"""Intensities an analysis can compute with: finite, within float32's range, hot pixels tamed.

Detector data come as integers or floats of any magnitude. Casting a float64
image scaled by 1e300 to float32 gives infinities (and the image looked
"constant"); values of 1e-300 give zeros; one hot pixel of 1e30 turns the
power spectrum into that of a single spike ("no crystal lattice found").
:func:`finite_intensities` returns values every stage can use, changing
nothing for an ordinary image:

* NaN and infinite pixels take the median of the finite ones;
* data whose largest magnitude is beyond 1e30 or below 1e-30 are divided
  by it (in float64) so they span about [-1, 1] (a scale factor does not
  change where the atoms are);
* pixels further than :data:`OUTLIER_SPANS` times the 0.1-99.9 percentile
  range beyond that range (hot pixels, cosmic rays, a damaged value) take
  the median of their neighbours that are no outliers (clipped to the
  range's edge where all are), and are counted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OUTLIER_SPANS", "finite_intensities"]

#: How many percentile ranges beyond the 0.1-99.9 % range a pixel must lie to be clipped.
OUTLIER_SPANS = 20.0
#: Largest and smallest magnitudes kept as they are.
_HUGE, _TINY = 1e30, 1e-30
#: Pixels used for the percentiles (a regular subsample of larger images).
_SAMPLE = 1 << 20


def finite_intensities(image: np.ndarray, dtype: type = np.float32) -> tuple[np.ndarray, int]:
    """An image's values as finite ``dtype`` numbers a lattice or column fit can use.

    Parameters
    ----------
    image : ndarray
        Any real-valued array (2D image or stack).
    dtype : numpy dtype
        Output dtype (float32 or float64).

    Returns
    -------
    values : ndarray
        Same shape; NaN/inf replaced, rescaled if beyond float32's comfortable range, outliers clipped.
    n_clipped : int
        How many pixels were clipped as outliers.

    Raises
    ------
    ValueError
        No finite value at all.

    Examples
    --------
    >>> img = np.arange(100.0).reshape(10, 10) * 1e300
    >>> out, _ = finite_intensities(img)
    >>> bool(np.isfinite(out).all()) and float(out.max() - out.min()) > 0.5
    True
    >>> img = np.arange(4096.0).reshape(64, 64); img[3, 3] = 1e30
    >>> out, n = finite_intensities(img)
    >>> n, float(out[3, 3]) < 100_000
    (1, True)
    """
    arr = np.asarray(image)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ValueError("the image holds no finite values")
    values = arr.astype(np.float64, copy=True)
    if not finite.all():
        values[~finite] = np.median(values[finite])
    peak = float(np.max(np.abs(values)))
    if peak > _HUGE or 0 < peak < _TINY:
        values /= peak
    flat = values.ravel()
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    lo, hi = np.percentile(sample, [0.1, 99.9])
    span = float(hi - lo)
    n_clipped = 0
    if span > 0:
        low, high = lo - OUTLIER_SPANS * span, hi + OUTLIER_SPANS * span
        outliers = (values < low) | (values > high)
        n_clipped = int(outliers.sum())
        if n_clipped:
            np.clip(values, low, high, out=values)
            values[outliers] = _neighbour_median(values, outliers)
    return values.astype(dtype, copy=False), n_clipped


def _neighbour_median(values: np.ndarray, outliers: np.ndarray) -> np.ndarray:
    """For each outlier pixel, the median of its 3 x 3 neighbours in the last two axes that are no outliers.

    A hot pixel carries no signal: clipped to the range's edge it still outshines every column and pulls
    the nearest column's fit onto itself; its neighbours' median is what the pixel would have read.
    Where every neighbour is an outlier too, the clipped value stays.
    """
    where = np.argwhere(outliers)
    if values.ndim < 2 or not len(where):
        return values[outliers]
    h, w = values.shape[-2:]
    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    found = np.full((len(where), len(steps)), np.nan)
    for k, (dy, dx) in enumerate(steps):
        at = where.copy()
        at[:, -2] += dy
        at[:, -1] += dx
        inside = (at[:, -2] >= 0) & (at[:, -2] < h) & (at[:, -1] >= 0) & (at[:, -1] < w)
        idx = tuple(at[inside].T)
        ok = ~outliers[idx]
        found[np.flatnonzero(inside)[ok], k] = values[idx][ok]
    has = np.isfinite(found).any(axis=1)
    out = values[outliers].copy()
    out[has] = np.nanmedian(found[has], axis=1)
    return out
