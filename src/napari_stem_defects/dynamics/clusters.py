"""Dense groups of unstable sites: density-based clustering (DBSCAN) with their outlines and sizes.

DBSCAN semantics, written with :class:`scipy.spatial.cKDTree` and
:func:`scipy.sparse.csgraph.connected_components` (scikit-learn is not a
dependency): among the unstable sites, a *core* site has at least
``min_samples`` unstable sites (itself included) within ``eps_px``; core sites
closer than ``eps_px`` share a cluster; a non-core unstable site within
``eps_px`` of a core site joins the cluster of its nearest core site; the rest
are noise (label -1), as are all stable sites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, cKDTree

#: Columns of the cluster table (``clusters.csv``).
CLUSTER_COLUMNS: tuple[str, ...] = (
    "cluster_id", "n_sites", "area_px2", "area_nm2", "mean_instability", "max_instability",
    "centroid_y_px", "centroid_x_px",
)
#: Vertices of the disc each cluster's hull is grown by (one lies on each axis).
DISC_VERTICES: int = 32
#: Median absolute deviations above the median that make a site unstable by default.
OUTLIER_MADS: float = 3.0


@dataclass
class Clusters:
    """Dense clusters of unstable sites.

    Attributes
    ----------
    table : DataFrame
        One row per cluster, :data:`CLUSTER_COLUMNS`: ``cluster_id`` (0, 1, ...;
        the largest cluster first), number of sites, area of the outline in
        px^2 and nm^2 (NaN without a pixel size), mean and max instability of
        its sites, and the mean position of its sites.
    polygons : list of ndarray
        Outline of each cluster, (k, 2) vertices (y, x) in pixels, in table
        order: the convex hull of its sites grown by ``eps_px / 2``.
    labels : ndarray of int, shape (n,)
        The cluster of each site, -1 for none.
    unstable : ndarray of bool, shape (n,)
        Sites above the threshold.
    threshold : float
        The instability threshold used.
    eps_px : float
    min_samples : int
    """

    table: pd.DataFrame
    polygons: list[np.ndarray]
    labels: np.ndarray
    unstable: np.ndarray
    threshold: float
    eps_px: float
    min_samples: int


def outlier_threshold(values: np.ndarray, n_mads: float = OUTLIER_MADS) -> float:
    """Robust outlier threshold: ``median + n_mads * 1.4826 * MAD`` of the finite values.

    1.4826 MAD estimates the standard deviation of normally distributed
    values, so the default marks values more than 3 "sigma" above the median,
    without letting the outliers themselves inflate the spread. When the MAD is
    0 (over half the values equal) the standard deviation is used instead.

    Returns
    -------
    float
        +inf when there are no finite values.

    Examples
    --------
    >>> outlier_threshold([1.0, 2.0, 3.0, 4.0, 100.0])
    7.4478
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("inf")
    med = float(np.median(v))
    spread = 1.4826 * float(np.median(np.abs(v - med)))
    if spread == 0.0:
        spread = float(v.std())
    return med + float(n_mads) * spread


