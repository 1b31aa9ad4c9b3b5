"""Species of every column from its integrated intensity: mixtures fitted per sublattice.

With a known material the mixture is physics-constrained: component means
are ``scale * sum(Z ** gamma)`` for each candidate column content (e.g. on
metal sites: empty, Mo, the usual dopant W, an S2 antisite), with one scale
for contents of metal atoms and one for contents of chalcogens, each shared
by both sublattices (so an antisite is read on its atoms' scale), and the Z
exponent gamma chosen by likelihood from 1.3 to 2.4 among the fits that give
the stated contents the majority in about their stated shares (counted per
sublattice); the metal contents take an exponent of their own where it
explains the image clearly better (Mo against W at 60 kV), and then (or in
a metal alloy) a chalcogen alloy's exponent is sought again beside it. Components
are placed by lattice topology only: metals and their defects on metal
sites, chalcogens on chalcogen sites ("lockdown").
Without a material a free Gaussian mixture is fitted per sublattice, its
size chosen by BIC (:mod:`.free_mixture`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..materials import ATOMIC_NUMBER, CHALCOGENS, Material
from .result import EMPTY, SpeciesFit
from .species_em import em_fit, log_components

_GAMMAS = np.round(np.arange(1.3, 2.41, 0.1), 2)
#: Exponents tried for the metal contents alone (:func:`fit_species_physics`), then refined by 0.1.
_METAL_GAMMAS = np.round(np.arange(1.0, 2.41, 0.2), 2)
#: Share of each sublattice's sites its stated contents must hold in a fit (the perfect majority).
MAJORITY: float = 0.5
#: Sites per sublattice used to choose gamma (the final fit uses all).
_SEARCH_SITES = 3000
_PRIOR_MAIN = 0.9


def candidates(material: Material, sublattice: str) -> list[tuple[str, tuple[str, ...], float]]:
    """Candidate contents of a site: (label, elements, prior weight).

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> [c[0] for c in candidates(parse_material("MoS2"), "M")]
    ['empty', 'Mo', 'W', 'S2']
    >>> [c[0] for c in candidates(parse_material("MoS2"), "X")]
    ['empty', 'S', 'Se', 'S2', 'SSe', 'Se2', 'Mo']
    >>> [c[0] for c in candidates(parse_material("MoS2"), "X1T")]  # single columns of a 1T domain
    ['empty', 'S', 'Se', 'Mo']
    """
    from ..simulate.defects import default_dopant, default_substituent

    out: list[tuple[str, tuple[str, ...], float]] = [(EMPTY, (), 0.0)]
    if sublattice in ("M", "M1T"):
        metals = dict(material.metals)
        metals.setdefault(default_dopant(material), 0.0)
        for atom in material.dopants:  # foreign metals the user expects (MoS2+W, MoS2+V)
            if atom not in CHALCOGENS:
                metals.setdefault(atom, 0.0)
        out += [(el, (el,), frac) for el, frac in metals.items()]
        x = material.main_chalcogen
        out.append((_label((x, x)), (x, x), 0.0))
    elif sublattice == "X1T":
        chalc = dict(material.chalcogens)
        for extra in (default_substituent(material), *(e for e in material.dopants if e in CHALCOGENS)):
            chalc.setdefault(extra, 0.0)
        out += [(el, (el,), frac) for el, frac in sorted(chalc.items(), key=lambda kv: ATOMIC_NUMBER[kv[0]])]
        out.append((material.main_metal, (material.main_metal,), 0.0))
    else:
        chalc = dict(material.chalcogens)
        chalc.setdefault(default_substituent(material), 0.0)
        for atom in material.dopants:  # foreign chalcogens the user expects (MoS2+Te)
            if atom in CHALCOGENS:
                chalc.setdefault(atom, 0.0)
        els = sorted(chalc, key=ATOMIC_NUMBER.__getitem__)
        out += [(el, (el,), 0.0) for el in els]
        for a, b in itertools.combinations_with_replacement(els, 2):
            if material.janus:
                prior = 1.0 if a != b and chalc[a] > 0 and chalc[b] > 0 else 0.0
            else:
                prior = chalc[a] * chalc[b] * (1 if a == b else 2)
            out.append((_label((a, b)), (a, b), prior))
        out.append((material.main_metal, (material.main_metal,), 0.0))
    return out


def host_labels(material: Material, sublattice: str) -> set[str]:
    """Labels of the host's own contents on a sublattice: the :func:`candidates` with a prior.

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> sorted(host_labels(parse_material("MoS2"), "M")), sorted(host_labels(parse_material("Janus-MoSSe"), "X"))
    (['Mo'], ['SSe'])
    """
    return {label for label, _, prior in candidates(material, sublattice) if prior > 0}


def components(cands: list[tuple[str, tuple[str, ...], float]]) -> tuple[list[tuple[str, tuple[str, ...], float]],
                                                                       np.ndarray]:
    """The mixture's components: a pair of two different chalcogens is two, one per order.

    Which atom of an 'SSe' column the beam meets first changes its HAADF cross-section by 5-40 %
    (:func:`~napari_stem_defects.simulate.defects.ordered_content`), and a substituted atom sits in
    either layer, so each order is a component of its own under the same label; the elements keep
    the order (first: the beam's exit side). Returns the components and each one's share of its
    candidate's odds: 0.5 for each order of a rare pair, else 1 (a stated pair's prior is split in
    half instead).

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> comps, share = components(candidates(parse_material("Janus-MoSSe"), "X"))
    >>> [(c[0], "".join(c[1]), c[2]) for c in comps if c[0] == "SSe"], share.tolist().count(0.5)
    ([('SSe', 'SSe', 0.5), ('SSe', 'SeS', 0.5)], 0)
    >>> comps, share = components(candidates(parse_material("MoS2"), "X"))
    >>> [("".join(c[1]), float(f)) for c, f in zip(comps, share) if c[0] == "SSe"]
    [('SSe', 0.5), ('SeS', 0.5)]
    """
    out, share = [], []
    for label, elements, prior in cands:
        if len(elements) == 2 and elements[0] != elements[1] and all(e in CHALCOGENS for e in elements):
            out += [(label, elements, prior / 2), (label, elements[::-1], prior / 2)]
            share += [1.0, 1.0] if prior > 0 else [0.5, 0.5]
        else:
            out.append((label, elements, prior))
            share.append(1.0)
    return out, np.array(share)


def _label(elements: tuple[str, ...]) -> str:
    from ..simulate.defects import species_string

    return species_string(np.array([ATOMIC_NUMBER[e] for e in elements]))


def _z_sum(elements: tuple[str, ...], gamma: float) -> float:
    return float(sum(ATOMIC_NUMBER[e] ** gamma for e in elements))


def _stated_odds(cands, material: Material, sublattice: str) -> np.ndarray:
    """Odds of each rare candidate from the stated composition (``composition.stated_type_weights``).

    A content holding a foreign atom the user names (``MoS2+V``: V on a metal site) weighs
    ``dopant``'s odds, the antisite it resembles (an S2 pair there) ``antisite``'s; others 1.
    """
    from ..composition import stated_type_weights

    weights = stated_type_weights(material, "M" if sublattice.startswith("M") else "X")
    odds = np.ones(len(cands))
    if not weights:
        return odds
    for k, (_, elements, prior) in enumerate(cands):
        if prior > 0 or not elements:
            continue
        if any(e in material.dopants for e in elements):
            odds[k] = weights["dopant"]
        elif all(e in CHALCOGENS for e in elements) != sublattice.startswith("X"):
            odds[k] = weights["antisite"]
    return odds


def _prior_weights(cands, odds: np.ndarray | None = None) -> np.ndarray:
    """Mixture weights to start from: the host's contents hold :data:`_PRIOR_MAIN`, the rare ones share the rest
    (in proportion to ``odds``, default equally)."""
    prior = np.array([c[2] for c in cands], float)
    rare = (prior == 0) * (np.ones(len(cands)) if odds is None else np.asarray(odds, float))
    w = _PRIOR_MAIN * prior / prior.sum() + (1 - _PRIOR_MAIN) * rare / max(rare.sum(), 1e-12)
    return w / w.sum()


def fit_species_physics(
    intensities: dict[str, np.ndarray],
    material: Material,
    neighbours: dict[str, np.ndarray] | None = None,
    n_iter: int = 40,
    microscope: Any = None,
) -> dict[str, SpeciesFit]:
    """Fit physics-constrained mixtures to the metal ('M') and chalcogen ('X') site intensities.

    The mean of component k at site i is ``scale_k * level_k + crosstalk *
    neighbours_i``: the expected Z-contrast of the column plus the share of
    its nearest neighbours' signal that probe tails spread into its disc.
    ``scale_k`` is the metal scale for a content of metal atoms and the
    chalcogen scale otherwise, each fitted on the image (self-calibration on
    the perfect majority of both sublattices): at 60 kV and low detector
    angles a W atom scatters like an Se2 pair, where ``sum Z**gamma`` puts it
    1.4-3.2 times above (exponents 1.3-2.4), and one shared scale then misread
    the S2 / S+Se / Se2 columns of a WSSe alloy one rung up.

    Parameters
    ----------
    intensities : dict
        Arrays of background-corrected integrated intensities per group: 'M', 'X' (X2 columns)
        and 'X1T' (single-chalcogen columns of 1T domains), as present.
    material : Material
        Host material (sets candidate species and their prior weights).
    neighbours : dict, optional
        'M' and 'X' arrays: summed intensity of each site's nearest neighbours
        (the other sublattice). Without it crosstalk is ignored.
    n_iter : int
        EM iterations per trial Z exponent.
    microscope : MicroscopeSettings, optional
        The image's beam and detector. When given, the levels come from the multislice-calibrated
        table at those settings (:func:`~napari_stem_defects.simulate.cross_sections.column_cross_section`:
        at 60 kV with a 50 mrad inner angle one S atom scatters 0.36 times an S2 pair, where
        ``sum Z**gamma`` says 0.5 at every exponent); the table competes with the Z exponents on the same
        terms (the stated contents must hold the majority, then the likelier wins), so an image
        unlike the table keeps a Z-power fit. The fit's ``gamma`` is then the exponent whose
        levels come closest to the table's.

    Returns
    -------
    dict of str to SpeciesFit
        For display each fit's means are taken at the median neighbour sum.
    """
    subs = [s for s in intensities if len(intensities[s]) > 0]
    x = {s: np.asarray(intensities[s], float) for s in subs}
    nb = {s: np.zeros_like(x[s]) if neighbours is None else np.asarray(neighbours[s], float) for s in subs}
    expanded = {s: components(candidates(material, s)) for s in subs}
    cands = {s: expanded[s][0] for s in subs}
    odds = {s: _stated_odds(cands[s], material, s) * expanded[s][1] for s in subs}
    prior = {s: _prior_weights(cands[s], odds[s]) for s in subs}
    # Choose gamma on a subsample, then refine around it and fit all sites.
    rng = np.random.default_rng(0)
    pick = {s: rng.permutation(len(x[s]))[:_SEARCH_SITES] for s in subs}
    xs = {s: x[s][pick[s]] for s in subs}
    nbs = {s: nb[s][pick[s]] for s in subs}

    main = {s: np.array([c[2] > 0 for c in cands[s]]) for s in subs}
    metal = {s: _metal_kind(cands[s]) for s in subs}

    unit_z = ATOMIC_NUMBER[material.main_metal]

    def levels_at(g: float, g_metal: float | None = None) -> dict[str, np.ndarray]:
        """Levels with exponent ``g``, metal contents with ``g_metal`` where given; those are put on the
        chalcogens' footing at the main metal (``Z**g`` there), so that the two kinds' scales stay
        comparable however far the exponents part (:func:`~.species_em.solve_scales` holds them within a
        ratio)."""
        gm = g if g_metal is None else g_metal
        unit = unit_z ** g / unit_z ** gm
        return {s: np.array([_z_sum(c[1], gm) * unit if k else _z_sum(c[1], g) for c, k in zip(cands[s], metal[s])])
                for s in subs}

    scores: dict[tuple, tuple[int, float]] = {}

    def score(g: float, g_metal: float | None = None) -> tuple[int, float]:
        """(how many sublattices' stated contents hold the majority in about their stated shares,
        log-likelihood). Counted per sublattice: a metal alloy stated with wrong shares must not leave
        its chalcogen ladder unguarded."""
        key = (round(float(g), 2), None if g_metal is None else round(float(g_metal), 2))
        if key not in scores:
            loglik, params = em_fit(xs, nbs, levels_at(g, g_metal), prior, n_iter // 2, odds, metal)
            held = sum(_stated_shares_held(cands[s], params[3][s]) for s in subs if main[s].any())
            scores[key] = (held, loglik)
        return scores[key]

    def search(grid: np.ndarray, step: float, fit) -> float:
        """The best exponent on ``grid``, then refined by ``step`` either way within its range."""
        coarse = max(grid, key=fit)
        near = [round(coarse + d, 2) for d in (-step, step) if grid[0] <= coarse + d <= grid[-1]]
        return max([coarse, *near], key=fit)

    # self-calibration on the perfect majority: of the exponents whose fit gives the stated contents most
    # sites, the likeliest (a broad main peak must not turn into a rare content's population)
    gamma = search(_GAMMAS, 0.05, score)
    best = score(gamma)
    levels = levels_at(gamma)
    # the metals' own exponent, where it explains the image clearly better (a metal alloy at 60 kV and low
    # angles: W scatters 1.9 times Mo, Z**1.1, while the chalcogen columns follow Z**1.6). Where a chalcogen
    # alloy's ladder (S2 / S+Se / Se2) fixes the chalcogens' exponent, it is then sought again beside the
    # metals' own, since the metals pulled the joint search: in a metal alloy, or where the metals' own
    # exponent is clearly likelier (by more than log N). Not otherwise: rare contents alone would place the
    # exponents (a stated V, alike to an S2 pair, was moved off its population; lone Se in MoSe2 shifted)
    def n_stated(of_metal: bool) -> int:
        """The most stated contents of that kind (metal or chalcogen) on one sublattice."""
        return max(len({cands[s][k][0] for k in np.flatnonzero(main[s] & (metal[s] == of_metal))}) for s in subs)

    g_metal = search(_METAL_GAMMAS, 0.1, lambda g: score(gamma, g))
    cost = np.log(sum(len(v) for v in xs.values()))
    held, loglik = score(gamma, g_metal)
    clear = (held, loglik - cost) > best
    g_chalc = gamma
    if n_stated(False) > 1 and (n_stated(True) > 1 or clear) and abs(g_metal - gamma) > 0.15:
        g_chalc = search(_GAMMAS, 0.05, lambda g: score(g, g_metal))
    own = score(g_chalc, g_metal)
    adopted = best
    if (own[0], own[1] - cost) > best:  # the likelihood less the price of the metals' own exponent
        gamma, levels = g_chalc, levels_at(g_chalc, g_metal)
        adopted = (own[0], own[1] - cost)
    if microscope is not None:
        table = {s: _table_levels(cands[s], microscope) for s in subs}
        loglik, params = em_fit(xs, nbs, table, prior, n_iter // 2, odds, metal)
        with_host = sum(main[s].any() for s in subs)
        if sum(_majority_held(cands[s], params[3][s]) for s in subs if main[s].any()) == with_host \
                and (with_host, loglik) >= adopted:
            gamma, levels = _closest_exponent(cands, table), table
    _, (scale, cross, sigma, weights) = _final_fit(x, nb, levels, prior, n_iter, odds, metal, cands, main)
    out = {}
    for s in subs:
        k = len(levels[s])
        shift = cross * float(np.median(nb[s])) if len(nb[s]) else 0.0
        out[s] = SpeciesFit(s, [c[0] for c in cands[s]], scale[s] * levels[s] + shift, np.full(k, sigma[s]),
                            weights[s], x[s], gamma,
                            site_means=scale[s][None, :] * levels[s][None, :] + cross * nb[s][:, None])
    return out


def _final_fit(x, nb, levels, prior, n_iter, odds, metal, cands, main) -> tuple[float, tuple]:
    """The fit of all sites: from the usual start and, on a metal alloy's sublattice, with the metal scale
    started so that the median column is each stated metal in turn; of these, the one giving most
    sublattices their stated shares, then the likeliest.

    From the usual start (the median column at the stated metals' mean level) a Mo-rich sample stated
    as Mo0.5W0.5 can converge with its Mo columns read as W; started with the median on Mo it explains
    the image better, W columns included. (A chalcogen alloy's ladder is not restarted: its rungs
    are evenly spaced, and a fit one rung off is what the stated shares guard against.)
    """
    def key(fit: tuple[float, tuple]) -> tuple[int, float]:
        held = sum(_stated_shares_held(cands[s], fit[1][3][s]) for s in x if main[s].any())
        return held, fit[0]

    best = em_fit(x, nb, levels, prior, n_iter, odds, metal)
    for s in x:
        stated_metals = np.flatnonzero(main[s] & metal[s])
        if len({cands[s][k][0] for k in stated_metals}) < 2 or not len(x[s]):
            continue
        median = float(np.median(x[s]))
        for k in stated_metals[levels[s][stated_metals] > 0]:
            best = max(best, em_fit(x, nb, levels, prior, n_iter, odds, metal, median / levels[s][k]), key=key)
    return best


def _majority_held(cands, weights: np.ndarray) -> bool:
    """Whether a fit gives the stated contents of a sublattice at least :data:`MAJORITY` of its sites."""
    return float(weights[np.array([c[2] > 0 for c in cands])].sum()) >= MAJORITY


def _stated_shares_held(cands, weights: np.ndarray) -> bool:
    """Whether a fit gives the stated contents of a sublattice the majority (:data:`MAJORITY`), each of them
    at least a third of its stated share among them.

    The second condition is for alloys: an S2 / S+Se / Se2 ladder fits one rung off as S / S2 / S+Se at a
    lower exponent (the ratios match), with the stated Se2 empty and a third of the columns a lone S.

    Examples
    --------
    >>> cands = [("S", ("S",), 0.0), ("S2", ("S", "S"), 0.25), ("SSe", ("S", "Se"), 0.25),
    ...          ("SSe", ("Se", "S"), 0.25), ("Se2", ("Se", "Se"), 0.25)]
    >>> _stated_shares_held(cands, np.array([0.02, 0.25, 0.3, 0.2, 0.23]))
    True
    >>> _stated_shares_held(cands, np.array([0.3, 0.43, 0.14, 0.13, 0.0]))   # one rung off
    False
    """
    if not _majority_held(cands, weights):
        return False
    stated = np.array([c[2] > 0 for c in cands])
    shares, fitted = {}, {}
    for (label, _, prior), w, main in zip(cands, weights, stated):
        if main:
            shares[label] = shares.get(label, 0.0) + prior
            fitted[label] = fitted.get(label, 0.0) + float(w)
    total_share, total_fit = sum(shares.values()), sum(fitted.values())
    return all(fitted[k] / total_fit >= shares[k] / total_share / 3 for k in shares)


def _table_levels(cands, microscope: Any) -> np.ndarray:
    """Each candidate's cross-section at ``microscope`` from the multislice-calibrated table."""
    from ..simulate.cross_sections import column_cross_section
    from ..simulate.defects import elements_content

    return np.array([column_cross_section(elements_content(elements), microscope) if elements else 0.0
                     for _, elements, _ in cands])


def _closest_exponent(cands: dict[str, list], table: dict[str, np.ndarray]) -> float:
    """The Z exponent whose levels, up to one scale, come closest (in log) to the table's."""
    def misfit(g: float) -> float:
        a = np.concatenate([table[s] for s in cands])
        b = np.concatenate([[_z_sum(c[1], g) for c in cands[s]] for s in cands])
        ok = (a > 0) & (b > 0)
        r = np.log(a[ok]) - np.log(b[ok])
        return float(((r - r.mean()) ** 2).sum())

    return float(min(np.round(np.arange(1.0, 2.51, 0.01), 2), key=misfit))


def _metal_kind(cands) -> np.ndarray:
    """Which components hold metal atoms (a host metal, a dopant, a metal antisite); the others hold
    chalcogens or nothing."""
    return np.array([bool(c[1]) and not all(e in CHALCOGENS for e in c[1]) for c in cands])


def species_posterior(fit: SpeciesFit, intensities: np.ndarray) -> np.ndarray:
    """Probability of each species (columns in ``fit.species`` order) for every site; shape (N, L).

    Uses the per-site means of a physics fit (which include each site's
    crosstalk) when ``intensities`` are the fitted ones, else the fit's means.
    Components of one species (a mixed pair's two orders) add up.
    """
    x = np.asarray(intensities, float)
    site_means = fit.site_means
    if site_means is not None and site_means.shape[0] == len(x):
        lc = log_components(x, site_means, fit.sigmas[0], fit.weights)
        lc -= lc.max(axis=1, keepdims=True)
        post = np.exp(lc)
        post /= post.sum(axis=1, keepdims=True)
    else:
        post = fit.posterior(x)
    return fit.per_species(post)


def assign_species(fit: SpeciesFit, intensities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most probable species of each site and its posterior probability."""
    post = species_posterior(fit, intensities)
    best = post.argmax(axis=1)
    return np.asarray(fit.species, dtype=object)[best], post[np.arange(len(best)), best]
