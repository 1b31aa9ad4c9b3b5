"""Neighbour-corrected column amplitudes and the Z-contrast check of antisites (cells.z_contrast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_stem_defects.cells.column_amplitudes import column_amplitudes
from napari_stem_defects.cells.crops import prepare_image
from napari_stem_defects.cells.z_contrast import (
    antisite_evidence,
    applies,
    arbitrate,
    calibrate,
    refine_antisites,
)
from napari_stem_defects.simulate import CELL_CLASSES, ImagingParams, simulate_twin
from napari_stem_defects.training.cell_cnn import twin_cells


def _cells(twin):
    """Ground-truth metal and X2 positions and class names of the twin's complete cells."""
    m, x, labels = twin_cells(twin)
    return m, x, np.asarray(CELL_CLASSES)[labels]


def _inner(points, shape, margin):
    return np.all((points > margin) & (points < np.array(shape) - 1 - margin), axis=1)


@pytest.mark.parametrize("gamma", [1.45, 1.9])
def test_amplitudes_above_an_empty_site_follow_z_to_the_gamma(gamma):
    """Noise-free MoS2 with probe tails: (metal - hollow) / (X2 - hollow) amplitude is
    Z_Mo^g / (2 Z_S^g) within 6 %, whatever the exponent."""
    twin = simulate_twin("MoS2", (256, 256), 0.12, imaging=ImagingParams(dose=None, gamma=gamma), seed=11)
    m, x, cls = _cells(twin)
    nn = twin.nn_px
    prepared = prepare_image(twin.image, nn)
    amps, _ = column_amplitudes(prepared, np.concatenate([m, x, 2 * m - x]), nn)
    n = len(m)
    ok = _inner(m, prepared.shape, 2 * nn) & _inner(x, prepared.shape, 2 * nn) & (cls == "perfect")
    metal, x2, hollow = amps[:n][ok], amps[n:2 * n][ok], amps[2 * n:][ok]
    expected = 42**gamma / (2 * 16**gamma)
    measured = (np.median(metal) - np.median(hollow)) / (np.median(x2) - np.median(hollow))
    assert ok.sum() >= 50
    assert measured == pytest.approx(expected, rel=0.06)
    # the background the crops subtract is the floor between columns, which probe tails lift
    # above the true zero: an empty site is what the levels are measured from
    assert np.max(hollow) < np.min(x2)


def test_amplitudes_of_sites_outside_the_image_are_nan():
    img = np.zeros((30, 30))
    amps, _ = column_amplitudes(img, np.array([[15.0, 15.0], [-5.0, 10.0], [10.0, 40.0]]), nn_px=8.0)
    assert amps[0] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(amps[1:]).all()
    assert column_amplitudes(img, np.zeros((0, 2)), 8.0)[0].shape == (0,)


@pytest.mark.parametrize("gamma", [1.5, 1.7, 1.95])
def test_calibration_finds_the_z_exponent_of_a_twin(gamma):
    twin = simulate_twin("MoS2", (192, 192), 0.12, imaging=ImagingParams(dose=1e6, gamma=gamma), seed=21)
    m, x, cls = _cells(twin)
    nn = twin.nn_px
    prepared = prepare_image(twin.image, nn)
    amps, _ = column_amplitudes(prepared, np.concatenate([m, x, 2 * m - x]), nn)
    n = len(m)
    perfect = cls == "perfect"
    cal = calibrate(amps[:n][perfect], amps[n:2 * n][perfect], amps[2 * n:], "MoS2")
    assert cal is not None
    assert cal.gamma == pytest.approx(gamma, abs=0.07)


def test_calibration_refuses_too_few_cells_and_implausible_exponents():
    rng = np.random.default_rng(1)
    assert calibrate(np.ones(5), np.ones(5), np.zeros(5), "MoS2") is None
    # X2 columns as bright as the metal: an exponent far below any HAADF detector's
    assert calibrate(1 + rng.normal(0, 0.01, 100), 1 + rng.normal(0, 0.01, 100), np.zeros(100), "MoS2") is None
    # everything at the empty level
    assert calibrate(np.zeros(100), np.zeros(100), np.zeros(100), "MoS2") is None


def test_applies_only_to_hosts_with_one_metal_and_one_chalcogen_offering_both_classes():
    assert applies("MoS2") and applies("WSe2") and applies("MoTe2")
    assert not applies("MoWSSe") and not applies("MoSSe") and not applies("MoWS2")


