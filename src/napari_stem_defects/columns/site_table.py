"""From refined peaks to the site table: grains and domains, empty sites, sublattices, cells and species."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..cell_convention import partner_index, screen_angle
from ..materials import Material
from ..vocabulary import PHASE_CODES
from .domains import domain_ids, local_structure, motif_is_1t, structure_levels
from .free_mixture import fit_species_free
from .grain_sites import attach_peaks, grain_steps, place_grain_sites
from .grains import grain_orientation, segment_grains
from .lattice_sites import neighbour_basis
from .metal_sublattice import metal_coset
from .result import EMPTY, SITE_COLUMNS, SITE_STRUCTURE_COLUMNS, ColumnDetectionError, SpeciesFit
from .species import fit_species_physics, species_posterior
from .territories import territories, void_regions
from .vacuum import peaks_in_vacuum

#: Fewest unexplained peaks that form a patch of their own (a translation domain) in the registration.
PATCH_PEAKS: int = 12
#: A domain with three occupied positions is a boundary band, not a 1T phase, when this share of its
#: sites lies on its edge.
BAND_SHARE: float = 0.6
#: A hollow-site peak is kept as an adatom above this fraction of the dimmer sublattice's median.
_ADATOM_FRACTION = 0.3


def build_site_table(
    peaks: np.ndarray,
    refined_by: np.ndarray,
    a1: np.ndarray,
    a2: np.ndarray,
    nn_px: float,
    shape: tuple[int, int],
    measure: Callable[[np.ndarray], np.ndarray],
    material: Material | None,
    mask: np.ndarray | None = None,
    image: np.ndarray | None = None,
    metal_ratio: float | None = None,
    microscope: Any = None,
) -> tuple[pd.DataFrame, dict[str, SpeciesFit], dict, list[str]]:
    """Split the image into grains and domains, place every site, decide sublattices, cells and species.

    Parameters
    ----------
    peaks : ndarray, shape (P, 2)
        Refined peak positions (y, x) in pixels.
    refined_by : ndarray of str, shape (P,)
        'gaussian', 'com' or 'map' for each peak.
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
    mask : ndarray of bool, shape (H, W), optional
        Pixels not to analyse (NaN in the file, or drawn by the user).
    image : ndarray, shape (H, W), optional
        The image, to tell a domain's structure (2H hollow or 1T) by how bright
        each coset is above the darkest point of the cell; without it the
        measured intensities decide.
    metal_ratio : float, optional
        Expected metal / X2 column intensity ratio at the microscope's settings
        (:func:`~napari_stem_defects.simulate.cross_sections.metal_x2_ratio`); decides which
        sublattice is the metal one where Z contrast misleads (Se2 as bright as W at 60 kV).
    microscope : MicroscopeSettings, optional
        The image's beam and detector: the species fit may take its levels from the calibrated table
        (:func:`~.species.fit_species_physics`).

    Returns
    -------
    sites : DataFrame
        Columns :data:`~.result.SITE_COLUMNS` and :data:`~.result.SITE_STRUCTURE_COLUMNS`.
    fits : dict of str to SpeciesFit
        'M', 'X' (metals and X2 columns of 2H domains and boundary bands) and, with 1T domains,
        'M1T', 'X1T' (fitted apart: a 1T domain has no empty hollow, so its background differs).
    info : dict
        'a1', 'a2' (the main domain's lattice vectors), 'm_offset' (its metal to
        partner step), 'posteriors' (per fit, species probabilities indexed by
        site_id), 'unexplained' (peaks attached to no site, (K, 2)), 'regions'
        (uint8 (H, W): 0 crystal or unknown, else the phase code of a hole,
        amorphous patch or masked pixel) and 'domains' (one dict per domain).
    messages : list of str
    """
    messages: list[str] = []
    u, v = neighbour_basis(a1, a2)
    grains, orientation = segment_grains(peaks, nn_px)
    if (grains >= 0).sum() < 6:
        raise ColumnDetectionError("the detected peaks do not form a honeycomb lattice")
    grain_map, distance = territories(shape, peaks, grains, nn_px)
    regions = void_regions(grain_map, distance, nn_px, image)
    vacuum = peaks_in_vacuum(image, peaks, grains, regions, nn_px)
    if vacuum.any():  # noise in a hole that joined a grain: no film, no column
        grains = np.where(vacuum, -1, grains)
        grain_map, distance = territories(shape, peaks, grains, nn_px)
        regions = void_regions(grain_map, distance, nn_px, image)
    if mask is not None:
        regions[np.asarray(mask, bool)] = PHASE_CODES["masked"]
    placed, grains, n_tilted = _register(peaks, grains, orientation, u, v, nn_px, shape, regions, grain_map)
    if not placed:
        raise ColumnDetectionError("the detected peaks do not form a honeycomb lattice")
    if n_tilted > 1:
        messages.append(f"{n_tilted} grains of different orientation found (tilt grain boundaries); "
                        "each has its own lattice")
    if len(placed) > n_tilted:
        messages.append(f"{len(placed) - n_tilted} regions whose columns are shifted against their grain's "
                        "lattice (translation domains, dislocations) have lattices of their own")
    grid = np.concatenate([p.grid for p in placed])
    positions = np.concatenate([p.positions for p in placed])
    grain = np.concatenate([np.full(len(p.grid), p.grain) for p in placed])
    coset = grid.sum(axis=1) % 3
    peak_index = _attach_by_grain(positions, grain, peaks, grains, nn_px)
    detected = peak_index >= 0
    positions[detected] = peaks[peak_index[detected]]
    how = np.full(len(grid), "lattice", dtype=object)
    how[detected] = refined_by[peak_index[detected]]
    _pull_back_failed_fits(positions, how, detected, grid, grain, placed, nn_px)
    intensity = measure(positions)
    level = structure_levels(image, positions, nn_px) if image is not None else intensity
    hollow, _ = local_structure(positions, coset, level, nn_px, group=grain)
    domain = domain_ids(positions, grain, hollow, nn_px)
    if image is not None:
        hollow, domain = _confirm_1t(image, positions, grid, coset, level, hollow, domain, grain,
                                     {p.grain: p.steps_px for p in placed}, nn_px)
    # a 2H domain keeps its hollow-coset sites only where a column was found there (an adatom)
    keep = (hollow < 0) | (coset != hollow) | detected
    grid, positions, coset, hollow, detected, how, intensity, grain, domain, peak_index = (
        a[keep] for a in (grid, positions, coset, hollow, detected, how, intensity, grain, domain, peak_index))
    steps = {p.grain: p.steps_px for p in placed}
    sub, i, j, domains = _cells_of_domains(grid, coset, hollow, intensity, domain, grain, steps, material, messages,
                                           metal_ratio)
    phase = np.where(hollow < 0, "1T", "2H").astype(object)
    boundary = _boundary(positions, domain, regions, nn_px)
    for entry in domains:  # a thin band with three occupied positions between domains is their boundary
        rows = domain == entry["domain"]
        if entry["phase"] == "1T" and boundary[rows].mean() >= BAND_SHARE:
            phase[rows], boundary[rows], entry["phase"] = "boundary", True, "boundary"

    species = np.full(len(grid), EMPTY, dtype=object)
    prob = np.ones(len(grid))
    # boundary bands hold X2 columns of the domains meeting there: they are fitted with the 2H ones; 1T
    # domains get a fit of their own (no empty hollow there: their background level differs)
    one_t = phase == "1T"
    groups = {"M": (sub == "M") & ~one_t, "X": (sub == "X") & ~one_t,
              "M1T": (sub == "M") & one_t, "X1T": (sub == "X") & one_t}
    groups = {k: g for k, g in groups.items() if g.any()}
    med = {s: float(np.median(intensity[g])) for s, g in groups.items()}
    fits: dict[str, SpeciesFit] = {}
    if material is not None:
        nb = _neighbour_sums(grid, grain, sub, intensity, phase != "2H")
        for keys in (("M", "X"), ("M1T", "X1T")):
            part = {k: groups[k] for k in keys if k in groups}
            if part:
                fits.update(fit_species_physics({k: intensity[g] for k, g in part.items()}, material,
                                                {k: nb[g] for k, g in part.items()}, microscope=microscope))
    else:
        fits = {s: fit_species_free(intensity[g], s[0]) for s, g in groups.items() if g.sum() > 1}
    posterior = np.full(len(grid), None, dtype=object)
    for s, g in groups.items():
        if s in fits:
            post = species_posterior(fits[s], intensity[g])
            best = post.argmax(axis=1)
            species[g] = np.asarray(fits[s].species, dtype=object)[best]
            prob[g] = post[np.arange(len(best)), best]
            posterior[np.flatnonzero(g)] = list(post)
    h = sub == "H"
    if h.any():
        floor = _ADATOM_FRACTION * (min([v for k, v in med.items() if k in ("M", "X")] or [0.0]))
        real = h & (intensity > floor)
        species[real] = "adatom"
        if "X" in fits:
            post = fits["X"].posterior(intensity[real])
            empty = [n for n, lab in enumerate(fits["X"].labels) if lab == EMPTY]
            prob[real] = 1.0 - post[:, empty].sum(axis=1)
        keep2 = ~(h & ~real)
        grid, positions, sub, species, prob, intensity, detected, how, i, j, posterior, domain, phase, boundary, \
            peak_index = (a[keep2] for a in (grid, positions, sub, species, prob, intensity, detected, how, i, j,
                                             posterior, domain, phase, boundary, peak_index))
    sites = pd.DataFrame({
        "site_id": np.arange(len(grid)),
        "y_px": positions[:, 0], "x_px": positions[:, 1],
        "sublattice": sub, "species": species, "probability": prob, "intensity": intensity,
        "detected": detected, "refined_by": how, "i": i.astype(np.int64), "j": j.astype(np.int64),
        "verified": np.zeros(len(grid), bool), "domain": domain.astype(np.int64), "phase": phase,
        "boundary": boundary,
    }, columns=[*SITE_COLUMNS, *SITE_STRUCTURE_COLUMNS])
    order = np.lexsort((sites["sublattice"].map({"M": 0, "X": 1, "H": 2}).to_numpy(), sites["j"], sites["i"],
                        sites["domain"]))
    sites = sites.iloc[order].reset_index(drop=True)
    sites["site_id"] = np.arange(len(sites))
    posterior = posterior[order]
    phase_sorted = sites["phase"].to_numpy()
    posteriors = {}
    for s, fit in fits.items():
        rows = np.flatnonzero((sites["sublattice"].to_numpy() == s[0])
                              & ((phase_sorted == "1T") if s.endswith("1T") else (phase_sorted != "1T")))
        values = np.stack(posterior[rows]) if len(rows) else np.zeros((0, len(fit.species)))
        posteriors[s] = pd.DataFrame(values, index=pd.Index(rows, name="site_id"), columns=fit.species)
    main = max(domains, key=lambda d: d["n_sites"])
    unexplained = np.setdiff1d(np.arange(len(peaks)), peak_index[peak_index >= 0])
    info = {"a1": main["a1_px"], "a2": main["a2_px"], "m_offset": main["partner_px"], "posteriors": posteriors,
            "unexplained": peaks[unexplained], "regions": regions, "domains": domains}
    if len(domains) > 1:
        kinds = sorted({d["phase"] for d in domains})
        messages.append(f"{len(domains)} domains ({', '.join(kinds)}): different stacking (mirror twin "
                        "boundaries), grains or phases; sublattices and cells are assigned per domain")
    if len(unexplained):
        messages.append(f"{len(unexplained)} detected peaks are on no lattice site (noise, off-site adatoms, "
                        "amorphous matter)")
    for name in ("hole", "amorphous", "masked"):
        share = float((regions == PHASE_CODES[name]).mean())
        if share > 0:
            messages.append(f"{100 * share:.1f} % of the image is {name if name != 'hole' else 'holes in the film'}: "
                            "no sites there")
    return sites, fits, info, messages


def _register(peaks, grains, orientation, u, v, nn_px, shape, regions, grain_map, rounds: int = 5):
    """Sites of every grain, each on its own lattice; peaks a grain's lattice leaves unexplained that
    cluster into a patch (a translation domain, the far side of a dislocation) become a lattice of their
    own, up to ``rounds`` times.

    ``grain_map`` is the territories of the first round (:func:`~.territories.territories`).

    Returns
    -------
    placed : list of GrainSites
    grains : ndarray of int
        The final lattice label of every peak (-1: none).
    n_tilted : int
        Number of grains of different orientation (before patches were split off).
    """
    global_orientation = float(screen_angle(u)[0] % 60.0)
    grains = grains.copy()
    n_tilted = int(grains.max()) + 1
    angle = {g: grain_orientation(orientation, grains, g) for g in range(n_tilted)}
    for round_ in range(rounds):
        if round_:
            grain_map, _ = territories(shape, peaks, grains, nn_px)
        placed = []
        for g in range(int(grains.max()) + 1):
            own = grains == g
            if own.sum() < 6:
                continue
            ug, vg = grain_steps(u, v, global_orientation, angle[g])
            found = place_grain_sites(peaks[own], ug, vg, nn_px, shape, g, (grain_map == g) & (regions == 0))
            if found is not None and len(found.grid):
                placed.append(found)
        positions = np.concatenate([p.positions for p in placed]) if placed else np.zeros((0, 2))
        owner = np.concatenate([np.full(len(p.grid), p.grain) for p in placed]) if placed else np.zeros(0, int)
        attached = np.zeros(len(peaks), bool)
        index = _attach_by_grain(positions, owner, peaks, grains, nn_px)
        attached[index[index >= 0]] = True
        new = _unexplained_patches(peaks, grains, attached, nn_px)
        if not new:
            return placed, grains, n_tilted
        for members in new:
            label = int(grains.max()) + 1
            grains[members] = label
            angle[label] = grain_orientation(orientation, grains, label)
    return placed, grains, n_tilted


def _attach_by_grain(positions: np.ndarray, owner: np.ndarray, peaks: np.ndarray, labels: np.ndarray,
                     nn_px: float) -> np.ndarray:
    """The peak attached to each site: a grain's sites take its own peaks and peaks of no grain, never
    another grain's (near a boundary that would stretch a cell across it)."""
    out = np.full(len(positions), -1, dtype=np.int64)
    taken = np.zeros(len(peaks), bool)
    for g in np.unique(owner):
        rows = np.flatnonzero(owner == g)
        allowed = np.flatnonzero(((labels == g) | (labels < 0)) & ~taken)
        index = attach_peaks(positions[rows], peaks[allowed], nn_px)
        hit = index >= 0
        out[rows[hit]] = allowed[index[hit]]
        taken[allowed[index[hit]]] = True
    return out


