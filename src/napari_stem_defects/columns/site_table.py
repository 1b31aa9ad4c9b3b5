"""From refined peaks to the site table: lattice indexing, empty sites, sublattice and species."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..materials import ATOMIC_NUMBER, Material
from .lattice_sites import fit_site_model, index_peaks, neighbour_basis, sites_in_view
from .result import EMPTY, SITE_COLUMNS, ColumnDetectionError, SpeciesFit
from .species import fit_species_free, fit_species_physics, species_posterior

#: Z exponent used to decide which sublattice is the metal one.
_GAMMA = 1.7
#: A hollow-site peak is kept as an adatom above this fraction of the dimmer sublattice's median.
_ADATOM_FRACTION = 0.3


def _expected_ratio(material: Material) -> float:
    """Expected metal / X2 column intensity ratio."""
    m = sum(f * ATOMIC_NUMBER[e] ** _GAMMA for e, f in material.metals.items())
    x = 2 * sum(f * ATOMIC_NUMBER[e] ** _GAMMA for e, f in material.chalcogens.items())
    return m / x


def build_site_table(
    peaks: np.ndarray,
    refined_by: np.ndarray,
    a1: np.ndarray,
    a2: np.ndarray,
    nn_px: float,
    shape: tuple[int, int],
    measure: Callable[[np.ndarray], np.ndarray],
    material: Material | None,
) -> tuple[pd.DataFrame, dict[str, SpeciesFit], dict, list[str]]:
    """Index peaks, place every site in view, decide metal/chalcogen and species.

    Parameters
    ----------
    peaks : ndarray, shape (P, 2)
        Refined peak positions (y, x) in pixels.
    refined_by : ndarray of str, shape (P,)
        'gaussian' or 'com' for each peak.
    a1, a2 : ndarray
        Lattice vectors from the FFT, in pixels.
    nn_px : float
        Nearest-neighbour distance in pixels.
    shape : tuple of int
        Image shape.
    measure : callable
        Integrated intensity at given positions.
    material : Material or None
        Host material.

    Returns
    -------
    sites : DataFrame
        Columns :data:`~.result.SITE_COLUMNS`.
    fits : dict of str to SpeciesFit
    info : dict
        'a1', 'a2' (the FFT lattice vectors, a2 taken 60 degrees from a1),
        'm_offset' (X position relative to its metal) and 'posteriors' (per
        sublattice, a table of species probabilities indexed by site_id).
    messages : list of str
    """
    messages: list[str] = []
    u, v = neighbour_basis(a1, a2)
    mn, indexed = index_peaks(peaks, u, v)
    if indexed.sum() < 6:
        raise ColumnDetectionError("the detected peaks do not form a honeycomb lattice")
    model, inlier = fit_site_model(peaks[indexed], mn[indexed], nn_px)
    idx = np.flatnonzero(indexed)[inlier]
    # One peak per site: keep the one closest to the smooth lattice.
    err = np.linalg.norm(peaks[idx] - model.smooth(mn[idx]), axis=1)
    order = np.argsort(err)
    _, first = np.unique(mn[idx[order]], axis=0, return_index=True)
    idx = idx[order[first]]
    grid, positions = sites_in_view(model, shape, mn[idx])
    coset = grid.sum(axis=1) % 3
    peak_of = {tuple(k): p for k, p in zip(mn[idx].tolist(), idx.tolist())}
    peak_index = np.array([peak_of.get(tuple(g), -1) for g in grid.tolist()], dtype=np.int64)
    detected = peak_index >= 0
    positions[detected] = peaks[peak_index[detected]]
    how = np.full(len(grid), "lattice", dtype=object)
    how[detected] = refined_by[peak_index[detected]]
    # A centre of mass pulled far off the lattice (failed Gaussian fit) is worse than the lattice.
    com = np.flatnonzero(detected & (how == "com"))
    lattice_pos = model.predict(grid[com])
    off = com[np.linalg.norm(positions[com] - lattice_pos, axis=1) > 0.25 * nn_px]
    positions[off] = lattice_pos[np.isin(com, off)]
    how[off] = "lattice"
    intensity = measure(positions)
    # The empty (hollow) coset is the locally darkest one; across a mirror twin boundary it changes.
    hollow = _local_hollow(positions, coset, intensity, nn_px)
    if len(np.unique(hollow)) > 1:
        messages.append(f"{len(np.unique(hollow))} domains with different stacking found "
                        "(e.g. a mirror twin boundary); sublattices are assigned per domain")
    keep = (coset != hollow) | detected
    grid, positions, coset, hollow, detected, how, intensity = (
        arr[keep] for arr in (grid, positions, coset, hollow, detected, how, intensity))

    metal = np.zeros(len(grid), dtype=np.int64)
    for h_val in np.unique(hollow):
        dom = hollow == h_val
        a, b = (c for c in range(3) if c != h_val)
        med_dom = {c: float(np.median(intensity[dom & (coset == c)])) if np.any(dom & (coset == c)) else 0.0
                   for c in (a, b)}
        metal_coset, note = _metal_coset(a, b, med_dom, material)
        if note and note not in messages:
            messages.append(note)
        metal[dom] = metal_coset
    sub = np.where(coset == hollow, "H", np.where(coset == metal, "M", "X")).astype(object)
    med = {s: float(np.median(intensity[sub == s])) for s in ("M", "X") if np.any(sub == s)}

    # Cell indices relative to the metal coset: position = M(i, j) + k d with d = (a1 + a2) / 3.
    # k = 2 is written as M(i + 1, j + 1) - d, so every X2 column (and hollow) of cell (i, j)
    # is a nearest neighbour of metal (i, j), at +d or -d.
    m_rel = grid[:, 0] - metal
    k = (m_rel + grid[:, 1]) % 3
    i = (m_rel - 2 * grid[:, 1] - k) // 3 + (k == 2)
    j = (m_rel + grid[:, 1] - k) // 3 + (k == 2)
    x_k = int(np.median(k[sub == "X"])) if np.any(sub == "X") else 1

    species = np.full(len(grid), EMPTY, dtype=object)
    prob = np.ones(len(grid))
    fits: dict[str, SpeciesFit] = {}
    groups = {s: sub == s for s in ("M", "X")}
    if material is not None:
        nb = _neighbour_sums(grid, sub, intensity)
        fits = fit_species_physics({s: intensity[g] for s, g in groups.items()}, material,
                                   {s: nb[g] for s, g in groups.items()})
    else:
        fits = {s: fit_species_free(intensity[g], s) for s, g in groups.items() if g.sum() > 1}
    posterior = np.full(len(grid), None, dtype=object)  # per site: probabilities over its fit's labels
    for s, g in groups.items():
        if s in fits:
            post = species_posterior(fits[s], intensity[g])
            best = post.argmax(axis=1)
            species[g] = np.asarray(fits[s].labels, dtype=object)[best]
            prob[g] = post[np.arange(len(best)), best]
            posterior[np.flatnonzero(g)] = list(post)
    h = sub == "H"
    if h.any():
        floor = _ADATOM_FRACTION * (min(med.values()) if med else 0.0)
        real = h & (intensity > floor)
        species[real] = "adatom"
        if "X" in fits:
            post = fits["X"].posterior(intensity[real])
            empty = [n for n, lab in enumerate(fits["X"].labels) if lab == EMPTY]
            prob[real] = 1.0 - post[:, empty].sum(axis=1)
        drop = h & ~real
        keep2 = ~drop
        grid, positions, sub, species, prob, intensity, detected, how, i, j, posterior = (
            arr[keep2] for arr in (grid, positions, sub, species, prob, intensity, detected, how, i, j, posterior))
    sites = pd.DataFrame({
        "site_id": np.arange(len(grid)),
        "y_px": positions[:, 0], "x_px": positions[:, 1],
        "sublattice": sub, "species": species, "probability": prob, "intensity": intensity,
        "detected": detected, "refined_by": how, "i": i.astype(np.int64), "j": j.astype(np.int64),
        "verified": np.zeros(len(grid), bool),
    }, columns=list(SITE_COLUMNS))
    order = np.lexsort((sites["sublattice"].map({"M": 0, "X": 1, "H": 2}).to_numpy(), sites["j"], sites["i"]))
    sites = sites.iloc[order].reset_index(drop=True)
    sites["site_id"] = np.arange(len(sites))
    posterior = posterior[order]
    posteriors = {}
    for s, fit in fits.items():
        rows = np.flatnonzero(sites["sublattice"].to_numpy() == s)
        values = np.stack(posterior[rows]) if len(rows) else np.zeros((0, len(fit.labels)))
        posteriors[s] = pd.DataFrame(values, index=pd.Index(rows, name="site_id"), columns=list(fit.labels))
    a1_fit, a2_fit = u - v, 2 * u + v
    info = {"a1": a1_fit, "a2": a2_fit, "m_offset": (1 if x_k == 1 else -1) * (a1_fit + a2_fit) / 3.0,
            "posteriors": posteriors}
    n_off = int(len(peaks) - len(idx))
    if n_off:
        messages.append(f"{n_off} peaks were not on a lattice site (noise, adatoms off-site, other grains)")
    return sites, fits, info, messages


def _local_hollow(positions: np.ndarray, coset: np.ndarray, intensity: np.ndarray, nn_px: float) -> np.ndarray:
    """For every site, the coset with the least intensity within three neighbour distances (the hollow one).

    Intensity rather than peak counts decides, so a sublattice too dim to
    give peaks (S2 beside W under a broad probe) is still told from the hollow.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(positions)
    pairs = tree.sparse_distance_matrix(tree, 3.0 * nn_px, output_type="coo_matrix")
    total = np.zeros((len(positions), 3))
    count = np.zeros((len(positions), 3))
    np.add.at(total, (pairs.row, coset[pairs.col]), intensity[pairs.col])
    np.add.at(count, (pairs.row, coset[pairs.col]), 1.0)
    overall = np.array([intensity[coset == c].mean() if np.any(coset == c) else np.inf for c in range(3)])
    local = np.where(count > 0, total / np.maximum(count, 1), overall[None, :])
    hollow = local.argmin(axis=1)
    # Majority vote over the neighbourhood removes specks; a domain needs 20 sites to stand.
    votes = np.zeros((len(positions), 3))
    np.add.at(votes, (pairs.row, hollow[pairs.col]), 1.0)
    hollow = votes.argmax(axis=1)
    sizes = np.bincount(hollow, minlength=3)
    small = sizes[hollow] < 20
    hollow[small] = int(np.argmax(sizes))
    return hollow


