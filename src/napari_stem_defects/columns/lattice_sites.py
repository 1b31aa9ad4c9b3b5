"""Index detected peaks on the honeycomb and place every lattice site in the field of view.

All three sub-lattices of a 2H-MX2 image (metal, chalcogen, hollow) together
form one triangular lattice whose spacing is the metal-chalcogen distance.
Each peak is linked to its neighbours by the six nearest-neighbour steps
(``±u``, ``±v``, ``±(u + v)``), or the six second-neighbour ones, and labelled by integer coordinates (m, n)
through a breadth-first walk, so the labels follow local distortions and
drift instead of a global grid. Site (m, n) belongs to coset ``(m + n) % 3``:
two cosets hold columns (metal and chalcogen), the third is the hollow one.
A smooth model (a polynomial in (m, n) plus a local average of residuals)
then places the sites where no peak was found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

#: The six nearest-neighbour steps in (m, n).
STEPS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [-1, -1]])
#: Nearest- and second-neighbour steps (the second link columns of one sublattice when
#: the other is too dim to be detected).
LINKS = np.concatenate([STEPS, [[1, -1], [-1, 1], [2, 1], [-2, -1], [1, 2], [-1, -2]]])


def neighbour_basis(a1: np.ndarray, a2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour vectors u, v (120 degrees apart) from the lattice vectors a1, a2.

    Examples
    --------
    >>> u, v = neighbour_basis(np.array([0.0, 3.0]), np.array([2.598, 1.5]))
    >>> round(float(np.linalg.norm(u)), 3), round(float(np.linalg.norm(v)), 3)
    (1.732, 1.732)
    """
    a1 = np.asarray(a1, float)
    a2 = np.asarray(a2, float)
    if np.dot(a1, a2) < 0:
        a2 = a1 + a2
    return (a1 + a2) / 3.0, (a2 - 2.0 * a1) / 3.0


