"""Strain and rotation of the metal sublattice against the reference lattice of each domain.

Every metal site of a domain carries cell indices (i, j) (see :mod:`~napari_stem_defects.columns.site_table`),
so the domain's reference lattice is a least-squares fit ``position = origin + i A1 + j A2`` over its detected
metal sites, all of them or those in a reference region; with ``reference='material'`` the basis keeps the
fitted orientation but takes the material's nominal lattice constant. Each site's local basis (b1, b2) is the
same fit over its neighbours within ``window`` cells; ``F = [b1 b2] [A1 A2]^-1`` is the local deformation and
``F - I`` the displacement gradient, whose symmetric part is the strain (exx, eyy, exy; x to the right, y down
the image) and whose antisymmetric part the rotation (degrees, positive anticlockwise as displayed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

#: Columns added to ``sites.csv`` by ``analyze --strain`` (NaN on sites that are not detected metals).
STRAIN_COLUMNS = ("exx", "eyy", "exy", "rotation_deg")
#: Fewest detected metal sites a domain (or its part in the reference region) needs for a reference lattice.
MIN_REFERENCE_SITES = 6


@dataclass
class ReferenceLattice:
    """A domain's reference lattice: metal (i, j) at ``origin + i a1 + j a2`` (y, x pixels)."""

    domain: int
    origin: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    n_sites: int
    source: str

    def positions(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """(y, x) of metal sites (i, j) on this lattice."""
        return self.origin + np.outer(i, self.a1) + np.outer(j, self.a2)


@dataclass
class StrainResult:
    """What :func:`measure_strain` returns.

    Attributes
    ----------
    table : DataFrame
        Index: the site table's index; columns :data:`STRAIN_COLUMNS` plus ``uy_px``, ``ux_px`` (displacement
        from the reference lattice); NaN on every site that is not a detected metal.
    references : dict of int to ReferenceLattice
    messages : list of str
    """

    table: pd.DataFrame
    references: dict[int, ReferenceLattice]
    messages: list[str] = field(default_factory=list)


def strain_from_gradient(grad: np.ndarray) -> np.ndarray:
    """(N, 4) exx, eyy, exy, rotation_deg from displacement gradients (N, 2, 2) in (x, y) order.

    Examples
    --------
    >>> strain_from_gradient(np.array([[[0.01, 0.0], [0.0, 0.0]]])).round(4).tolist()
    [[0.01, 0.0, 0.0, 0.0]]
    """
    grad = np.asarray(grad, float)
    exx, eyy = grad[:, 0, 0], grad[:, 1, 1]
    exy = 0.5 * (grad[:, 0, 1] + grad[:, 1, 0])
    f = grad + np.eye(2)
    rotation = np.degrees(np.arctan2(f[:, 0, 1] - f[:, 1, 0], f[:, 0, 0] + f[:, 1, 1]))
    return np.stack([exx, eyy, exy, rotation], axis=1)


def metal_rows(sites: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the detected metal sites (the ones that carry a measured position)."""
    metal = sites["sublattice"].to_numpy() == "M"
    if "detected" in sites:
        metal &= sites["detected"].to_numpy(bool)
    return metal


def _domains(sites: pd.DataFrame) -> np.ndarray:
    return sites["domain"].to_numpy(np.int64) if "domain" in sites else np.zeros(len(sites), np.int64)


def fit_reference(yx: np.ndarray, ij: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares origin, a1, a2 of ``yx = origin + i a1 + j a2``."""
    design = np.column_stack([np.ones(len(ij)), ij.astype(float)])
    coef, *_ = np.linalg.lstsq(design, yx, rcond=None)
    return coef[0], coef[1], coef[2]


def _nominal_basis(a1: np.ndarray, a2: np.ndarray, a_px: float) -> tuple[np.ndarray, np.ndarray]:
    """The basis of lattice constant ``a_px`` closest (by rotation) to the fitted (a1, a2), in (y, x)."""
    b = np.column_stack([a1[::-1], a2[::-1]])  # (x, y) columns
    angle = np.degrees(np.arctan2(b[1, 1], b[0, 1]) - np.arctan2(b[1, 0], b[0, 0]))
    angle = (angle + 180.0) % 360.0 - 180.0
    phi = np.deg2rad(60.0 * np.round(angle / 60.0))
    ideal = a_px * np.array([[1.0, np.cos(phi)], [0.0, np.sin(phi)]])
    u, _, vt = np.linalg.svd(b @ np.linalg.inv(ideal))  # polar decomposition: the rotation part
    rot = u @ vt
    ref = rot @ ideal
    return ref[::-1, 0], ref[::-1, 1]


def reference_lattices(sites: pd.DataFrame, reference: str | np.ndarray = "domain",
                       a_px: float | None = None) -> tuple[dict[int, ReferenceLattice], list[str]]:
    """Reference lattice of every domain.

    Parameters
    ----------
    sites : DataFrame
        Site table (``y_px, x_px, sublattice, i, j``, optional ``detected``, ``domain``).
    reference : {'domain', 'material'} or ndarray of bool (H, W)
        'domain': fit over all the domain's detected metals; 'material': that fit's orientation with the
        nominal lattice constant ``a_px``; a mask: fit over the metals inside it (a domain with fewer than
        :data:`MIN_REFERENCE_SITES` there falls back to all its metals, with a message).
    a_px : float, optional
        Nominal lattice constant in pixels (needed for 'material').

    Returns
    -------
    dict of int to ReferenceLattice, list of str
    """
    if isinstance(reference, str) and reference not in ("domain", "material"):
        raise ValueError(f"reference must be 'domain', 'material' or a mask of the image, not {reference!r}")
    if isinstance(reference, str) and reference == "material" and not (a_px and a_px > 0):
        raise ValueError("a 'material' reference needs the material and a calibrated pixel size")
    metal = metal_rows(sites)
    yx = sites[["y_px", "x_px"]].to_numpy(float)
    ij = sites[["i", "j"]].to_numpy(np.int64)
    domains = _domains(sites)
    inside = np.ones(len(sites), bool)
    if not isinstance(reference, str):
        mask = np.asarray(reference, bool)
        r = np.clip(np.rint(yx).astype(int), 0, np.array(mask.shape) - 1)
        inside = mask[r[:, 0], r[:, 1]]
    out, messages = {}, []
    for d in np.unique(domains[metal]):
        rows = metal & (domains == d)
        source = "domain"
        if not isinstance(reference, str):
            if (rows & inside).sum() >= MIN_REFERENCE_SITES:
                rows, source = rows & inside, "region"
            else:
                messages.append(f"domain {d} has fewer than {MIN_REFERENCE_SITES} metal sites in the reference "
                                "region: its own average lattice is its reference")
        if rows.sum() < 3:
            continue
        origin, a1, a2 = fit_reference(yx[rows], ij[rows])
        if isinstance(reference, str) and reference == "material":
            a1, a2 = _nominal_basis(a1, a2, float(a_px))
            origin = np.mean(yx[rows] - ij[rows] @ np.stack([a1, a2]), axis=0)
            source = "material"
        out[int(d)] = ReferenceLattice(int(d), origin, a1, a2, int(rows.sum()), source)
    return out, messages


def _neighbour_lookup(ij: np.ndarray, domains: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Row of the site at (domain, i + di, j + dj) for every site and offset, -1 where none; (N, K)."""
    pad = int(np.abs(offsets).max())
    lo = ij.min(axis=0) - pad
    span = ij.max(axis=0) - lo + pad + 1
    key = lambda d, a, b: (d * span[0] + (a - lo[0])) * span[1] + (b - lo[1])
    keys = key(domains, ij[:, 0], ij[:, 1])
    order = np.argsort(keys)
    sorted_keys = keys[order]
    out = np.full((len(ij), len(offsets)), -1, np.int64)
    for k, (di, dj) in enumerate(offsets):
        want = key(domains, ij[:, 0] + di, ij[:, 1] + dj)
        pos = np.clip(np.searchsorted(sorted_keys, want), 0, len(keys) - 1)
        hit = sorted_keys[pos] == want
        out[hit, k] = order[pos[hit]]
    return out


def window_offsets(window: int) -> np.ndarray:
    """Cell offsets (di, dj) of a hexagonal window of ``window`` cells around a site (itself included)."""
    r = range(-window, window + 1)
    return np.array([(a, b) for a in r for b in r if abs(a + b) <= window], np.int64)


def local_bases(yx: np.ndarray, ij: np.ndarray, domains: np.ndarray, window: int = 2) -> np.ndarray:
    """Local basis (b1, b2) of every site: least squares over its neighbours within ``window`` cells.

    Returns
    -------
    ndarray of shape (N, 2, 2)
        [:, :, 0] = b1 and [:, :, 1] = b2, in (y, x); NaN where fewer than 5 neighbours were found.
    """
    offsets = window_offsets(window)
    nb = _neighbour_lookup(ij, domains, offsets)
    ok = nb >= 0
    d = np.column_stack([np.ones(len(offsets)), offsets]).astype(float)  # (K, 3)
    pos = np.where(ok[..., None], yx[np.clip(nb, 0, None)], 0.0)  # (N, K, 2)
    w = ok.astype(float)
    coef = _weighted_fit(w, d, pos)
    # one robust pass: neighbours far off the first fit (a misplaced peak, a missed column) are left out
    resid = np.linalg.norm(pos - np.einsum("ka,nac->nkc", d, np.nan_to_num(coef)), axis=2)
    resid = np.where(ok, resid, np.nan)
    with np.errstate(invalid="ignore"):
        spread = 1.4826 * np.nanmedian(resid, axis=1, keepdims=True)
    limit = np.maximum(4.0 * np.nan_to_num(spread, nan=np.inf), 0.5)
    w = (ok & (resid <= limit)).astype(float)
    return _bases(_weighted_fit(w, d, pos))


def _weighted_fit(w: np.ndarray, d: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Per-site weighted least squares of ``pos = d @ coef``: (N, 3, 2) coefficients, NaN where underdetermined."""
    normal = np.einsum("nk,ka,kb->nab", w, d, d)
    rhs = np.einsum("nk,ka,nkc->nac", w, d, pos)
    good = (w > 0).sum(axis=1) >= 5
    good &= np.abs(np.linalg.det(normal)) > 1e-6
    coef = np.full((len(w), 3, 2), np.nan)
    if good.any():
        coef[good] = np.linalg.solve(normal[good], rhs[good])
    return coef


def _bases(coef: np.ndarray) -> np.ndarray:
    """(N, 2, 2) bases (columns b1, b2) from fitted (origin, b1, b2) coefficients."""
    return np.stack([coef[:, 1, :], coef[:, 2, :]], axis=2)


def measure_strain(sites: pd.DataFrame, reference: str | np.ndarray = "domain", a_px: float | None = None,
                   window: int = 2) -> StrainResult:
    """Strain, rotation and displacement of every detected metal site against its domain's reference lattice.

    Parameters
    ----------
    sites : DataFrame
        Site table of the columns stage.
    reference, a_px
        See :func:`reference_lattices`.
    window : int
        Half-width in cells of the neighbourhood a local basis is fitted over (2: 19 cells).

    Returns
    -------
    StrainResult
    """
    if window < 1:
        raise ValueError(f"the strain window must be at least one cell, got {window}")
    refs, messages = reference_lattices(sites, reference, a_px)
    table = pd.DataFrame(np.nan, index=sites.index, columns=[*STRAIN_COLUMNS, "uy_px", "ux_px"])
    metal = metal_rows(sites)
    if not metal.any():
        return StrainResult(table, refs, messages + ["no detected metal sites: no strain"])
    sub = sites[metal]
    yx = sub[["y_px", "x_px"]].to_numpy(float)
    ij = sub[["i", "j"]].to_numpy(np.int64)
    domains = _domains(sub)
    bases = local_bases(yx, ij, domains, window)
    values = np.full((len(sub), 6), np.nan)
    for d, ref in refs.items():
        rows = domains == d
        ref_xy = np.column_stack([ref.a1[::-1], ref.a2[::-1]])
        loc_xy = bases[rows][:, ::-1, :]  # (n, 2(x, y), 2)
        grad = loc_xy @ np.linalg.inv(ref_xy) - np.eye(2)
        values[rows, :4] = strain_from_gradient(grad)
        values[rows, 4:] = yx[rows] - ref.positions(ij[rows, 0], ij[rows, 1])
    table.loc[sub.index, :] = values
    return StrainResult(table, refs, messages)


def _linear_upsampling(n: int, m: int, step: int) -> np.ndarray:
    """Sparse (n, m) matrix interpolating linearly from a grid of ``m`` cells of ``step`` px to ``n`` pixels."""
    from scipy.sparse import csr_matrix

    where = np.clip((np.arange(n) + 0.5) / step - 0.5, 0, m - 1)
    lo = np.floor(where).astype(int)
    hi = np.minimum(lo + 1, m - 1)
    frac = where - lo
    rows = np.r_[np.arange(n), np.arange(n)]
    return csr_matrix((np.r_[1 - frac, frac], (rows, np.r_[lo, hi])), shape=(n, m))


def strain_maps(sites: pd.DataFrame, strain: pd.DataFrame, shape: tuple[int, int], nn_px: float,
                smooth_px: float | None = None) -> np.ndarray:
    """Smooth maps of :data:`STRAIN_COLUMNS` on the image grid, NaN outside the crystal.

    Every measured metal site's values are put on its pixel and spread by a normalised Gaussian of
    ``smooth_px`` (default one nn distance): each pixel holds the Gaussian-weighted mean of the sites around
    it; pixels farther than two nn distances from any measured site are NaN.

    Returns
    -------
    ndarray of float32, shape (4, H, W)
    """
    h, w = (int(s) for s in shape)
    values = strain.loc[:, list(STRAIN_COLUMNS)].to_numpy(float)
    good = np.isfinite(values).all(axis=1)
    out = np.full((len(STRAIN_COLUMNS), h, w), np.nan, np.float32)
    yx = sites.loc[strain.index[good], ["y_px", "x_px"]].to_numpy(float)
    r = np.rint(yx).astype(int)
    keep = (r[:, 0] >= 0) & (r[:, 0] < h) & (r[:, 1] >= 0) & (r[:, 1] < w)
    if keep.sum() < 3:
        return out
    r, vals = r[keep], values[good][keep]
    sigma = max(float(nn_px if smooth_px is None else smooth_px), 0.5)
    step = max(1, int(sigma // 4))  # the maps are smooth: work on a grid of step px, then interpolate back
    gh, gw = -(-h // step), -(-w // step)
    flat = (r[:, 0] // step) * gw + r[:, 1] // step
    count = np.bincount(flat, minlength=gh * gw).reshape(gh, gw).astype(float)
    crystal = ndimage.distance_transform_edt(count == 0, sampling=step) <= 2.0 * nn_px + step
    den = ndimage.gaussian_filter(count, sigma / step, mode="constant")
    up_y, up_x = _linear_upsampling(h, gh, step), _linear_upsampling(w, gw, step)
    for k in range(len(STRAIN_COLUMNS)):
        total = np.bincount(flat, vals[:, k], minlength=gh * gw).reshape(gh, gw)
        num = ndimage.gaussian_filter(total, sigma / step, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            coarse = np.where(crystal & (den > 1e-6), num / den, np.nan)
        known = np.isfinite(coarse)
        weight = up_y @ (up_x @ known.astype(float).T).T
        value = up_y @ (up_x @ np.where(known, coarse, 0.0).T).T
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.where(weight > 0.5, value / weight, np.nan)
    return out


__all__ = ["MIN_REFERENCE_SITES", "STRAIN_COLUMNS", "ReferenceLattice", "StrainResult", "fit_reference",
           "local_bases", "measure_strain", "metal_rows", "reference_lattices", "strain_from_gradient",
           "strain_maps", "window_offsets"]
