"""The EM behind the physics-constrained species mixtures (:mod:`.species`).

Each component's mean is ``scale_kind * level + crosstalk * neighbours``: one scale for contents of metal
atoms, one for contents of chalcogens, a crosstalk shared by all sites, one sigma and free weights per
sublattice. Plain numpy; the models (candidate contents, levels, priors) live in :mod:`.species`.
"""

from __future__ import annotations

import numpy as np

#: Pseudo-count pulling each sublattice's weights towards its prior.
PSEUDO: float = 0.5


def em_fit(x: dict, nb: dict, levels: dict, prior: dict, n_iter: int, odds: dict | None = None,
           metal: dict | None = None, metal_scale: float | None = None) -> tuple[float, tuple]:
    """EM for means ``scale_kind * level + crosstalk * neighbours``, one sigma and free weights per sublattice.

    Metal and chalcogen contents each have a scale of their own (``metal``: per sublattice, which
    components hold metal atoms; default none, one scale): a heavy single atom and a light pair do not
    keep the ratio any one Z exponent gives (at 60 kV and low detector angles a W atom scatters like an
    Se2 pair; ``sum Z**gamma`` puts W 1.4-3.2 times above it), so each kind is calibrated on the
    sublattice where it is the majority, and an antisite takes its atoms' scale (Mo on an X2 column is
    measured against the metal sites' Mo). ``odds`` (per sublattice, per component) multiply each site's
    responsibilities on top of the fitted weights: the stated composition's say where intensities
    cannot choose. ``metal_scale`` starts the metal contents' scale there instead of at their host
    sublattice's median over the stated contents' mean level. Returns the log-likelihood and
    ``(scales, crosstalk, sigma, weights)``, ``scales`` per sublattice and component.
    """
    subs = list(levels)
    odds = {s: np.ones(len(levels[s])) if odds is None else np.asarray(odds[s], float) for s in subs}
    kind = {s: np.zeros(len(levels[s]), bool) if metal is None else np.asarray(metal[s], bool) for s in subs}
    w = {s: prior[s].copy() for s in subs}
    main = {s: float(prior[s] @ levels[s]) for s in subs}
    start = float(np.median([np.median(x[s]) / main[s] for s in subs if main[s] > 0]))
    start = start if np.isfinite(start) and start > 0 else 1.0
    scales = np.array([start, start])  # metal contents, chalcogen contents
    for k, of_kind in enumerate((True, False)):  # each kind starts from the sublattice it is the host of
        own = [np.median(x[s]) / main[s] for s in subs if main[s] > 0 and len(x[s])
               and bool(kind[s][prior[s].argmax()]) == of_kind]
        if own and np.isfinite(own[0]) and own[0] > 0:
            scales[k] = own[0]
    if metal_scale is not None:
        scales[0] = float(metal_scale)
    cross = 0.0

    def per_component(s: str) -> np.ndarray:
        return np.where(kind[s], scales[0], scales[1])

    sigma = {s: 0.15 * start * main[s] + 1e-12 for s in subs}
    for _ in range(n_iter):
        means = {s: per_component(s)[None, :] * levels[s][None, :] + cross * nb[s][:, None] for s in subs}
        resp = {s: responsibilities(x[s], means[s], sigma[s], w[s] * odds[s]) for s in subs}
        # weighted least squares for (metal scale, chalcogen scale, crosstalk) over all sites and components
        a = np.zeros((3, 3))
        rhs = np.zeros(3)
        for s in subs:
            r = resp[s] / sigma[s] ** 2
            lv = levels[s][None, :]
            regressors = [lv * kind[s][None, :], lv * ~kind[s][None, :], np.broadcast_to(nb[s][:, None], r.shape)]
            for i, ri in enumerate(regressors):
                rhs[i] += (r * ri * x[s][:, None]).sum()
                for j, rj in enumerate(regressors):
                    a[i, j] += (r * ri * rj).sum()
        scales, cross = solve_scales(a, rhs, scales)
        for s in subs:
            r = resp[s]
            w[s] = (r.sum(axis=0) + PSEUDO * prior[s]) / (len(x[s]) + PSEUDO)
            mu = per_component(s)[None, :] * levels[s][None, :] + cross * nb[s][:, None]
            var = float((r * (x[s][:, None] - mu) ** 2).sum() / max(len(x[s]), 1))
            floor = (0.01 * (per_component(s) * levels[s]).max()) ** 2
            sigma[s] = float(np.sqrt(max(var, floor)))
    loglik = 0.0
    for s in subs:
        mu = per_component(s)[None, :] * levels[s][None, :] + cross * nb[s][:, None]
        loglik += log_likelihood(x[s], mu, sigma[s], w[s])
    return loglik, ({s: per_component(s) for s in subs}, cross, sigma, w)


