"""``napari-stem-defects dynamics`` on a multi-frame file or single frames, and its messages for bad input."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.cli import main
from napari_stem_defects.dynamics import pipeline
from napari_stem_defects.dynamics.evaluate import match_events
from napari_stem_defects.simulate.stack import simulate_stack

FILES = {"drift.csv", "tracks.csv", "track_features.csv", "events.csv", "instability.csv", "instability.npy",
         "clusters.csv", "dynamics.json"}


@pytest.fixture(scope="module")
def twin():
    return simulate_stack("MoS2", n_frames=5, shape=(192, 192), dose=1e6, events_per_frame=3.0, seed=1)


@pytest.fixture
def short_training(monkeypatch):
    """The command's analysis with a short autoencoder training (the command itself is unchanged)."""
    monkeypatch.setattr(pipeline, "analyze_stack", functools.partial(pipeline.analyze_stack, epochs=3))


def _events(out) -> pd.DataFrame:
    return pd.read_csv(out / "events.csv", keep_default_na=False, na_values=[""])


def test_multi_frame_tiff_with_calibration(twin, tmp_path, short_training, capsys):
    tifffile = pytest.importorskip("tifffile")
    per_nm = 10.0 / twin.pixel_size
    tifffile.imwrite(tmp_path / "series.tif", twin.frames, imagej=True, resolution=(per_nm, per_nm),
                     metadata={"unit": "nm", "axes": "TYX"})
    out = tmp_path / "out"
    assert main(["dynamics", str(tmp_path / "series.tif"), "--out", str(out), "--material", "MoS2"]) == 0
    assert {p.name for p in out.iterdir()} == FILES | {"defect_counts.csv"}
    std = capsys.readouterr()
    assert "5 frames" in std.out and "100%" in std.err

    meta = json.loads((out / "dynamics.json").read_text())
    assert meta["pixel_size_A"] == pytest.approx(twin.pixel_size, rel=1e-4)  # from the file's calibration
    assert meta["n_frames"] == 5 and meta["material"] == "MoS2" and meta["source"].endswith("series.tif")
    drift = pd.read_csv(out / "drift.csv")
    np.testing.assert_allclose(drift[["shift_y_px", "shift_x_px"]], twin.shifts, atol=0.2)
    np.testing.assert_allclose(drift["shift_x_pm"], 100 * twin.pixel_size * drift["shift_x_px"], rtol=1e-3)
    scores = match_events(_events(out), twin.events, tol_px=0.4 * meta["nn_px"]).set_index("kind")
    assert scores.loc["all", "f1"] >= 0.75, scores
    counts = pd.read_csv(out / "defect_counts.csv")
    assert list(counts["frame"]) == list(range(5))


def test_single_frame_files_are_stacked_in_the_order_given(twin, tmp_path, short_training, capsys):
    paths = []
    for t, frame in enumerate(twin.frames[:4]):
        paths.append(tmp_path / f"frame_{t}.npy")
        np.save(paths[-1], frame)
    out = tmp_path / "out"
    rc = main(["dynamics", *map(str, paths), "--out", str(out), "--pixel-size", str(twin.pixel_size),
               "--rigid-only", "--classifier", "none", "--encoder", "autoencoder"])
    assert rc == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == FILES  # no material: no defect counts
    meta = json.loads((out / "dynamics.json").read_text())
    assert meta["n_frames"] == 4 and meta["pixel_size_A"] == pytest.approx(twin.pixel_size)
    assert meta["settings"]["encoder"] == "autoencoder" and meta["settings"]["score"] == "fused"
    assert meta["settings"]["nonrigid"] is False and meta["settings"]["classifier"] is None
    assert any("defect counts skipped" in m for m in meta["messages"])
    drift = pd.read_csv(out / "drift.csv")
    # rigid only: the frame's (unmodelled) non-rigid warp, 0.3 px RMS, pulls the shift a little
    np.testing.assert_allclose(drift[["shift_y_px", "shift_x_px"]], twin.shifts[:4], atol=0.4)
    assert (drift["residual_rms_px"] == 0).all()
    # without a material the per-frame species labels are not compared: no species changes, and the
    # sites emptied, filled and moved are the true ones
    events = _events(out)
    assert "species_changed" not in set(events["kind"]) and len(events) >= 2
    truth = twin.events[(twin.events["frame"] < 4) & (twin.events["kind"] != "species_changed")]
    scores = match_events(events, truth, tol_px=0.4 * meta["nn_px"]).set_index("kind")
    assert scores.loc["all", "precision"] >= 0.75 and scores.loc["all", "f1"] >= 0.6, scores


def test_a_single_2d_file_holds_no_series(twin, tmp_path, capsys):
    np.save(tmp_path / "one.npy", twin.frames[0])
    assert main(["dynamics", str(tmp_path / "one.npy"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "one.npy holds no image series" in err and err.startswith("napari-stem-defects dynamics: error:")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("frames", "message"), [
    ([np.zeros((3, 64, 64)), np.zeros((64, 64))], "not both"),
    ([np.zeros((96, 96)), np.zeros((80, 96))], "differ in shape"),
    ([np.zeros((3, 32, 32))], "too small"),
    ([np.zeros((1, 96, 96))], "holds no image series"),
])
def test_bad_input_exits_with_status_2_and_a_message(tmp_path, capsys, frames, message):
    paths = []
    for k, data in enumerate(frames):
        paths.append(str(tmp_path / f"f{k}.npy"))
        np.save(paths[-1], data)
    assert main(["dynamics", *paths, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_file_exits_with_status_2(tmp_path, capsys):
    assert main(["dynamics", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.tif" in capsys.readouterr().err


def test_default_instability_is_the_corrected_change_without_a_network(twin, tmp_path, capsys):
    np.save(tmp_path / "series.npy", twin.frames)
    out = tmp_path / "out"
    assert main(["dynamics", str(tmp_path / "series.npy"), "--out", str(out), "--pixel-size",
                 str(twin.pixel_size), "--classifier", "none"]) == 0
    table = pd.read_csv(out / "instability.csv")
    assert list(table.columns) == list(pipeline.SITE_INSTABILITY_COLUMNS) and len(table) > 30
    assert np.allclose(table["instability"], table["corrected_change"], equal_nan=True)
    assert not np.allclose(table["instability"], table["intensity_change"], equal_nan=True)
    assert table["latent_change"].isna().all()
    settings = json.loads((out / "dynamics.json").read_text())["settings"]
    assert settings["encoder"] == "intensity" and settings["score"] == "corrected"
    # a score that needs a code, without an encoder: refused before any work, nothing written
    capsys.readouterr()
    assert main(["dynamics", str(tmp_path / "series.npy"), "--out", str(tmp_path / "out2"),
                 "--score", "fused"]) == 2
    assert "--encoder autoencoder" in capsys.readouterr().err and not (tmp_path / "out2").exists()