def _unexplained_patches(peaks: np.ndarray, grains: np.ndarray, attached: np.ndarray, nn_px: float) -> list:
    """Connected sets (within 2.2 nn: a patch's metals, when its dim columns gave no peaks) of at least
    PATCH_PEAKS peaks that no site explains (in a grain, or in none where the order was too poor)."""
    from scipy import sparse
    from scipy.sparse import csgraph
    from scipy.spatial import cKDTree

    loose = np.flatnonzero(~attached)
    if len(loose) < PATCH_PEAKS:
        return []
    pairs = cKDTree(peaks[loose]).query_pairs(2.2 * nn_px, output_type="ndarray")
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(loose),) * 2)
    _, comp = csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    return [loose[comp == c] for c in np.flatnonzero(sizes >= PATCH_PEAKS)]


def _confirm_1t(image, positions, grid, coset, level, hollow, domain, grain, steps, nn_px):
    """Keep a candidate 1T domain only when its average cell shows both non-metal positions occupied
    (:func:`~.domains.motif_is_1t`); others take their darkest coset as hollow (2H). Returns the
    corrected hollow states and domain ids."""
    changed = False
    for d in np.unique(domain[hollow < 0]):
        rows = domain == d
        med = {c: float(np.median(level[rows & (coset == c)])) if np.any(rows & (coset == c)) else 0.0
               for c in range(3)}
        metal = _odd_coset(med)
        g = int(grain[rows][0])
        ok, _ = motif_is_1t(image, positions[rows & (coset == metal)], steps[g], nn_px)
        if not ok:
            hollow[rows] = min(med, key=med.get)
            changed = True
    if changed:
        domain = domain_ids(positions, grain, hollow, nn_px)
    return hollow, domain


