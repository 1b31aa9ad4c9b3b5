"""The neighbour-corrected intensity change: shared changes cancel, a column's own change stays.

Series with a known truth: a honeycomb whose frames change gain and are
misregistered by a smooth field (shared by neighbours), with a few planted
events, and the simulated MoS2 series of the dynamics pipeline at 1e6 e/Å^2.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_stem_defects.dynamics.corrected_change import (
    TREND_NN,
    corrected_steps,
    neighbour_corrected_change,
    relative_steps,
)
from napari_stem_defects.dynamics.instability import intensity_change, roc_auc
from napari_stem_defects.dynamics.pipeline import analyze_stack
from napari_stem_defects.simulate.stack import simulate_stack

NN = 10.0


def _honeycomb(shape=(160, 160)) -> tuple[np.ndarray, np.ndarray]:
    """Sites (y, x) of a honeycomb with metal-chalcogen distance NN, and which are metal."""
    a = NN * np.sqrt(3.0)
    a1, a2 = np.array([0.0, a]), np.array([-a * np.sin(np.pi / 3), a * np.cos(np.pi / 3)])
    pts, metal = [], []
    for i in range(-15, 16):
        for j in range(-15, 16):
            m = np.array([4.0, 3.0]) + i * a1 + j * a2
            for p, is_m in ((m, True), (m + (a1 + a2) / 3, False)):
                if 12 <= p[0] <= shape[0] - 12 and 12 <= p[1] <= shape[1] - 12:
                    pts.append(p)
                    metal.append(is_m)
    return np.array(pts), np.array(metal)


def _disturbed_series(seed=0, n_frames=8, shape=(160, 160), peak=400.0):
    """Poisson frames with a gain drift and a smooth per-frame misregistration; 8 planted events."""
    rng = np.random.default_rng(seed)
    pos, metal = _honeycomb(shape)
    n = len(pos)
    amp = np.where(metal, 1.0, 0.45)[None].repeat(n_frames, 0)
    changed = rng.choice(n, 8, replace=False)
    for k, site in enumerate(changed):
        frame = 1 + k % (n_frames - 1)
        amp[frame:, site] *= 0.0 if metal[site] else 0.5  # a metal leaves, a chalcogen loses an atom
    gains = 1.0 + 0.15 * rng.normal(size=n_frames)  # beam current, detector gain
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    frames = []
    for t in range(n_frames):
        # a smooth displacement field (up to ~1 px): what a residual registration error looks like
        phase = rng.uniform(0, 2 * np.pi, 2)
        shift = 1.0 * np.stack([np.sin(pos[:, 1] / 40.0 + phase[0]), np.cos(pos[:, 0] / 35.0 + phase[1])], axis=1)
        img = np.full(shape, 5.0)
        for (y, x), a in zip(pos + shift, amp[t]):
            if a > 0:
                img += gains[t] * peak * a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.8 ** 2))
        frames.append(rng.poisson(img).astype(np.float32))
    labels = np.zeros(n, bool)
    labels[changed] = True
    return np.stack(frames), pos, metal, labels


@pytest.fixture(scope="module")
def disturbed():
    return _disturbed_series()


def test_shared_changes_cancel_and_the_planted_events_rank_first(disturbed):
    stack, pos, metal, changed = disturbed
    radius = 0.3 * NN
    corrected = neighbour_corrected_change(stack, pos, radius, TREND_NN * NN, groups=metal)
    _, plain = intensity_change(stack, pos, radius)
    auc_corrected, auc_plain = roc_auc(np.nanmax(corrected, axis=0), changed), roc_auc(plain, changed)
    assert auc_corrected >= 0.98, (auc_corrected, auc_plain)
    assert auc_corrected >= auc_plain + 0.05, (auc_corrected, auc_plain)
    # the typical step is 1, and every planted event is among the largest scores
    assert np.nanmedian(corrected) == pytest.approx(1.0)
    top = np.argsort(-np.nanmax(corrected, axis=0))[:12]
    assert set(np.flatnonzero(changed)) <= set(top)


def test_groups_keep_one_sublattice_s_change_out_of_the_other(disturbed):
    stack, pos, metal, _ = disturbed
    means = np.stack([np.ones(len(pos)), np.where(metal, 0.8, 1.0)])  # every metal column dims by 20 %
    with_groups = corrected_steps(means, pos, TREND_NN * NN, groups=metal)
    assert np.allclose(with_groups, 0.0)
    without = corrected_steps(means, pos, TREND_NN * NN)
    assert without.max() > 0.05  # mixed neighbourhoods cannot tell a sublattice's shared change from events


def test_invalid_steps_stay_nan_and_a_lone_site_keeps_its_step():
    pos = np.array([[0.0, 0.0], [0.0, 5.0], [0.0, 10.0], [100.0, 100.0]])
    means = np.array([[1.0, 1.0, 1.0, 2.0], [0.9, np.nan, 0.9, 1.0], [0.9, 0.9, 0.9, 1.0]])
    steps = corrected_steps(means, pos, 12.0)
    assert np.isnan(steps[:, 1]).all()  # its frame 1 is invalid: both steps touching it
    assert np.allclose(steps[:, [0, 2]], 0.0)  # they share their change
    assert steps[0, 3] == pytest.approx(1.0 / 1.0)  # no neighbour: its relative step (-1 / median 1.0) stays
    assert np.allclose(relative_steps(means)[:, 3], [-1.0, 0.0])


@pytest.mark.parametrize("bad, message", [
    (lambda m, p: (m[:1], p), "T >= 2"),
    (lambda m, p: (m, p[:2]), "positions"),
])
def test_bad_input_is_a_value_error(bad, message):
    means, pos = np.ones((3, 4)), np.zeros((4, 2))
    with pytest.raises(ValueError, match=message):
        corrected_steps(*bad(means, pos), 5.0)
    with pytest.raises(ValueError, match="trend_radius_px"):
        corrected_steps(means, pos, 0.0)


def test_default_instability_of_a_simulated_series_beats_the_plain_intensity_change():
    twin = simulate_stack("MoS2", n_frames=12, shape=(256, 256), dose=1e6, seed=41)  # benchmarks use 200+
    result = analyze_stack(twin.frames, "MoS2", twin.pixel_size, classifier=None)
    table = result.site_table
    assert result.settings["encoder"] == "intensity" and result.settings["score"] == "corrected"
    assert np.allclose(table["instability"], table["corrected_change"], equal_nan=True)
    truth = twin.sites[twin.sites["frame"] == 0]
    dist, idx = cKDTree(truth[["y_ref", "x_ref"]].to_numpy(float)).query(table[["y_px", "x_px"]].to_numpy(float))
    changed = np.isin(truth["site_id"].to_numpy()[idx], list(twin.changed_sites)) & (dist < 0.4 * result.nn_px)
    assert changed.sum() >= 10
    auc_default = roc_auc(table["instability"].to_numpy(float), changed)
    auc_plain = roc_auc(table["intensity_change"].to_numpy(float), changed)
    assert auc_default >= 0.97 and auc_default > auc_plain + 0.02, (auc_default, auc_plain)