def index_peaks(peaks: np.ndarray, u: np.ndarray, v: np.ndarray, tol: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Integer coordinates (m, n) of every peak on the triangular lattice spanned by u, v.

    Parameters
    ----------
    peaks : ndarray of shape (P, 2)
        Peak positions (y, x) in pixels.
    u, v : ndarray of shape (2,)
        Nearest-neighbour vectors.
    tol : float
        Largest mismatch between a neighbour's offset and a lattice step, as a
        fraction of the neighbour distance.

    Returns
    -------
    mn : ndarray of int, shape (P, 2)
    indexed : ndarray of bool, shape (P,)
        False for peaks that do not sit on the lattice (noise, other grains).
    """
    peaks = np.asarray(peaks, float)
    n_peaks = len(peaks)
    mn = np.zeros((n_peaks, 2), dtype=np.int64)
    indexed = np.zeros(n_peaks, dtype=bool)
    if n_peaks < 3:
        return mn, indexed
    basis = np.column_stack([u, v])
    nn = float(np.linalg.norm(u))
    pairs = cKDTree(peaks).query_pairs(1.3 * np.sqrt(3.0) * nn, output_type="ndarray")
    if len(pairs) == 0:
        return mn, indexed
    d = peaks[pairs[:, 1]] - peaks[pairs[:, 0]]
    step = np.rint(np.linalg.solve(basis, d.T).T).astype(np.int64)
    good = (np.linalg.norm(d - step @ basis.T, axis=1) < tol * nn) & _is_step(step)
    pairs, step = pairs[good], step[good]
    code = _step_code(step)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    data = np.concatenate([code, _step_code(-step)])
    graph = sparse.csr_matrix((data, (rows, cols)), shape=(n_peaks, n_peaks))
    n_comp, comp = csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=n_comp)
    lookup = {(int(r), int(c)): int(k) for r, c, k in zip(rows, cols, data)}
    order_comps = np.argsort(sizes)[::-1]
    main = order_comps[0]
    rel = np.zeros_like(mn)
    for c in order_comps:
        if sizes[c] < 2:
            continue  # a lone peak keeps rel = (0, 0)
        start = int(np.flatnonzero(comp == c)[0])
        order, pred = csgraph.breadth_first_order(graph, start, directed=False, return_predecessors=True)
        for node in order[1:]:
            p = pred[node]
            rel[node] = rel[p] + LINKS[lookup[(int(p), int(node))] - 1]
    in_main = comp == main
    mn[in_main] = rel[in_main]
    indexed[in_main] = True
    if in_main.sum() < 3:
        return mn, indexed
    # Place the other components (and lone peaks) by the affine lattice fitted to the main one.
    origin, fitted = _affine(peaks[in_main], mn[in_main])
    cont = np.linalg.solve(fitted, (peaks - origin).T).T
    for c in order_comps[1:]:
        members = np.flatnonzero(comp == c)
        offset = np.rint(np.median(cont[members] - rel[members], axis=0)).astype(np.int64)
        mn[members] = rel[members] + offset
        pred_pos = origin + mn[members] @ fitted.T
        indexed[members] = np.linalg.norm(peaks[members] - pred_pos, axis=1) < tol * nn
    return mn, indexed


def _is_step(step: np.ndarray) -> np.ndarray:
    return np.any(np.all(step[:, None, :] == LINKS[None], axis=-1), axis=1)


def _step_code(step: np.ndarray) -> np.ndarray:
    """1-based index of each step in :data:`LINKS` (0 is reserved by sparse matrices)."""
    return np.argmax(np.all(step[:, None, :] == LINKS[None], axis=-1), axis=1) + 1


def _affine(positions: np.ndarray, mn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares origin and basis (columns u, v) with positions = origin + basis @ mn."""
    design = np.column_stack([np.ones(len(mn)), mn])
    coef, *_ = np.linalg.lstsq(design, positions, rcond=None)
    return coef[0], coef[1:].T


@dataclass
class SiteModel:
    """Where site (m, n) sits in the image: a smooth polynomial plus local residuals of the peaks.

    Built by :func:`fit_site_model`; call :meth:`predict`.
    """

    coef: np.ndarray
    centre: np.ndarray
    scale: float
    degree: int
    peak_positions: np.ndarray
    residuals: np.ndarray
    nn_px: float

    def smooth(self, mn: np.ndarray) -> np.ndarray:
        """Polynomial part of the position of sites ``mn``."""
        return _poly_design(mn, self.centre, self.scale, self.degree) @ self.coef

    def predict(self, mn: np.ndarray) -> np.ndarray:
        """Positions (y, x) of sites ``mn``, following local distortions seen in nearby peaks."""
        mn = np.asarray(mn, float).reshape(-1, 2)
        base = self.smooth(mn)
        if len(self.peak_positions) == 0 or len(base) == 0:
            return base
        tree = cKDTree(self.peak_positions)
        k = min(12, len(self.peak_positions))
        dist, idx = tree.query(base, k=k, distance_upper_bound=2.5 * self.nn_px)
        dist, idx = dist.reshape(len(base), k), idx.reshape(len(base), k)
        valid = np.isfinite(dist)
        weight = np.where(valid, np.exp(-0.5 * (dist / self.nn_px) ** 2), 0.0)
        res = self.residuals[np.where(valid, idx, 0)]
        total = weight.sum(axis=1, keepdims=True)
        local = (weight[..., None] * res).sum(axis=1) / np.maximum(total, 1e-12)
        return base + np.where(total > 0, local, 0.0)


def _poly_design(mn: np.ndarray, centre: np.ndarray, scale: float, degree: int) -> np.ndarray:
    m, n = ((np.asarray(mn, float) - centre) / scale).T
    cols = [m**i * n**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return np.column_stack(cols)


def fit_site_model(peaks: np.ndarray, mn: np.ndarray, nn_px: float, tol: float = 0.3) -> tuple[SiteModel, np.ndarray]:
    """Fit positions of indexed peaks as a smooth function of (m, n), rejecting outliers.

    Returns
    -------
    model : SiteModel
    inlier : ndarray of bool
        Peaks the model explains within ``tol`` nearest-neighbour distances.
    """
    peaks = np.asarray(peaks, float)
    degree = 3 if len(peaks) >= 200 else 1
    centre = mn.mean(axis=0)
    scale = float(max(np.abs(mn - centre).max(), 1.0))
    design = _poly_design(mn, centre, scale, degree)
    inlier = np.ones(len(peaks), bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[inlier], peaks[inlier], rcond=None)
        err = np.linalg.norm(peaks - design @ coef, axis=1)
        inlier = err < tol * nn_px
    residuals = peaks - design @ coef
    model = SiteModel(coef, centre, scale, degree, peaks[inlier], residuals[inlier], nn_px)
    return model, inlier


def sites_in_view(model: SiteModel, shape: tuple[int, int], mn_seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All lattice points (m, n) whose predicted position lies in the image, and those positions."""
    h, w = shape
    corners = np.array([[-0.5, -0.5], [-0.5, w - 0.5], [h - 0.5, -0.5], [h - 0.5, w - 0.5]])
    design = np.column_stack([np.ones(len(mn_seen)), mn_seen])
    coef, *_ = np.linalg.lstsq(design, model.smooth(mn_seen), rcond=None)
    cont = np.linalg.solve(coef[1:].T, (corners - coef[0]).T).T
    lo = np.floor(cont.min(axis=0)).astype(int) - 3
    hi = np.ceil(cont.max(axis=0)).astype(int) + 3
    m, n = np.mgrid[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1]
    grid = np.column_stack([m.ravel(), n.ravel()])
    pos = model.predict(grid)
    keep = (pos[:, 0] >= -0.5) & (pos[:, 0] <= h - 0.5) & (pos[:, 1] >= -0.5) & (pos[:, 1] <= w - 0.5)
    return grid[keep], pos[keep]