def test_z_contrast_tells_metal_antisites_from_substitutions_on_a_twin():
    """MoS2 at an exponent of 1.8 and 1e6 e/A^2, with 6 % M_X and 6 % sub_X (S+Se): the
    log odds point the right way for at least 90 % of those columns (ground-truth positions)."""
    twin = simulate_twin("MoS2", (384, 384), 0.16, imaging=ImagingParams(dose=1e6, gamma=1.8), seed=31,
                         defects={"M_X": 0.06, "sub_X": 0.06}, substituent="Se")
    m, x, cls = _cells(twin)
    probs = np.zeros((len(m), len(CELL_CLASSES)), np.float32)
    probs[np.arange(len(m)), [CELL_CLASSES.index(c) for c in cls]] = 1.0  # calibrate on the true perfect cells
    log_odds, cal = antisite_evidence(probs, prepare_image(twin.image, twin.nn_px), m, x, twin.nn_px, "MoS2")
    assert cal is not None and cal.gamma == pytest.approx(1.8, abs=0.08)
    inner = _inner(x, twin.image.shape, 1.5 * twin.nn_px)
    mx, sx = inner & (cls == "M_X"), inner & (cls == "sub_X")
    assert mx.sum() >= 10 and sx.sum() >= 10
    assert (log_odds[mx] > 0).mean() >= 0.9
    assert (log_odds[sx] < 0).mean() >= 0.9


def test_arbitration_moves_only_the_antisite_and_substitution_shares():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(len(CELL_CLASSES)), size=50).astype(np.float32)
    probs[0, CELL_CLASSES.index("M_X")] = 0.0  # a class the CNN ruled out stays ruled out
    probs[0] /= probs[0].sum()
    log_odds = rng.normal(0, 3, size=50)
    out = arbitrate(probs, log_odds, weight=2.0)
    i_m, i_s = CELL_CLASSES.index("M_X"), CELL_CLASSES.index("sub_X")
    others = [k for k in range(len(CELL_CLASSES)) if k not in (i_m, i_s)]
    np.testing.assert_array_equal(out[:, others], probs[:, others])
    np.testing.assert_allclose(out[:, i_m] + out[:, i_s], probs[:, i_m] + probs[:, i_s], rtol=1e-5)
    assert out[0, i_m] == 0.0
    moved = np.log(out[1:, i_m] / out[1:, i_s]) - np.log(probs[1:, i_m] / probs[1:, i_s])
    np.testing.assert_allclose(moved, 2.0 * log_odds[1:], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(arbitrate(probs, log_odds, weight=0.0)[:, [i_m, i_s]].round(5),
                                  probs[:, [i_m, i_s]].round(5))


def test_alloys_and_uncalibrated_images_keep_the_cnn_probabilities():
    twin = simulate_twin("MoWSSe", (128, 128), 0.12, imaging=ImagingParams(dose=1e5), seed=41)
    m, x, _ = _cells(twin)
    probs = np.full((len(m), len(CELL_CLASSES)), 1.0 / len(CELL_CLASSES), np.float32)
    prepared = prepare_image(twin.image, twin.nn_px)
    out, cal = refine_antisites(probs, prepared, m, x, twin.nn_px, "MoWSSe")
    assert out is probs and cal is None
    # MoS2 cells of which none is called perfect: nothing to calibrate on
    out, cal = refine_antisites(probs, prepared, m, x, twin.nn_px, "MoS2")
    assert out is probs and cal is None


def test_classify_cells_changes_only_the_antisite_pair():
    from napari_stem_defects.cells.cnn import classify_cells

    twin = simulate_twin("MoS2", (256, 256), 0.16, imaging=ImagingParams(dose=1e5, gamma=1.7), seed=3_900_051,
                         defects={"M_X": 0.06, "sub_X": 0.06}, substituent="Se")
    m, x, _ = _cells(twin)
    with_check = classify_cells(twin.image, m, x, twin.nn_px, "MoS2")
    without = classify_cells(twin.image, m, x, twin.nn_px, "MoS2", z_contrast=False)
    i_m, i_s = CELL_CLASSES.index("M_X"), CELL_CLASSES.index("sub_X")
    others = [k for k in range(len(CELL_CLASSES)) if k not in (i_m, i_s)]
    np.testing.assert_array_equal(with_check[:, others], without[:, others])
    np.testing.assert_allclose(with_check.sum(axis=1), 1.0, atol=1e-4)
    assert not np.allclose(with_check[:, i_m], without[:, i_m])
    assert math.isfinite(float(with_check.sum()))