def _neighbour_sums(grid: np.ndarray, sub: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Summed intensity of each site's nearest neighbours on the other sublattice (scaled to 3)."""
    from .lattice_sites import STEPS

    row_of = {tuple(g): r for r, g in enumerate(grid.tolist())}
    total = np.zeros(len(grid))
    count = np.zeros(len(grid))
    for step in STEPS:
        rows = np.array([row_of.get((g[0] + step[0], g[1] + step[1]), -1) for g in grid.tolist()])
        ok = rows >= 0
        other = np.zeros(len(grid), bool)
        other[ok] = (sub[rows[ok]] != sub[ok]) & (sub[rows[ok]] != "H")
        total[other] += intensity[rows[other]]
        count[other] += 1
    return np.where(count > 0, total * 3.0 / np.maximum(count, 1), 0.0)


def _metal_coset(a: int, b: int, med: dict[int, float], material: Material | None) -> tuple[int, str]:
    """Which of two cosets holds metals, from the ratio of their median intensities."""
    bright, dim = (a, b) if med[a] >= med[b] else (b, a)
    if material is None:
        return bright, "no material given: the brighter sublattice is taken as the metal one"
    if med[dim] <= 0 or med[bright] <= 0:
        return bright, "sublattice intensities are not positive: the brighter one is taken as metal"
    expected = np.log(_expected_ratio(material))
    measured = np.log(med[bright] / med[dim])
    if abs(expected) < 0.15:
        return bright, (f"in {material.name} metal and X2 columns are nearly equally bright; "
                        "the metal sublattice assignment is uncertain")
    return (bright, "") if abs(measured - expected) <= abs(-measured - expected) else (dim, "")
