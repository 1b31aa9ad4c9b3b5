"""The image-series pipeline finds the simulated drift, events and unstable sites, and writes its files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from napari_stem_defects.dynamics.clusters import CLUSTER_COLUMNS
from napari_stem_defects.dynamics.evaluate import match_events, tracking_accuracy
from napari_stem_defects.dynamics.events import EVENT_COLUMNS
from napari_stem_defects.dynamics.files import FORMAT_VERSION, write_dynamics
from napari_stem_defects.dynamics.instability import roc_auc
from napari_stem_defects.dynamics.pipeline import SITE_INSTABILITY_COLUMNS, analyze_stack
from napari_stem_defects.dynamics.tracking import TRACK_COLUMNS, TRACK_FEATURE_COLUMNS
from napari_stem_defects.simulate.stack import simulate_stack

N_FRAMES = 6
#: Files ``write_dynamics`` promises (module docstring of dynamics.files and the README) and their columns.
CSV_COLUMNS = {
    "drift.csv": ("frame", "shift_y_px", "shift_x_px", "shift_y_pm", "shift_x_pm", "residual_rms_px"),
    "tracks.csv": (*TRACK_COLUMNS, "y_pm", "x_pm"),
    "track_features.csv": TRACK_FEATURE_COLUMNS,
    "events.csv": EVENT_COLUMNS,
    "instability.csv": SITE_INSTABILITY_COLUMNS,
    "clusters.csv": CLUSTER_COLUMNS,
}
JSON_KEYS = {"format_version", "software", "source", "n_frames", "shape", "pixel_size_A", "material", "nn_px",
             "settings", "n_tracks", "n_sites_analysed", "events", "n_clusters", "max_drift_px", "timings_s",
             "messages"}


@pytest.fixture(scope="module")
def twin():
    return simulate_stack("MoS2", n_frames=N_FRAMES, shape=(160, 160), dose=1e6, events_per_frame=3.0, seed=3)


@pytest.fixture(scope="module")
def analysed(twin):
    fractions: list[float] = []
    result = analyze_stack(twin.frames, "MoS2", twin.pixel_size, epochs=20, progress=fractions.append)
    return result, fractions


def _changed(twin, table: pd.DataFrame, tol: float) -> np.ndarray:
    """True for the rows of ``table`` (y_px, x_px) that sit on a site some true event touched."""
    truth = twin.sites[twin.sites["frame"] == 0]
    dist, idx = cKDTree(truth[["y_ref", "x_ref"]].to_numpy(float)).query(table[["y_px", "x_px"]].to_numpy(float))
    return np.isin(truth["site_id"].to_numpy()[idx], list(twin.changed_sites)) & (dist < tol)


def test_drift_matches_the_true_shifts(twin, analysed):
    result, fractions = analysed
    assert result.registration.shifts.shape == (N_FRAMES, 2)
    np.testing.assert_allclose(result.registration.shifts, twin.shifts, atol=0.2)
    assert result.registration.registered.shape == twin.frames.shape
    # progress runs from 0 to 1 without going back; every stage was timed
    assert fractions[-1] == 1.0 and np.all(np.diff(fractions) >= -1e-9) and min(fractions) >= 0.0
    assert set(result.timings) == {"register", "detect", "track", "instability", "counts"}


def test_events_and_tracks_match_the_ground_truth(twin, analysed):
    result, _ = analysed
    tol = 0.4 * result.nn_px
    assert len(twin.events) >= 8
    scores = match_events(result.events, twin.events, tol_px=tol).set_index("kind")
    assert scores.loc["all", "f1"] >= 0.8, scores
    assert list(result.events.columns) == list(EVENT_COLUMNS)
    assert result.events["frame"].between(1, N_FRAMES - 1).all()

    acc = tracking_accuracy(result.tracks, twin.sites, tol_px=tol)
    assert acc["completeness"] >= 0.97 and acc["purity"] >= 0.97 and acc["switch_fraction"] <= 0.03, acc
    assert list(result.tracks.columns) == list(TRACK_COLUMNS)
    assert list(result.track_features.columns) == list(TRACK_FEATURE_COLUMNS)
    assert result.track_features["track_id"].nunique() == result.tracks["track_id"].nunique()


def test_instability_is_higher_on_sites_that_changed(twin, analysed):
    result, _ = analysed
    table = result.site_table
    assert list(table.columns) == list(SITE_INSTABILITY_COLUMNS)
    assert len(table) >= 30 and table["track_id"].is_unique
    assert set(table["track_id"]) <= set(result.tracks["track_id"])
    changed = _changed(twin, table, 0.4 * result.nn_px)
    assert 5 <= changed.sum() < len(table)
    inst = table["instability"].to_numpy(float)
    ok = np.isfinite(inst)
    assert ok.mean() > 0.9
    assert np.mean(inst[ok & changed]) > 1.5 * np.mean(inst[ok & ~changed])
    assert roc_auc(inst[ok], changed[ok]) >= 0.8
    # clusters label only sites; the map is an image of the frame with its peak on a site
    assert set(table["cluster_id"]) <= {-1, *range(len(result.clusters.table))}
    assert result.instability_map.shape == twin.frames.shape[1:]
    peak = np.unravel_index(np.nanargmax(result.instability_map), result.instability_map.shape)
    assert cKDTree(table[["y_px", "x_px"]].to_numpy(float)).query(peak)[0] < result.nn_px


def test_defect_counts_has_one_row_per_frame(twin, analysed):
    result, _ = analysed
    counts = result.defect_counts
    assert list(counts["frame"]) == list(range(N_FRAMES))
    assert {"n_cells", "vacancies"} <= set(counts.columns)
    classes = [c for c in counts.columns if c not in ("frame", "n_cells", "vacancies")]
    assert (counts[classes].sum(axis=1) == counts["n_cells"]).all()
    assert (counts["vacancies"] <= counts["n_cells"]).all() and counts["vacancies"].max() > 0


@pytest.mark.parametrize(("stack", "message"), [
    (np.zeros((128, 128)), "image series"),
    (np.zeros((4, 128, 128, 3)), "RGB"),
    (np.zeros((1, 128, 128)), "at least 2 frames"),
    (np.zeros((4, 32, 32)), "too small"),
    (np.zeros((4, 128, 128), complex), "real"),
])
def test_bad_input_is_a_value_error_with_a_message(stack, message):
    with pytest.raises(ValueError, match=message):
        analyze_stack(stack)


def test_nan_frames_are_a_value_error(twin):
    frames = twin.frames[:3].copy()
    frames[1] = np.nan
    with pytest.raises(ValueError, match=r"frames \[1\]"):
        analyze_stack(frames)
    frames = twin.frames[:3].copy()
    frames[2, 10:20, 30:40] = np.nan
    with pytest.raises(ValueError, match="finite"):
        analyze_stack(frames)


def test_cancel_stops_with_interrupted_error(twin):
    with pytest.raises(InterruptedError):
        analyze_stack(twin.frames, cancel=lambda: True)
    seen: list[float] = []  # cancel in the middle of the run (after registration and detection)
    with pytest.raises(InterruptedError):
        analyze_stack(twin.frames[:3], "MoS2", epochs=2, progress=seen.append,
                      cancel=lambda: bool(seen) and seen[-1] > 0.5)
    assert 0.5 < max(seen) < 1.0


def test_write_dynamics_writes_the_documented_files(twin, analysed, tmp_path):
    result, _ = analysed
    paths = write_dynamics(result, tmp_path / "out", source="stack.tif")
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {*CSV_COLUMNS, "instability.npy", "defect_counts.csv", "dynamics.json"}
    assert {p.name for p in paths.values()} == written
    for name, columns in CSV_COLUMNS.items():
        assert tuple(pd.read_csv(tmp_path / "out" / name).columns) == tuple(columns), name

    drift = pd.read_csv(tmp_path / "out" / "drift.csv")
    np.testing.assert_allclose(drift[["shift_y_px", "shift_x_px"]], twin.shifts, atol=0.2)
    np.testing.assert_allclose(drift["shift_y_pm"], 100 * twin.pixel_size * drift["shift_y_px"], rtol=1e-4)
    assert (drift["residual_rms_px"] >= 0).all() and drift["residual_rms_px"].iloc[0] == 0
    tracks = pd.read_csv(tmp_path / "out" / "tracks.csv")
    np.testing.assert_allclose(tracks["x_pm"], 100 * twin.pixel_size * tracks["x_px"], rtol=1e-4)
    counts = pd.read_csv(tmp_path / "out" / "defect_counts.csv")
    pd.testing.assert_frame_equal(counts, result.defect_counts, check_dtype=False)
    imap = np.load(tmp_path / "out" / "instability.npy")
    assert imap.dtype == np.float32 and imap.shape == twin.frames.shape[1:]

    events = pd.read_csv(tmp_path / "out" / "events.csv", keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(events, result.events.reset_index(drop=True), check_dtype=False, rtol=1e-5)

    meta = json.loads((tmp_path / "out" / "dynamics.json").read_text())
    assert set(meta) == JSON_KEYS
    assert meta["format_version"] == FORMAT_VERSION and meta["source"] == "stack.tif"
    assert meta["n_frames"] == N_FRAMES and meta["shape"] == list(twin.frames.shape)
    assert meta["material"] == "MoS2" and meta["pixel_size_A"] == pytest.approx(twin.pixel_size)
    assert meta["events"] == result.events["kind"].value_counts().to_dict()
    assert sum(meta["events"].values()) == len(result.events)
    assert meta["max_drift_px"] == pytest.approx(np.hypot(*twin.shifts.T).max(), abs=0.2)
    assert meta["n_sites_analysed"] == len(result.site_table) and meta["settings"]["epochs"] == 20


def test_write_dynamics_keeps_the_columns_without_events_or_calibration(analysed, tmp_path):
    result, _ = analysed
    bare = dataclasses.replace(result, events=result.events.iloc[:0], clusters=None, pixel_size=None,
                               defect_counts=pd.DataFrame(), material=None)
    write_dynamics(bare, tmp_path)
    assert not (tmp_path / "defect_counts.csv").exists()
    for name, columns in CSV_COLUMNS.items():
        table = pd.read_csv(tmp_path / name)
        assert tuple(table.columns) == tuple(columns), name
    assert len(pd.read_csv(tmp_path / "events.csv")) == 0 and len(pd.read_csv(tmp_path / "clusters.csv")) == 0
    assert pd.read_csv(tmp_path / "drift.csv")["shift_x_pm"].isna().all()
    meta = json.loads((tmp_path / "dynamics.json").read_text())
    assert meta["events"] == {} and meta["n_clusters"] == 0 and meta["pixel_size_A"] is None


def test_a_frame_without_a_lattice_is_skipped_with_a_message(twin, monkeypatch):
    from napari_stem_defects.calibration import LatticeNotFoundError
    from napari_stem_defects.dynamics import pipeline

    real, calls = pipeline.detect_columns, []

    def flaky(image, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # frame 2, e.g. a blurred scan
            raise LatticeNotFoundError("no lattice peaks in the FFT")
        return real(image, **kwargs)

    monkeypatch.setattr(pipeline, "detect_columns", flaky)
    result = analyze_stack(twin.frames, "MoS2", twin.pixel_size, epochs=3)
    assert result.columns[2] is None and all(c is not None for i, c in enumerate(result.columns) if i != 2)
    assert any(m.startswith("frame 2: no columns found") for m in result.messages)
    assert 2 not in set(result.tracks["frame"]) and {0, 1, 3} <= set(result.tracks["frame"])
    assert list(result.defect_counts["frame"]) == [t for t in range(N_FRAMES) if t != 2]