#: Largest ratio between the metal and the chalcogen contents' scales (either way round).
_SCALE_RATIO: float = 4.0


def solve_scales(a: np.ndarray, rhs: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, float]:
    """Solve the 3x3 normal equations for (metal scale, chalcogen scale, crosstalk).

    A kind no component holds (an all-zero row) takes the other's scale; crosstalk is limited to
    [0, 0.3] and the two scales to within :data:`_SCALE_RATIO` of each other.
    """
    used = np.diag(a) > 0
    idx = np.flatnonzero(used)
    sol = np.zeros(3)
    sub = a[np.ix_(idx, idx)]
    solved = len(idx) > 0 and np.linalg.det(sub) > 1e-12 * max(1.0, abs(sub).max()) ** len(idx)
    if solved:
        sol[idx] = np.linalg.solve(sub, rhs[idx])
    if not solved or not 0.0 <= sol[2] <= 0.3 or (sol[:2][used[:2]] <= 0).any():
        # the crosstalk clipped at the previous scales, then each scale given the rest
        sol[:2] = fallback
        sol[2] = float(np.clip((rhs[2] - a[2, :2] @ fallback) / a[2, 2], 0.0, 0.3)) if used[2] else 0.0
        for k in np.flatnonzero(used[:2]):
            value = (rhs[k] - a[k, 2] * sol[2] - a[k, 1 - k] * sol[1 - k]) / a[k, k]
            sol[k] = value if value > 0 else fallback[k]
    if not used[0]:
        sol[0] = sol[1]
    if not used[1]:
        sol[1] = sol[0]
    mid, half = np.sqrt(sol[0] * sol[1]), np.sqrt(_SCALE_RATIO)
    return np.clip(sol[:2], mid / half, mid * half).astype(float), float(sol[2])


def log_components(x: np.ndarray, means: np.ndarray, sigma: float, weights: np.ndarray) -> np.ndarray:
    """Log of each component's weighted Gaussian density at each site, shape (N, K); ``means`` per component
    or per site and component."""
    means = means if np.ndim(means) == 2 else np.asarray(means)[None, :]
    z = (x[:, None] - means) / sigma
    return np.log(np.maximum(weights, 1e-300))[None] - 0.5 * z**2 - np.log(sigma * np.sqrt(2 * np.pi))


def responsibilities(x: np.ndarray, means: np.ndarray, sigma: float, weights: np.ndarray) -> np.ndarray:
    """Each site's posterior over the components, shape (N, K)."""
    lc = log_components(x, means, sigma, weights)
    lc -= lc.max(axis=1, keepdims=True)
    p = np.exp(lc)
    return p / p.sum(axis=1, keepdims=True)


def log_likelihood(x: np.ndarray, means: np.ndarray, sigma: float, weights: np.ndarray) -> float:
    """Log-likelihood of the sites under the mixture."""
    lc = log_components(x, means, sigma, weights)
    top = lc.max(axis=1)
    return float((top + np.log(np.exp(lc - top[:, None]).sum(axis=1))).sum())
