"""Lattice sites grain by grain: index each grain's peaks, place its sites, attach every peak to a site.

Each grain (:func:`~napari_stem_defects.columns.grains.segment_grains`) gets
its own lattice: its peaks are indexed with the FFT's nearest-neighbour steps
turned to the grain's orientation, a smooth site model is fitted to them, and
its sites are placed over the grain's territory only (not in holes, amorphous
patches, masked areas or other grains). Every detected peak within
:data:`ATTACH_RADIUS` of a site is then attached to it, whichever grain
indexed it, so no real column of a crystalline region is discarded; the peaks
left over are reported as unexplained.

Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .grains import rotate
from .lattice_sites import SiteModel, _affine, fit_site_model, index_peaks, sites_in_view

#: Largest distance (nn) between a peak and the site it is attached to.
ATTACH_RADIUS: float = 0.3
#: A site left without a peak takes the nearest free peak up to this far (nn) when that peak is nearer to it
#: than to any other site: columns of a distorted patch (strain, drift, a bent film) stay on their sites.
REACH_RADIUS: float = 0.45


@dataclass
class GrainSites:
    """The sites of one grain.

    Attributes
    ----------
    grain : int
    grid : ndarray of int, shape (N, 2)
        Lattice coordinates (m, n) of each site on the triangular lattice of all
        honeycomb positions (nearest-neighbour steps).
    positions : ndarray, shape (N, 2)
        Predicted positions (y, x) in pixels.
    steps_px : ndarray, shape (2, 2)
        Pixel vectors (rows) of the grid steps (1, 0) and (0, 1), fitted.
    model : SiteModel
    """

    grain: int
    grid: np.ndarray
    positions: np.ndarray
    steps_px: np.ndarray
    model: SiteModel


def place_grain_sites(peaks: np.ndarray, u: np.ndarray, v: np.ndarray, nn_px: float, shape: tuple[int, int],
                      grain: int, territory: np.ndarray) -> GrainSites | None:
    """Index one grain's peaks and place its sites over its territory.

    Parameters
    ----------
    peaks : ndarray, shape (P, 2)
        The grain's peaks.
    u, v : ndarray, shape (2,)
        Nearest-neighbour steps in the grain's orientation.
    nn_px : float
    shape : tuple of int
        Image shape.
    grain : int
        Its label.
    territory : ndarray of bool, shape (H, W)
        Pixels the grain's sites may occupy.

    Returns
    -------
    GrainSites or None
        None when fewer than six peaks index consistently.
    """
    mn, indexed = index_peaks(peaks, u, v)
    if indexed.sum() < 6:
        return None
    model, inlier = fit_site_model(peaks[indexed], mn[indexed], nn_px)
    if inlier.sum() < 6:
        return None
    seen = mn[indexed][inlier]
    grid, positions = sites_in_view(model, shape, seen)
    rc = np.clip(np.rint(positions).astype(int), 0, np.array(shape) - 1)
    keep = territory[rc[:, 0], rc[:, 1]]
    origin, basis = _affine(peaks[indexed][inlier], seen)
    del origin
    return GrainSites(grain, grid[keep], positions[keep], basis.T.copy(), model)


def attach_peaks(positions: np.ndarray, peaks: np.ndarray, nn_px: float) -> np.ndarray:
    """The peak attached to each site (-1: none), one per site.

    Each peak goes to its nearest site within ATTACH_RADIUS (the nearest peak wins); then a site
    still without one takes its nearest free peak within REACH_RADIUS, if that peak has no other
    site nearer (a column displaced in a distorted patch is its site's column, not an off-lattice one).

    Examples
    --------
    >>> sites = np.array([[0.0, 0.0], [0.0, 10.0], [0.0, 20.0]])
    >>> attach_peaks(sites, np.array([[0.5, 9.0], [0.2, 0.1], [0.0, 0.8], [0.0, 24.0]]), nn_px=10.0).tolist()
    [1, 0, 3]
    """
    out = np.full(len(positions), -1, dtype=np.int64)
    if len(positions) == 0 or len(peaks) == 0:
        return out
    dist, site = cKDTree(positions).query(peaks, distance_upper_bound=REACH_RADIUS * nn_px)
    for radius in (ATTACH_RADIUS, REACH_RADIUS):
        free = np.ones(len(peaks), bool)
        free[out[out >= 0]] = False
        ok = free & (dist <= radius * nn_px) & (out[np.minimum(site, len(positions) - 1)] < 0)
        order = np.flatnonzero(ok)[np.argsort(dist[ok])]
        _, first = np.unique(site[order], return_index=True)
        winners = order[first]
        out[site[winners]] = winners
    return out


def grain_steps(u: np.ndarray, v: np.ndarray, global_orientation: float, grain_orientation: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The FFT's nearest-neighbour steps u, v turned to a grain's orientation (both mod 60 degrees)."""
    turn = (grain_orientation - global_orientation + 30.0) % 60.0 - 30.0
    return rotate(u, turn), rotate(v, turn)
