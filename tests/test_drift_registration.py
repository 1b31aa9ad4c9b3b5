"""Drift registration against the known drift of simulated image series."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects.dynamics.registration import register_stack
from napari_stem_defects.simulate import ImagingParams
from napari_stem_defects.simulate.stack import simulate_stack


def _site_errors(twin, reg) -> np.ndarray:
    """|found - true| displacement (px) at every column of frame 0, for all frames."""
    first = twin.sites[(twin.sites["frame"] == 0) & twin.sites["inside"]]
    ref = first[["y_ref", "x_ref"]].to_numpy(float)
    return np.stack([np.linalg.norm(reg.displacement(t, ref) - twin.displacement(t, ref), axis=1)
                     for t in range(twin.frames.shape[0])])


def test_rigid_drift_recovered_noise_free():
    twin = simulate_stack("MoS2", n_frames=5, shape=(192, 192), warp_px=0.0, drift_step_px=1.5,
                          imaging=ImagingParams(dose=None), seed=11)
    reg = register_stack(twin.frames, nonrigid=False)
    assert np.abs(twin.shifts).max() > 1.0  # the test means something
    np.testing.assert_allclose(reg.shifts, twin.shifts, atol=0.1)
    assert reg.shifts[0].tolist() == [0.0, 0.0]


def test_drift_larger_than_a_lattice_spacing_is_not_locked_to_the_lattice():
    # steps of a few px per frame add up to more than the 1.83 Å / 0.12 Å/px = 15 px spacing
    twin = simulate_stack("MoS2", n_frames=12, shape=(192, 192), warp_px=0.0, drift_step_px=3.5,
                          dose=1e6, seed=13)
    reg = register_stack(twin.frames, nonrigid=False)
    assert np.abs(twin.shifts).max() > 15.0
    np.testing.assert_allclose(reg.shifts, twin.shifts, atol=0.2)


def test_nonrigid_registration_follows_the_warp_at_realistic_dose():
    twin = simulate_stack("MoS2", n_frames=5, shape=(256, 256), warp_px=0.6, dose=1e5, seed=13)
    full = register_stack(twin.frames)
    rigid = register_stack(twin.frames, nonrigid=False)
    err_full, err_rigid = _site_errors(twin, full), _site_errors(twin, rigid)
    assert np.abs(full.shifts - twin.shifts).max() < 0.2
    assert np.sqrt((err_full ** 2).mean()) < 0.25
    assert np.sqrt((err_full ** 2).mean()) < 0.7 * np.sqrt((err_rigid ** 2).mean())


def test_registered_frames_match_the_reference_and_mappings_invert():
    twin = simulate_stack("MoS2", n_frames=4, shape=(192, 192), warp_px=0.3, dose=1e6, seed=14)
    reg = register_stack(twin.frames)
    v = reg.valid
    assert v.mean() > 0.5
    for t in range(1, 4):
        before = np.corrcoef(twin.frames[0][v], twin.frames[t][v])[0, 1]
        after = np.corrcoef(twin.frames[0][v], reg.registered[t][v])[0, 1]
        assert after > before + 0.1
    pts = np.array([[50.0, 60.0], [120.5, 80.25], [96.0, 150.0]])
    back = reg.to_reference(2, reg.to_frame(2, pts))
    np.testing.assert_allclose(back, pts, atol=1e-3)


@pytest.mark.parametrize("stack, message", [
    (np.zeros((64, 64)), "3D"),
    (np.zeros((1, 64, 64)), "at least 2 frames"),
    (np.full((3, 64, 64), np.nan), "NaN"),
])
def test_bad_stacks_are_refused_with_a_message(stack, message):
    with pytest.raises(ValueError, match=message):
        register_stack(stack)