def dbscan(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN labels of ``points`` (0, 1, ... per cluster; -1 for noise).

    Clusters are numbered in the order of their first point. A border point
    within ``eps`` of core points of two clusters joins the nearest one.

    Examples
    --------
    >>> pts = [[0, 0], [0, 1], [1, 0], [10, 10], [30, 0], [30, 1], [31, 0], [31, 1]]
    >>> dbscan(pts, 1.5, 3).tolist()
    [0, 0, 0, -1, 1, 1, 1, 1]
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    n = len(pts)
    labels = np.full(n, -1, dtype=int)
    if n == 0:
        return labels
    tree = cKDTree(pts)
    pairs = tree.query_pairs(float(eps), output_type="ndarray")
    counts = 1 + np.bincount(pairs.ravel(), minlength=n)
    core = counts >= int(min_samples)
    if not core.any():
        return labels
    both = core[pairs[:, 0]] & core[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    cp = pairs[both]
    graph = coo_matrix((np.ones(len(cp)), (cp[:, 0], cp[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    core_idx = np.flatnonzero(core)
    # renumber the components of core points in order of first appearance
    _, first = np.unique(comp[core_idx], return_index=True)
    order = comp[core_idx][np.sort(first)]
    remap = {c: k for k, c in enumerate(order)}
    labels[core_idx] = [remap[c] for c in comp[core_idx]]
    border = np.flatnonzero(~core)
    if len(border):
        d, j = cKDTree(pts[core_idx]).query(pts[border], k=1, distance_upper_bound=float(eps) * (1 + 1e-12))
        near = np.isfinite(d)
        labels[border[near]] = labels[core_idx[j[near]]]
    return labels


def cluster_outline(points: np.ndarray, buffer_px: float, n_vertices: int = DISC_VERTICES) -> np.ndarray:
    """Convex hull of ``points`` grown by ``buffer_px`` (a polygon, (k, 2) vertices (y, x)).

    The growth is the Minkowski sum with a regular ``n_vertices``-gon of
    circumradius ``buffer_px`` that has a vertex on each axis, so single
    points and collinear points get a proper area too.

    Examples
    --------
    Two points 4 px apart grown by 1 px: a 4 x 2 rectangle plus the 32-gon (area n r^2 sin(2 pi / n) / 2).

    >>> poly = cluster_outline([[0, 0], [0, 4]], 1.0)
    >>> round(polygon_area(poly), 4), round(4 * 2 + 16 * float(np.sin(2 * np.pi / 32)), 4)
    (11.1214, 11.1214)
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if buffer_px <= 0:
        raise ValueError(f"buffer_px must be positive, got {buffer_px}")
    a = 2 * np.pi * np.arange(n_vertices) / n_vertices
    disc = float(buffer_px) * np.stack([np.sin(a), np.cos(a)], axis=1)
    cloud = (pts[:, None, :] + disc[None]).reshape(-1, 2)
    hull = ConvexHull(cloud)
    return cloud[hull.vertices]


def polygon_area(vertices: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula), any orientation.

    Examples
    --------
    >>> polygon_area([[0, 0], [0, 2], [3, 2], [3, 0]])
    6.0
    """
    v = np.asarray(vertices, dtype=float).reshape(-1, 2)
    y, x = v[:, 0], v[:, 1]
    return float(abs(np.dot(y, np.roll(x, -1)) - np.dot(x, np.roll(y, -1))) / 2.0)


def unstable_clusters(
    positions: np.ndarray,
    instability: np.ndarray,
    *,
    threshold: float | None = None,
    eps_px: float,
    min_samples: int = 3,
    pixel_size_A: float | tuple[float, float] | None = None,
) -> Clusters:
    """Dense clusters of unstable sites, with their outlines, areas and instability.

    Parameters
    ----------
    positions : ndarray, shape (n, 2)
        Sites (y, x) in pixels.
    instability : ndarray, shape (n,)
        Per-site instability (NaN: never unstable).
    threshold : float, optional
        Sites with instability above it are unstable; default
        :func:`outlier_threshold` of ``instability`` (median + 3 x 1.4826 MAD).
    eps_px : float
        Neighbourhood radius of the clustering (about 1.5-2 nearest-neighbour distances).
    min_samples : int
        Unstable sites (the site itself included) within ``eps_px`` that make
        a site a core site; 1 makes every unstable site a cluster.
    pixel_size_A : float or (float, float), optional
        Å per pixel (y, x), for ``area_nm2``.

    Returns
    -------
    Clusters

    Examples
    --------
    Four unstable sites on the corners of a 10 px square and one lone one:

    >>> pos = np.array([[0, 0], [0, 10], [10, 0], [10, 10], [50, 50], [30, 0], [30, 10]], float)
    >>> inst = np.array([5, 6, 7, 8, 9, 1, 1], float)
    >>> c = unstable_clusters(pos, inst, threshold=2.0, eps_px=12.0, pixel_size_A=0.5)
    >>> c.labels.tolist(), c.table[["n_sites", "mean_instability", "max_instability"]].values.tolist()
    ([0, 0, 0, 0, -1, -1, -1], [[4.0, 6.5, 8.0]])
    >>> hull = 10 * 10 + 4 * 10 * 6 + 16 * 6 ** 2 * np.sin(2 * np.pi / 32)  # square grown by eps / 2 = 6 px
    >>> bool(np.isclose(c.table.area_px2[0], hull)), bool(np.isclose(c.table.area_nm2[0], hull * 0.25 / 100))
    (True, True)
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 2) if np.size(positions) else np.zeros((0, 2))
    inst = np.asarray(instability, dtype=float).reshape(-1)
    if len(inst) != len(pos):
        raise ValueError(f"{len(pos)} positions but {len(inst)} instability values")
    if not (np.isfinite(eps_px) and eps_px > 0):
        raise ValueError(f"eps_px must be a positive distance in pixels, got {eps_px!r}")
    if int(min_samples) < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    thr = outlier_threshold(inst) if threshold is None else float(threshold)
    unstable = np.isfinite(inst) & np.isfinite(pos).all(axis=1) & (inst > thr)
    idx = np.flatnonzero(unstable)
    sub = dbscan(pos[idx], eps_px, int(min_samples))
    if pixel_size_A is None:
        px_area_nm2 = float("nan")
    else:
        py, px = (pixel_size_A, pixel_size_A) if np.isscalar(pixel_size_A) else pixel_size_A
        px_area_nm2 = float(py) * float(px) / 100.0
    found = []
    for k in range(sub.max() + 1 if len(sub) else 0):
        members = idx[sub == k]
        poly = cluster_outline(pos[members], eps_px / 2.0)
        area = polygon_area(poly)
        v = inst[members]
        c = pos[members].mean(axis=0)
        found.append((members, poly, (len(members), area, area * px_area_nm2, float(v.mean()), float(v.max()),
                                      float(c[0]), float(c[1]))))
    found.sort(key=lambda f: (-f[2][0], -f[2][3], f[2][5], f[2][6]))
    labels = np.full(len(pos), -1, dtype=int)
    rows, polygons = [], []
    for cid, (members, poly, row) in enumerate(found):
        labels[members] = cid
        rows.append((cid, *row))
        polygons.append(poly)
    table = pd.DataFrame(rows, columns=list(CLUSTER_COLUMNS)).astype({
        "cluster_id": int, "n_sites": int, "area_px2": float, "area_nm2": float, "mean_instability": float,
        "max_instability": float, "centroid_y_px": float, "centroid_x_px": float})
    return Clusters(table=table, polygons=polygons, labels=labels, unstable=unstable, threshold=thr,
                    eps_px=float(eps_px), min_samples=int(min_samples))
