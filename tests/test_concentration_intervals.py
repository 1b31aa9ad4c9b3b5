"""95 % intervals of defect concentrations: exact in the Poisson limit, right coverage on simulated counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from napari_stem_defects.cells.geometry import cell_area_A2
from napari_stem_defects.cells.statistics import A2_TO_CM2, defect_statistics
from napari_stem_defects.cells.uncertainty import (
    class_probabilities,
    count_moments,
    pooled_concentration,
    rate_interval,
)
from napari_stem_defects.materials import parse_material


@pytest.mark.parametrize("count", [0, 1, 7, 40, 1000])
def test_certain_labels_give_the_jeffreys_poisson_interval(count):
    lo, hi = rate_interval(count)
    expected = stats.gamma(count + 0.5).ppf([0.025, 0.975])
    np.testing.assert_allclose([lo, hi], expected, rtol=1e-9)


def _coverage(rng, mu, n_rep=4000):
    counts = rng.poisson(mu, n_rep)
    lo, hi = rate_interval(counts)
    return float(np.mean((lo <= mu) & (mu <= hi)))


@pytest.mark.parametrize("mu", [2.0, 15.0, 200.0])
def test_poisson_counts_are_covered_95_percent(mu):
    rng = np.random.default_rng(7)
    assert 0.93 <= _coverage(rng, mu) <= 0.985


def _uncertain_cells(rng, n_cells, share_unsure):
    """Cells with calibrated probabilities of one defect class: the label is drawn from its probability."""
    unsure = rng.random(n_cells) < share_unsure
    p = np.where(unsure, rng.uniform(0.15, 0.85, n_cells), rng.beta(0.2, 400.0, n_cells))
    label = rng.random(n_cells) < p
    return p, label


def _lookalike_cells(rng, mu, share):
    """A Poisson number of true defects, a share of them looking half perfect, and as many perfect cells
    on average looking half defective (the classifier's errors balance on average)."""
    n_true = rng.poisson(mu)
    p = np.ones(n_true)
    k = rng.binomial(n_true, share)
    p[:k] = 1 - rng.uniform(0.2, 0.5, k)
    return np.r_[p, rng.uniform(0.2, 0.5, rng.poisson(share * mu)), np.zeros(2000)]


@pytest.mark.parametrize("world", ["calibrated", "lookalikes"])
def test_intervals_cover_the_true_concentration_at_least_95_percent(world):
    """Truth: the expected number of defects in the area. Counting plus classification covers it in at least
    95 % of simulated images (conservatively: the probabilities' own spread is partly inside the Poisson
    term); the Poisson interval of the argmax count alone misses it more often than 5 %."""
    rng = np.random.default_rng(11)
    n_rep, hits, hits_argmax = (400 if world == "calibrated" else 1500), 0, 0
    if world == "calibrated":
        n_cells, share = 20000, 0.001
        mu_true = n_cells * (share * 0.5 + (1 - share) * 0.2 / 400.2)
    else:
        mu_true, share = 5.0, 0.8
    for _ in range(n_rep):
        p = _uncertain_cells(rng, n_cells, share)[0] if world == "calibrated" else _lookalike_cells(rng, mu_true,
                                                                                                  share)
        cells = pd.DataFrame({"class": np.where(p > 0.5, "V_M", "perfect"), "p_V_M": p, "p_perfect": 1 - p})
        mean, var = count_moments(cells, ["perfect", "V_M"])
        lo, hi = rate_interval(mean["V_M"], var["V_M"])
        hits += lo <= mu_true <= hi
        lo, hi = rate_interval((p > 0.5).sum())
        hits_argmax += lo <= mu_true <= hi
    assert hits / n_rep >= 0.95
    assert hits_argmax / n_rep < 0.94
    # and the classification term widens the interval over the Poisson one of the same expected count
    assert np.diff(rate_interval(10.0, 4.0)) > np.diff(rate_interval(10.0))


def test_interval_matches_a_parametric_bootstrap_over_the_class_probabilities():
    """The moment-matched Gamma against drawing every cell's class and then the Poisson posterior."""
    rng = np.random.default_rng(3)
    p, _ = _uncertain_cells(rng, 3000, 0.03)
    lo, hi = rate_interval(p.sum(), (p * (1 - p)).sum())
    draws = (rng.random((4000, p.size)) < p).sum(axis=1)
    posterior = rng.gamma(draws + 0.5)
    boot = np.quantile(posterior, [0.025, 0.975])
    np.testing.assert_allclose([lo, hi], boot, rtol=0.04)


def test_class_probabilities_trust_verified_cells_and_fill_missing_rows():
    cells = pd.DataFrame({"class": ["perfect", "V_M", "V_M"], "p_perfect": [0.7, 0.6, np.nan],
                          "p_V_M": [0.3, 0.4, np.nan], "verified": [False, True, False]})
    prob = class_probabilities(cells, ["perfect", "V_M"])
    np.testing.assert_allclose(prob, [[0.7, 0.3], [0.0, 1.0], [0.0, 1.0]])
    mean, var = count_moments(cells, ["perfect", "V_M"])
    assert mean == pytest.approx({"perfect": 0.7, "V_M": 2.3})
    assert var["V_M"] == pytest.approx(0.21)


def test_defect_statistics_carry_the_intervals_per_cm2():
    p = np.r_[np.full(95, 0.01), [0.9, 0.8, 0.6, 0.99, 0.5]]
    cells = pd.DataFrame({"class": np.where(p >= 0.5, "V_X1", "perfect"), "complete": True, "m_species": "Mo",
                          "x_species": np.where(p >= 0.5, "S", "S2"), "p_V_X1": p, "p_perfect": 1 - p})
    for c in ("V_X2", "V_M", "V_X1+V_M", "V_X2+V_M", "M_X", "X_M", "dopant_M", "sub_X", "adatom"):
        cells[f"p_{c}"] = 0.0
    stats_ = defect_statistics(cells, "MoS2", 0.12)
    area_cm2 = 100 * cell_area_A2(parse_material("MoS2").a) * A2_TO_CM2
    assert stats_.expected_count["V_X1"] == pytest.approx(p.sum())
    lo, hi = rate_interval(p.sum(), (p * (1 - p)).sum())
    np.testing.assert_allclose(stats_.concentration_ci95_cm2["V_X1"], [lo / area_cm2, hi / area_cm2], rtol=1e-9)
    assert stats_.concentration_ci95_cm2["V_X1"][0] < stats_.concentration_cm2["V_X1"] < \
        stats_.concentration_ci95_cm2["V_X1"][1]
    table = stats_.table().set_index("class")
    assert table.loc["V_X1", "concentration_hi95_cm2"] == pytest.approx(hi / area_cm2)
    json.dumps(stats_.as_dict())  # plain values for summary.json
    uncalibrated = defect_statistics(cells, "MoS2", None)
    assert np.isnan(uncalibrated.concentration_ci95_cm2["V_X1"]).all()
    assert uncalibrated.count_ci95["V_X1"] == pytest.approx([lo, hi])


def test_pooled_concentration_adds_counts_and_areas():
    c, lo, hi = pooled_concentration([3.0, 5.0], [1.0, 0.5], [2e-12, 2e-12])
    assert c == pytest.approx(8.0 / 4e-12)
    np.testing.assert_allclose([lo, hi], np.array(rate_interval(8.0, 1.5)) / 4e-12)
    assert np.isnan(pooled_concentration([1.0], [0.0], [0.0])[0])
