"""Simulated image series: drift, defect dynamics and the ground truth that describes them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from napari_stem_defects.simulate import ImagingParams, StackTwin, simulate_stack
from napari_stem_defects.simulate.stack_events import EMPTY, EVENT_COLUMNS, EVENT_KINDS, STACK_SITE_COLUMNS

# noise-free and without the random background, so two frames differ only by the drift
CLEAN = ImagingParams(dose=None, background_variation=0.0, texture=0.0)


@pytest.fixture(scope="module")
def busy() -> StackTwin:
    """A short stack with many events of every kind."""
    return simulate_stack("MoS2", n_frames=10, shape=(192, 192), pixel_size=0.15, events_per_frame=8,
                          defects={"V_X1": 0.05, "V_X2": 0.04, "V_M": 0.04}, seed=3)


def test_same_seed_same_stack_and_tables_have_the_documented_columns():
    a = simulate_stack(n_frames=4, shape=(96, 128), events_per_frame=5, seed=11)
    b = simulate_stack(n_frames=4, shape=(96, 128), events_per_frame=5, seed=11)
    c = simulate_stack(n_frames=4, shape=(96, 128), events_per_frame=5, seed=12)
    assert a.frames.shape == (4, 96, 128) and a.frames.dtype == np.float32
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.shifts, b.shifts)
    pd.testing.assert_frame_equal(a.sites, b.sites)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not np.array_equal(a.frames, c.frames)
    assert tuple(a.sites.columns) == STACK_SITE_COLUMNS
    assert tuple(a.events.columns) == EVENT_COLUMNS
    assert a.shifts.shape == (4, 2)
    np.testing.assert_array_equal(a.shifts[0], [0.0, 0.0])
    assert a.metadata["pixel_size_A"] == (0.12, 0.12) and a.metadata["n_frames"] == 4


def test_empty_label_matches_the_column_tables():
    from napari_stem_defects.columns.result import EMPTY as COLUMNS_EMPTY

    assert EMPTY == COLUMNS_EMPTY


def test_site_table_positions_follow_the_displacement(busy):
    sites = busy.sites
    n = sites["site_id"].nunique()
    assert len(sites) == n * busy.n_frames  # every site in every frame, empty ones included
    assert (sites.groupby("site_id")["sublattice"].nunique() == 1).all()
    assert ((sites["species"] == EMPTY) == ~sites["occupied"]).all()
    assert ((sites["n_atoms"] == 0) == ~sites["occupied"]).all()
    assert sites["inside"].any() and (~sites["inside"]).any()  # drift moves sites in and out of view
    for t in range(busy.n_frames):
        frame = sites[sites["frame"] == t]
        ref = frame[["y_ref", "x_ref"]].to_numpy()
        np.testing.assert_allclose(frame[["y_px", "x_px"]].to_numpy(), ref + busy.displacement(t, ref))
        yx = frame[["y_px", "x_px"]].to_numpy()
        h, w = busy.frames.shape[1:]
        inside = (yx[:, 0] >= -0.5) & (yx[:, 0] <= h - 0.5) & (yx[:, 1] >= -0.5) & (yx[:, 1] <= w - 0.5)
        np.testing.assert_array_equal(frame["inside"].to_numpy(), inside)
    np.testing.assert_allclose(busy.displacement(0, np.random.default_rng(0).uniform(0, 192, (50, 2))), 0.0)


def test_rigid_drift_is_recovered_by_phase_correlation():
    stack = simulate_stack(n_frames=5, shape=(256, 256), drift_step_px=2.0, warp_px=0.0,
                           events_per_frame=0, imaging=CLEAN, seed=5)
    assert np.abs(stack.shifts[1:]).max() > 1.0  # a real drift to find
    hann = window("hann", stack.frames.shape[1:])  # so the fixed frame border does not pin the peak at 0
    frames = [(f - f.mean()) * hann for f in stack.frames]
    for t in range(1, stack.n_frames):
        found, _, _ = phase_cross_correlation(frames[0], frames[t], upsample_factor=100, normalization=None)
        # skimage returns the shift that registers frame t onto frame 0: minus the drift
        np.testing.assert_allclose(-found, stack.shifts[t], atol=0.1)


def _column_peaks(image: np.ndarray, starts: np.ndarray, sigma: float = 2.0, half: int = 8) -> np.ndarray:
    """Sub-pixel intensity peaks near ``starts`` by Gaussian-weighted mean shift (independent of the start)."""
    base = np.round(starts).astype(int)
    off = np.arange(-half, half + 1)
    qy = base[:, 0, None, None] + off[None, :, None]
    qx = base[:, 1, None, None] + off[None, None, :]
    patch = image[qy, qx] - image.min()
    x = np.asarray(starts, dtype=float).copy()
    for _ in range(30):
        w = patch * np.exp(-((qy - x[:, 0, None, None]) ** 2 + (qx - x[:, 1, None, None]) ** 2) / (2 * sigma**2))
        x = np.stack([(w * qy).sum((1, 2)), (w * qx).sum((1, 2))], axis=1) / w.sum((1, 2))[:, None]
    return x


def test_columns_move_exactly_by_the_displacement_field():
    stack = simulate_stack(n_frames=3, shape=(192, 192), drift_step_px=1.5, warp_px=1.5,
                           events_per_frame=0, imaging=CLEAN, seed=8)
    sites = stack.sites
    first = sites[sites["frame"] == 0].set_index("site_id")
    for t in (1, 2):
        now = sites[sites["frame"] == t].set_index("site_id")
        ok = (first["sublattice"] == "M") & first["occupied"]
        for table in (first, now):  # well inside both frames
            ok &= table["y_px"].between(12, 180) & table["x_px"].between(12, 180)
        assert ok.sum() > 20
        ref = first.loc[ok, ["y_ref", "x_ref"]].to_numpy()
        peaks0 = _column_peaks(stack.frames[0], ref)
        peaks_t = _column_peaks(stack.frames[t], now.loc[ok, ["y_px", "x_px"]].to_numpy())
        np.testing.assert_allclose(peaks0, ref, atol=0.05)  # the frame-0 columns sit at the reference
        moved = peaks_t - peaks0
        assert np.abs(moved - stack.displacement(t, ref)).max() < 0.05
        assert np.abs(moved - stack.shifts[t]).max() > 1.0  # the non-rigid part is real and rendered


def test_every_event_matches_the_site_table(busy):
    events, sites = busy.events, busy.sites
    assert set(events["kind"]) == set(EVENT_KINDS)
    species = sites.pivot(index="site_id", columns="frame", values="species")
    inside_all = sites.groupby("site_id")["inside"].all()
    for ev in events.itertuples():
        before, after = species.loc[ev.site_id, ev.frame - 1], species.loc[ev.site_id, ev.frame]
        assert before == ev.species_before
        assert inside_all[ev.site_id]
        if ev.kind == "moved":
            assert after == EMPTY
            assert species.loc[ev.to_site_id, ev.frame - 1] == EMPTY
            assert species.loc[ev.to_site_id, ev.frame] == ev.species_after == ev.species_before
            assert inside_all[ev.to_site_id]
            distance = np.hypot(ev.to_y_ref - ev.y_ref, ev.to_x_ref - ev.x_ref) * busy.pixel_size
            assert 0.9 * busy.material.a < distance < 1.1 * busy.material.a
            assert sites.loc[sites["site_id"] == ev.to_site_id, "sublattice"].iloc[0] == ev.sublattice
        else:
            assert after == ev.species_after != before
            assert ev.to_site_id == -1 and np.isnan(ev.to_y_ref)
            if ev.kind == "emptied":
                assert after == EMPTY
            elif ev.kind == "filled":
                assert before == EMPTY and after in ("Mo", "S")
            else:
                assert EMPTY not in (before, after)
    # at most one event per site per frame, destinations included
    touched = pd.concat([events[["frame", "site_id"]],
                         events.loc[events["to_site_id"] >= 0, ["frame", "to_site_id"]]
                         .rename(columns={"to_site_id": "site_id"})])
    assert not touched.duplicated().any()
    assert busy.changed_sites == set(touched["site_id"])


def test_sites_change_only_through_events(busy):
    species = busy.sites.pivot(index="site_id", columns="frame", values="species")
    events = busy.events
    for t in range(1, busy.n_frames):
        changed = set(species.index[species[t] != species[t - 1]])
        at_t = events[events["frame"] == t]
        expected = set(at_t["site_id"]) | set(at_t.loc[at_t["to_site_id"] >= 0, "to_site_id"])
        assert changed == expected


def _median_nn(points: np.ndarray) -> float:
    d, _ = cKDTree(points).query(points, k=2)
    return float(np.median(d[:, 1]))


def _clustering_ratio(stack: StackTwin) -> float:
    """Median nearest-neighbour distance of the sites where events started, over that of as many
    sites drawn at random among those that could have had one (the mean of 100 draws)."""
    sites = stack.sites
    event_sites = np.unique(stack.events["site_id"])  # sources only: a move's two ends are neighbours anyway
    first = sites[sites["frame"] == 0].set_index("site_id")
    inside_all = sites.groupby("site_id")["inside"].all()
    pool = first.loc[inside_all[inside_all].index]
    pool = pool.loc[pool["sublattice"] != "H", ["y_ref", "x_ref"]].to_numpy()
    observed = _median_nn(first.loc[event_sites, ["y_ref", "x_ref"]].to_numpy())
    rng = np.random.default_rng(0)
    null = [_median_nn(pool[rng.choice(len(pool), len(event_sites), replace=False)]) for _ in range(100)]
    return observed / float(np.mean(null))


def test_events_cluster_around_hot_spots_and_not_without_them():
    # a wide field (19 nm) so hot spots of 1.5 nm are a small part of it
    kwargs = dict(n_frames=20, shape=(384, 384), pixel_size=0.5, events_per_frame=5,
                  imaging=ImagingParams(dose=None, probe_fwhm=2.0), seed=4)
    clustered = simulate_stack(clustering=0.7, **kwargs)
    spread = simulate_stack(clustering=0.0, **kwargs)
    assert clustered.events["site_id"].nunique() > 40 and spread.events["site_id"].nunique() > 40
    ratio_clustered, ratio_spread = _clustering_ratio(clustered), _clustering_ratio(spread)
    # seeds 0-7 give 0.31-0.34 with hot spots and 0.81-0.97 without
    assert ratio_clustered < 0.55
    assert ratio_spread > 0.7  # the measure does not call any event set clustered
    # most events lie within the hot-spot radius of a hot spot
    ev = clustered.events[["y_ref", "x_ref"]].to_numpy()
    near = cKDTree(clustered.hotspots).query(ev)[0] * clustered.pixel_size <= 15.0
    assert near.mean() > 0.6
    ev = spread.events[["y_ref", "x_ref"]].to_numpy()
    assert (cKDTree(spread.hotspots).query(ev)[0] * spread.pixel_size <= 15.0).mean() < 0.3


def test_no_events_keeps_the_lattice_and_validates_arguments():
    stack = simulate_stack(n_frames=3, shape=(64, 64), events_per_frame=0, seed=1)
    assert len(stack.events) == 0 and stack.changed_sites == set()
    assert list(stack.events.columns) == list(EVENT_COLUMNS)
    species = stack.sites.pivot(index="site_id", columns="frame", values="species")
    assert (species.nunique(axis=1) == 1).all()
    with pytest.raises(ValueError):
        simulate_stack(n_frames=0)
    with pytest.raises(ValueError):
        simulate_stack(clustering=1.5)
    with pytest.raises(ValueError):
        simulate_stack(shape=(4, 4))


def test_dynamics_sample_function_and_viewer(make_napari_viewer):
    from napari_stem_defects.sample_data import dynamics_stack

    (frames, kwargs, kind), (sites, truth, points_kind) = dynamics_stack()
    assert kind == "image" and frames.shape == (12, 256, 256) and points_kind == "points"
    assert kwargs["axis_labels"] == ("frame", "y", "x")
    assert kwargs["metadata"]["material"] == "MoS2"
    assert len(kwargs["metadata"]["events"]) > 0 and kwargs["metadata"]["shifts_px"][0] == [0.0, 0.0]
    viewer = make_napari_viewer()
    viewer.open_sample("napari-stem-defects", "dynamics_stack")
    layer, truth_layer = viewer.layers[0], viewer.layers[1]
    assert layer._type_string == "image" and layer.data.shape == (12, 256, 256)
    np.testing.assert_allclose(layer.scale, (1.0, 0.12, 0.12))
    assert str(layer.units[1]) == "angstrom"
    assert viewer.dims.axis_labels[0] == "frame"  # the slider says "frame", not "-3"
    # the ground truth: every site of every frame, on the frame it belongs to, with its content
    assert truth_layer._type_string == "points" and truth_layer.name == "dynamics_stack ground truth"
    assert set(truth_layer.data[:, 0].astype(int)) == set(range(12))
    feats = truth_layer.features
    assert {"site_id", "sublattice", "species", "occupied", "frame"} <= set(feats.columns)
    np.testing.assert_array_equal(truth_layer.data[:, 0], feats["frame"].to_numpy(float))
    occupied = (feats["sublattice"] == "M").to_numpy() & feats["occupied"].to_numpy(bool)
    t, y, x = np.round(truth_layer.data[occupied]).astype(int).T
    inside = (y >= 0) & (y < 256) & (x >= 0) & (x < 256)
    assert layer.data[t[inside], y[inside], x[inside]].mean() > layer.data.mean()  # on bright columns