def _pull_back_failed_fits(positions: np.ndarray, how: np.ndarray, detected: np.ndarray, grid: np.ndarray,
                           grain: np.ndarray, placed: list, nn_px: float) -> None:
    """A centre of mass pulled far off the lattice (failed Gaussian fit) is worse than the lattice: in place."""
    for p in placed:
        com = np.flatnonzero(detected & (how == "com") & (grain == p.grain))
        if len(com) == 0:
            continue
        lattice_pos = p.model.predict(grid[com])
        off = np.linalg.norm(positions[com] - lattice_pos, axis=1) > 0.25 * nn_px
        positions[com[off]] = lattice_pos[off]
        how[com[off]] = "lattice"


#: Nearest-neighbour steps (m, n) from a site to the next coset ((m + n) % 3 + 1); the other three are minus these.
_UP_STEPS = np.array([[1, 0], [0, 1], [-1, -1]])


def _cells_of_domains(grid, coset, hollow, intensity, domain, grain, steps, material, messages, metal_ratio=None):
    """Sublattice ('M', 'X', 'H') and cell indices (i, j) of every site, domain by domain, and a description
    of each domain.

    In a 2H domain the metal is the occupied coset whose median intensity
    ratio to the other matches the material (the brighter one without a
    material) and the hollow coset holds adatoms; in a 1T domain the metal is
    the coset unlike the other two. Each metal's partner is its X neighbour
    closest to +x (:func:`~napari_stem_defects.cell_convention.partner_index`);
    cell (i, j) of a metal at lattice coordinates g (coset c) solves
    ``g - (c, 0) = i (1, -1) + j (2, 1)``, and every X column and hollow site
    takes the indices of the metal whose cell it belongs to.
    """
    n = len(grid)
    sub = np.full(n, "X", dtype=object)
    i = np.zeros(n, np.int64)
    j = np.zeros(n, np.int64)
    domains = []
    for d in np.unique(domain):
        rows = domain == d
        g = int(grain[rows][0])
        h_val = int(hollow[rows][0])
        med = {c: float(np.median(intensity[rows & (coset == c)])) if np.any(rows & (coset == c)) else 0.0
               for c in range(3)}
        if h_val >= 0:
            a, b = (c for c in range(3) if c != h_val)
            metal, note = metal_coset(a, b, med, material, metal_ratio,
                                      {c: intensity[rows & (coset == c)] for c in (a, b)})
            if note and note not in messages:
                messages.append(note)
            x_coset = a if metal == b else b
            up = (x_coset - metal) % 3 == 1
            candidates = _UP_STEPS if up else -_UP_STEPS
        else:
            metal = _odd_coset(med)
            candidates = np.concatenate([_UP_STEPS, -_UP_STEPS])
        step = candidates[partner_index(candidates @ steps[g])]
        rel = grid[rows] - step * np.where(coset[rows] == metal, 0, 1)[:, None]
        if h_val >= 0:
            is_hollow = coset[rows] == h_val
            rel[is_hollow] = grid[rows][is_hollow] - 2 * step
            sub_rows = np.where(coset[rows] == metal, "M", np.where(is_hollow, "H", "X"))
        else:
            opposite = (coset[rows] != metal) & ((coset[rows] - metal) % 3 != (step.sum() % 3))
            rel[opposite] = grid[rows][opposite] + step
            sub_rows = np.where(coset[rows] == metal, "M", "X")
        rel = rel - np.array([metal, 0])
        jj = (rel[:, 0] + rel[:, 1]) // 3
        sub[rows], j[rows], i[rows] = sub_rows, jj, rel[:, 0] - 2 * jj
        basis = steps[g]
        partner = step @ basis
        a1 = np.array([1, -1]) @ basis
        a2 = np.array([2, 1]) @ basis
        domains.append({"domain": int(d), "grain": g, "phase": "1T" if h_val < 0 else "2H",
                        "n_sites": int(rows.sum()), "a1_px": a1, "a2_px": a2, "partner_px": partner,
                        "orientation_deg": float(screen_angle(partner)[0])})
    return sub, i, j, domains


