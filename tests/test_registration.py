"""Drift registration of image stacks (napari_stem_defects.dynamics.registration).

Stacks are cut from one large noise-free digital twin, moved by known
sub-pixel shifts and smooth warps, so the displacement of every lattice site
is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_stem_defects.dynamics.registration import Registration, register_stack
from napari_stem_defects.simulate import ImagingParams, simulate_twin

SIZE = 256  # frame side (px)
CROP = 48  # frames are cut from the twin at this offset, leaving room for the drift
PIXEL_AREA = 0.12**2  # Å^2 (the twin's default pixel size)


@pytest.fixture(scope="module")
def twin():
    return simulate_twin("MoS2", shape=(SIZE + 2 * CROP,) * 2, imaging=ImagingParams(dose=None), seed=7)


def _warp_model(amplitude: float, n_frames: int, seed: int = 0):
    """Smooth warps E_t(q), a sinusoid per axis with a wavelength of 1.5 frames; none in frame 0."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(n_frames, 2))
    direction = rng.uniform(0, 2 * np.pi, size=(n_frames, 2))
    k = np.stack([np.sin(direction), np.cos(direction)], axis=-1) / (1.5 * SIZE)  # (T, axis, 2) cycles/px
    amp = np.full(n_frames, float(amplitude))
    amp[0] = 0.0

    def warp(t: int, q: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * np.einsum("...c,ac->...a", q, k[t]) + phase[t]
        return amp[t] * np.sin(arg)

    return warp


def _stack(twin, shifts, warp=None, dose=None, seed=0) -> np.ndarray:
    """Frames where content at reference p sits at p + shifts[t] + E_t(q): frame_t(q) = ref(q - s_t - E_t(q))."""
    q = np.stack(np.mgrid[0:SIZE, 0:SIZE], axis=-1).astype(float)
    rng = np.random.default_rng(seed)
    frames = []
    for t, s in enumerate(np.asarray(shifts, dtype=float)):
        src = q - s - (warp(t, q) if warp is not None else 0.0) + CROP
        frame = ndimage.map_coordinates(twin.image, [src[..., 0], src[..., 1]], order=3)
        if dose is not None:
            frame = rng.poisson(np.clip(frame, 0, None) * dose * PIXEL_AREA).astype(float)
        frames.append(frame)
    return np.stack(frames).astype(np.float32)


def _true_displacement(shift, warp, t, points):
    """Solve q = p + s + E_t(q) for q; the displacement is q - p."""
    q = points + shift
    for _ in range(50):
        q = points + shift + (warp(t, q) if warp is not None else 0.0)
    return q - points


def _sites(twin, margin=8.0) -> np.ndarray:
    """Reference-frame positions of the lattice sites at least ``margin`` px inside the frame."""
    p = twin.sites[["y_px", "x_px"]].to_numpy() - CROP
    return p[((p >= margin) & (p <= SIZE - 1 - margin)).all(axis=1)]


def _drift(n, step=(1.2, -0.8), jitter=0.6, seed=1):
    rng = np.random.default_rng(seed)
    steps = np.asarray(step) + rng.normal(0, jitter, size=(n, 2))
    steps[0] = 0.0
    return np.cumsum(steps, axis=0)


def _site_rms(reg: Registration, shifts, warp, points) -> float:
    err = np.concatenate([
        reg.displacement(t, points) - _true_displacement(shifts[t], warp, t, points) for t in range(1, len(shifts))
    ])
    return float(np.sqrt((err**2).sum(axis=1).mean()))


# ---------------------------------------------------------------------------------------------- rigid


def test_rigid_shifts_noise_free(twin):
    true = _drift(6)
    reg = register_stack(_stack(twin, true), nonrigid=False)
    assert reg.fields is None and reg.grid_y is None
    assert np.array_equal(reg.shifts[0], [0.0, 0.0])
    assert np.abs(reg.shifts - true).max() < 0.1
    assert reg.quality.min() > 0.9
    assert reg.period_px == pytest.approx(twin.material.a * np.sqrt(3) / 2 / 0.12, rel=0.05)


def test_rigid_shifts_at_dose_1e5(twin):
    true = _drift(6, seed=2)
    reg = register_stack(_stack(twin, true, dose=1e5), nonrigid=False)
    assert np.abs(reg.shifts - true).max() < 0.2


def test_large_drift_is_not_locked_onto_a_lattice_translation(twin):
    from skimage.registration import phase_cross_correlation

    true = _drift(10, step=(2.9, -1.3), jitter=0.3, seed=3)
    lattice_constant = np.linalg.norm(twin.lattice.a1)
    assert np.linalg.norm(true[-1]) > lattice_constant  # drifted by more than a lattice translation
    frames = _stack(twin, true)
    # a plain windowed phase correlation of the last frame with the first locks onto the lattice
    hann = np.outer(np.hanning(SIZE), np.hanning(SIZE))
    naive = phase_cross_correlation(frames[-1] * hann, frames[0] * hann, upsample_factor=10)[0]
    assert np.abs(naive - true[-1]).max() > 5.0
    reg = register_stack(frames, nonrigid=False)
    assert np.abs(reg.shifts - true).max() < 0.1


def test_reference_frame_can_be_any_frame(twin):
    true = _drift(5, seed=4)
    reg = register_stack(_stack(twin, true), nonrigid=False, reference=2)
    assert reg.reference == 2
    assert np.array_equal(reg.shifts[2], [0.0, 0.0])
    assert np.abs(reg.shifts - (true - true[2])).max() < 0.1


# ---------------------------------------------------------------------------------------------- non-rigid


def test_nonrigid_recovers_a_smooth_warp_noise_free(twin):
    true = _drift(5, seed=5)
    warp = _warp_model(0.8, 5, seed=5)
    frames = _stack(twin, true, warp)
    points = _sites(twin)
    rigid = register_stack(frames, nonrigid=False)
    reg = register_stack(frames)
    assert reg.fields.shape == (5, 2, len(reg.grid_y), len(reg.grid_x))
    assert reg.grid_y[0] == 0 and reg.grid_y[-1] == SIZE - 1
    assert np.all(reg.fields[0] == 0)
    rms_rigid, rms = _site_rms(rigid, true, warp, points), _site_rms(reg, true, warp, points)
    assert rms_rigid > 0.3
    assert rms < 0.1
    assert rms < 0.3 * rms_rigid


def test_nonrigid_recovers_a_smooth_warp_at_dose_1e5(twin):
    true = _drift(5, seed=6)
    warp = _warp_model(0.8, 5, seed=6)
    frames = _stack(twin, true, warp, dose=1e5, seed=6)
    points = _sites(twin)
    rms_rigid = _site_rms(register_stack(frames, nonrigid=False), true, warp, points)
    rms = _site_rms(register_stack(frames), true, warp, points)
    assert rms < 0.2
    assert rms < 0.5 * rms_rigid


def test_inverse_mapping_and_dense_field(twin):
    true = _drift(3, seed=7)
    warp = _warp_model(1.0, 3, seed=7)
    reg = register_stack(_stack(twin, true, warp))
    rng = np.random.default_rng(0)
    p = rng.uniform(0, SIZE - 1, size=(50, 2))
    for t in range(3):
        assert np.abs(reg.to_reference(t, reg.to_frame(t, p)) - p).max() < 1e-3
    # a single point keeps its shape
    assert reg.to_frame(1, p[0]).shape == (2,)
    assert np.allclose(reg.to_frame(1, p[0]), reg.to_frame(1, p[:1])[0])
    # the dense field agrees with the point-wise displacement at pixel centres
    dense = reg.displacement_field(2)
    ij = rng.integers(0, SIZE, size=(20, 2))
    assert np.allclose(dense[:, ij[:, 0], ij[:, 1]].T, reg.displacement(2, ij.astype(float)), atol=1e-4)
    # rigid-only inverse is exact
    rigid = register_stack(_stack(twin, true), nonrigid=False)
    assert np.allclose(rigid.to_reference(1, rigid.to_frame(1, p)), p, atol=1e-12)


def test_registered_frames_match_the_reference_better(twin):
    true = _drift(4, step=(2.0, 1.5), seed=8)
    warp = _warp_model(0.8, 4, seed=8)
    frames = _stack(twin, true, warp)
    reg = register_stack(frames)
    rigid = register_stack(frames, nonrigid=False)
    assert reg.registered.shape == frames.shape and reg.registered.dtype == np.float32
    v = reg.valid
    assert v.mean() > 0.8

    def corr(a, b):
        return np.corrcoef(a[v], b[v])[0, 1]

    for t in range(1, 4):
        before, after = corr(frames[t], frames[0]), corr(reg.registered[t], reg.registered[0])
        assert after > 0.999
        assert after > before + 0.05
        assert after > corr(rigid.registered[t], rigid.registered[0])
    # with shot noise, registered frames correlate with the reference as well as a repeat exposure does
    noisy = _stack(twin, true, warp, dose=1e5, seed=8)
    reg = register_stack(noisy)
    v = reg.valid
    repeat = corr(noisy[0], _stack(twin, [[0.0, 0.0]], dose=1e5, seed=99)[0])
    for t in range(1, 4):
        assert corr(reg.registered[t], reg.registered[0]) > max(0.95 * repeat, corr(noisy[t], noisy[0]))


def test_valid_mask_and_fill(twin):
    shift = np.array([5.3, -3.2])
    frames = _stack(twin, [[0.0, 0.0], shift])
    reg = register_stack(frames, nonrigid=False, fill=float("nan"))
    # content at reference p is at p + shift in frame 1: rows beyond H - 1 - 5.3 and columns below 3.2 are unseen
    assert reg.valid[: SIZE - 7, 4:].all()
    assert not reg.valid[SIZE - 5:].any() and not reg.valid[:, :3].any()
    assert np.array_equal(np.isnan(reg.registered[1]), ~reg.valid)
    assert not np.isnan(reg.registered[0]).any()
    filled = register_stack(frames, nonrigid=False)
    assert np.allclose(filled.registered[1][~filled.valid], frames[1].mean())


# ---------------------------------------------------------------------------------------------- plumbing


def test_progress_and_cancel(twin):
    frames = _stack(twin, _drift(3, seed=9))
    calls = []
    register_stack(frames, nonrigid=False, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(InterruptedError, match="cancelled"):
        register_stack(frames, cancel=lambda: True)


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        (np.zeros((64, 64)), "3D"),
        (np.zeros((1, 64, 64)), "at least 2 frames"),
        (np.zeros((2, 16, 64)), "too small"),
        (np.zeros((2, 64, 64), dtype=complex), "real"),
    ],
)
def test_bad_stacks_are_refused(stack, message):
    with pytest.raises(ValueError, match=message):
        register_stack(stack)


def test_non_finite_frames_and_bad_options_are_refused():
    stack = np.random.default_rng(0).random((3, 64, 64))
    stack[1, 5, 5] = np.nan
    with pytest.raises(ValueError, match="frame 1 contains NaN"):
        register_stack(stack)
    stack[1, 5, 5] = 0.0
    with pytest.raises(ValueError, match="reference frame 3 out of range"):
        register_stack(stack, reference=3)
    with pytest.raises(ValueError, match="upsample"):
        register_stack(stack, upsample=0)
    with pytest.raises(ValueError, match="fill"):
        register_stack(stack, fill="median")
    with pytest.raises(ValueError, match="period_px"):
        register_stack(stack, period_px=-3.0)


def test_a_blank_frame_keeps_the_last_good_shift_and_does_not_break_the_chain(twin):
    true = _drift(5, step=(2.5, -2.0), jitter=0.2, seed=10)
    frames = _stack(twin, true)
    frames[2] = 0.0
    reg = register_stack(frames)
    assert reg.quality[2] == 0.0
    assert np.array_equal(reg.shifts[2], reg.shifts[1]) and np.all(reg.fields[2] == 0)
    good = [0, 1, 3, 4]
    assert np.abs(reg.shifts[good] - true[good]).max() < 0.1
