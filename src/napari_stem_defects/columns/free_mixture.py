"""Species of the columns of a sublattice without a material: a free Gaussian mixture, its size chosen by BIC."""

from __future__ import annotations

import numpy as np

from .result import EMPTY, SpeciesFit


def fit_species_free(intensities: np.ndarray, sublattice: str, max_components: int = 4,
                     n_iter: int = 100) -> SpeciesFit:
    """Gaussian mixture with the number of components chosen by BIC (no material known).

    Components are named by sublattice and brightness ('M1' darkest); one
    whose mean is below a quarter of the brightest common component is
    called 'empty'.
    """
    x = np.asarray(intensities, float)
    best = None
    for k in range(1, max(1, min(max_components, len(x) // 10)) + 1):
        qs = np.quantile(x, (np.arange(k) + 0.5) / k)
        means, sig, w = qs.astype(float), np.full(k, x.std() / k + 1e-12), np.full(k, 1.0 / k)
        for _ in range(n_iter):
            r = _responsibilities_multi(x, means, sig, w)
            nk = r.sum(axis=0) + 1e-9
            w = nk / nk.sum()
            means = (r * x[:, None]).sum(axis=0) / nk
            sig = np.sqrt(np.maximum((r * (x[:, None] - means) ** 2).sum(axis=0) / nk, (0.01 * x.std()) ** 2 + 1e-24))
        ll = _loglik_multi(x, means, sig, w)
        bic = -2 * ll + (3 * k - 1) * np.log(len(x))
        if best is None or bic < best[0]:
            best = (bic, means, sig, w)
    _, means, sig, w = best
    order = np.argsort(means)
    means, sig, w = means[order], sig[order], w[order]
    labels = [f"{sublattice}{i + 1}" for i in range(len(means))]
    common = means[w >= 0.2 * w.max()].max()
    if len(means) > 1 and means[0] < 0.25 * common:
        labels[0] = EMPTY
    return SpeciesFit(sublattice, labels, means, sig, w, x)


def _responsibilities_multi(x, means, sig, w):
    lc = np.log(np.maximum(w, 1e-300))[None] - 0.5 * ((x[:, None] - means) / sig) ** 2 - np.log(sig)[None]
    lc -= lc.max(axis=1, keepdims=True)
    p = np.exp(lc)
    return p / p.sum(axis=1, keepdims=True)


def _loglik_multi(x, means, sig, w):
    lc = (np.log(np.maximum(w, 1e-300))[None] - 0.5 * ((x[:, None] - means) / sig) ** 2
          - np.log(sig * np.sqrt(2 * np.pi))[None])
    top = lc.max(axis=1)
    return float((top + np.log(np.exp(lc - top[:, None]).sum(axis=1))).sum())