def _odd_coset(med: dict[int, float]) -> int:
    """In a 1T domain, the metal: the coset whose level differs most from the other two (the X columns are alike)."""
    pairs = {(a, b): abs(med[a] - med[b]) for a, b in ((0, 1), (0, 2), (1, 2))}
    alike = min(pairs, key=pairs.get)
    return ({0, 1, 2} - set(alike)).pop()


def _boundary(positions: np.ndarray, domain: np.ndarray, regions: np.ndarray, nn_px: float) -> np.ndarray:
    """Sites within 1.3 nn of a site of another domain, or within 1.2 nn of a hole, amorphous or masked pixel."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    out = np.zeros(len(positions), bool)
    pairs = cKDTree(positions).query_pairs(1.3 * nn_px, output_type="ndarray")
    other = domain[pairs[:, 0]] != domain[pairs[:, 1]]
    out[pairs[other, 0]] = True
    out[pairs[other, 1]] = True
    if regions.any():
        near = ndimage.distance_transform_edt(regions == 0) <= 1.2 * nn_px
        rc = np.clip(np.rint(positions).astype(int), 0, np.array(regions.shape) - 1)
        out |= near[rc[:, 0], rc[:, 1]] & (regions[rc[:, 0], rc[:, 1]] == 0) & (regions > 0).any()
    return out


def _neighbour_sums(grid: np.ndarray, grain: np.ndarray, sub: np.ndarray, intensity: np.ndarray,
                    three_columns: np.ndarray | None = None) -> np.ndarray:
    """Summed intensity of each site's nearest neighbour columns within its grain (hollow sites aside).

    A 2H site has three (the other sublattice), a site of a 1T domain six (``three_columns``);
    sites with some neighbours missing (image edge) are scaled up to that number.
    """
    from .lattice_sites import STEPS

    keys = _site_keys(grain, grid)
    order = np.argsort(keys)
    total = np.zeros(len(grid))
    count = np.zeros(len(grid))
    for step in STEPS:
        wanted = _site_keys(grain, grid + step)
        pos = np.clip(np.searchsorted(keys, wanted, sorter=order), 0, len(keys) - 1)
        rows = np.where(keys[order[pos]] == wanted, order[pos], -1)
        ok = rows >= 0
        other = np.zeros(len(grid), bool)
        other[ok] = (sub[rows[ok]] != "H") & (sub[ok] != "H")
        total[other] += intensity[rows[other]]
        count[other] += 1
    expected = np.where(three_columns, 6.0, 3.0) if three_columns is not None else 3.0
    return np.where(count > 0, total * np.minimum(expected / np.maximum(count, 1), 2.0), 0.0)


def _site_keys(grain: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """One integer per (grain, m, n), for lookups by sorting."""
    g = np.asarray(grain, np.int64)
    m, n = (np.asarray(grid, np.int64) + (1 << 20)).T
    return (g << 42) | (m << 21) | n


