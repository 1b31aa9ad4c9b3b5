"""`napari-stem-defects batch`: a folder of twins with a corrupt and a non-image file, resume, determinism."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_stem_defects.batch.dataset import DATASET_COLUMNS
from napari_stem_defects.batch.inputs import collect_inputs, file_sha256
from napari_stem_defects.batch.runner import run_batch
from napari_stem_defects.batch.settings import BatchSettings
from napari_stem_defects.batch.worker import RECORD_NAME, analyze_frames
from napari_stem_defects.cli import build_parser, main
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.simulate import ImagingParams, simulate_twin

ROOT = Path(__file__).resolve().parents[1]
TWINS = 4
#: Columns that differ between runs of the same files (when, how long).
_RUN_COLUMNS = ["run_time_s", "finished"]


def _twin(seed: int, shape=(192, 192), dose=1e5):
    return simulate_twin("MoS2", shape=shape, pixel_size=0.12, rotation_deg=None,
                         defects={"V_X1": 0.04, "V_M": 0.02}, imaging=ImagingParams(dose=dose), seed=seed)


def _write_tif(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image.astype(np.float32), imagej=True, resolution=(1 / 0.012, 1 / 0.012),
                     metadata={"unit": "nm"})


def make_folder(folder: Path) -> dict[str, object]:
    """TWINS twins in two sub-folders, a 3-frame stack, a truncated TIFF, a spectrum (.npy) and a text file."""
    twins = {}
    for k in range(TWINS):
        twin = _twin(k)
        rel = f"{'day1' if k % 2 == 0 else 'day2'}/scan_{k}.tif"
        _write_tif(folder / rel, twin.image)
        twins[rel] = twin
    np.save(folder / "day2" / "series.npy", np.stack([_twin(10 + t, (160, 160)).image for t in range(3)]))
    data = (folder / "day1" / "scan_0.tif").read_bytes()
    (folder / "day2" / "truncated.tif").write_bytes(data[: len(data) // 3])
    np.save(folder / "day1" / "spectrum.npy", np.random.default_rng(0).random(1024))
    (folder / "notes.txt").write_text("not an image, not an input")
    return twins


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("batch_in")
    return path, make_folder(path)


@pytest.fixture(scope="module")
def serial_run(folder, tmp_path_factory):
    """The folder analysed by the command line in this process (the reference run)."""
    out = tmp_path_factory.mktemp("batch_out") / "results"
    status = main(["batch", str(folder[0]), "--out", str(out), "--material", "MoS2", "--workers", "1"])
    return out, status


def _dataset(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "dataset.csv")


def test_folder_with_a_corrupt_and_a_non_image_file(folder, serial_run):
    inp, twins = folder
    out, status = serial_run
    assert status == 1  # some files failed, and they are listed
    table = _dataset(out)
    assert list(table.columns[:len(DATASET_COLUMNS)]) == list(DATASET_COLUMNS)
    assert list(table["file"]) == sorted([*twins, "day2/series.npy", "day2/truncated.tif", "day1/spectrum.npy"])
    by_file = table.set_index("file")
    assert by_file.loc["day2/truncated.tif", "status"] == "failed"
    assert "truncated" in by_file.loc["day2/truncated.tif", "message"]
    assert by_file.loc["day1/spectrum.npy", "status"] == "failed"
    assert "spectrum" in by_file.loc["day1/spectrum.npy", "message"]
    ok = table[table["status"] == "ok"]
    assert len(ok) == TWINS + 1
    assert by_file.loc["day2/series.npy", "frames"] == 3
    assert by_file.loc["day2/series.npy", "pixel_size_source"] == "none"  # a plain .npy has no calibration
    for rel, twin in twins.items():
        row = by_file.loc[rel]
        assert row["pixel_size_source"] == "file" and float(row["pixel_size_y_A"]) == pytest.approx(0.12, rel=1e-4)
        assert row["calibration_checked"] and row["calibration_ok"] in (True, "True")
        assert float(row["calibration_difference"]) < 0.01
        truth = twin.cells["class"].value_counts()
        # counts within a cell or two of the truth (cells on the border may be incomplete)
        for cls in ("V_X1", "V_M"):
            assert abs(int(row[f"count_{cls}"]) - int(truth.get(cls, 0))) <= 2
            lo, hi = float(row[f"concentration_{cls}_lo95_cm2"]), float(row[f"concentration_{cls}_hi95_cm2"])
            conc = float(row[f"concentration_{cls}_cm2"])
            assert conc < hi and (lo < conc or int(row[f"count_{cls}"]) == 0)
        summary = json.loads((out / rel / "summary.json").read_text())
        assert int(row["count_V_M"]) == summary["total"]["counts"]["V_M"]
        assert (out / rel / "figures" / "overview.png").is_file()
        record = json.loads((out / rel / RECORD_NAME).read_text())
        assert record["status"] == "ok" and record["content_sha256"] == file_sha256(inp / rel)
    assert not (out / "notes.txt").exists()
    info = json.loads((out / "batch.json").read_text())
    assert info["status"] == "complete" and info["files"]["failed"] == 2
    assert info["settings"]["material"] == "MoS2"
    from napari_stem_defects.cells.cnn import default_weights_path

    assert info["models"]["cells"]["sha256"] == file_sha256(default_weights_path())
    assert info["versions"]["napari-stem-defects"] and info["created_by"] is not None
    html = (out / "report.html").read_text()
    assert "truncated.tif" in html and "data:image/png;base64," in html


def test_per_file_outputs_are_those_of_analyze(folder, serial_run, tmp_path):
    """The batch calls analyze's own functions: the same files, byte for byte (the stack too)."""
    inp, _ = folder
    out, _ = serial_run
    for rel in ("day1/scan_0.tif", "day2/series.npy"):
        source = str((inp / rel).resolve())
        assert main(["analyze", source, "--material", "MoS2", "--out", str(tmp_path / rel)]) == 0
        for name in ("sites.csv", "cells.csv", "summary.json", "analysis.json"):
            assert (tmp_path / rel / name).read_bytes() == (out / rel / name).read_bytes(), (rel, name)


def test_resume_skips_what_is_done_and_redoes_what_changed(folder, serial_run, tmp_path):
    inp = tmp_path / "in"
    shutil.copytree(folder[0], inp)
    out = tmp_path / "out"
    shutil.copytree(serial_run[0], out)
    (out / "dataset.csv").unlink()
    settings = BatchSettings(material="MoS2")
    # the inputs moved (copied): same content, so everything is kept
    again = run_batch([inp], out, settings, workers=1, report=False)
    assert (again.analysed, again.skipped) == (0, TWINS + 3)
    assert _dataset(out).drop(columns=_RUN_COLUMNS).equals(_dataset(serial_run[0]).drop(columns=_RUN_COLUMNS))
    # one file's content changes, one result is deleted: those two are done again
    _write_tif(inp / "day1/scan_2.tif", _twin(99).image)
    (out / "day2/scan_1.tif" / RECORD_NAME).unlink()
    seen = []
    again = run_batch([inp], out, settings, workers=1, report=False,
                      progress=lambda p: seen.append(p.rel) if p.kind == "finished" else None)
    assert sorted(seen) == ["day1/scan_2.tif", "day2/scan_1.tif"]
    # failed files are kept unless asked for, and other settings redo everything
    retry = run_batch([inp], out, settings, workers=1, report=False, retry_failed=True)
    assert retry.analysed == 2 and retry.failed == 2
    other = run_batch([inp / "day1" / "scan_0.tif"], tmp_path / "physics", BatchSettings(material="MoS2",
                                                                                          classifier="physics"),
                      workers=1, report=False)
    assert other.analysed == 1


def test_a_killed_batch_loses_only_the_files_in_flight(folder, serial_run, tmp_path):
    """Kill the command half way (SIGKILL, no clean-up); a re-run finishes only the rest, with the same results."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "napari_stem_defects.cli", "batch", str(folder[0]), "--out", str(out),
           "--material", "MoS2", "--workers", "1", "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and len(list(out.glob(f"**/{RECORD_NAME}"))) < 3:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(list(out.glob(f"**/{RECORD_NAME}")))
    assert 3 <= done_before < TWINS + 3
    again = run_batch([folder[0]], out, BatchSettings(material="MoS2"), workers=1, report=False)
    assert again.skipped == done_before and again.analysed == TWINS + 3 - done_before
    assert _dataset(out).drop(columns=_RUN_COLUMNS).equals(_dataset(serial_run[0]).drop(columns=_RUN_COLUMNS))


def _same_results(a: Path, b: Path) -> None:
    assert _dataset(a).drop(columns=_RUN_COLUMNS).equals(_dataset(b).drop(columns=_RUN_COLUMNS))
    for rel in _dataset(a).query("status == 'ok'")["file"]:
        for name in ("sites.csv", "cells.csv", "summary.json"):
            assert (a / rel / name).read_bytes() == (b / rel / name).read_bytes(), (rel, name)


def test_two_worker_processes_give_the_same_results(folder, serial_run, tmp_path):
    result = run_batch([folder[0]], tmp_path / "out", BatchSettings(material="MoS2"), workers=2, report=False)
    assert result.analysed == TWINS + 3
    assert {r["worker"]["threads"] for r in result.records} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    # each worker process read each of its models (the cell classifier and the context column classifier)
    # once and kept them for its next files
    n_models = len(BatchSettings(material="MoS2").models())
    assert n_models == 2
    loads: dict[int, list[int]] = {}
    for r in result.records:
        loads.setdefault(r["worker"]["pid"], []).append(r["worker"]["models_loaded"])
    assert 1 <= len(loads) <= 2 and all(sum(v) <= n_models for v in loads.values())
    reused = [r for r in result.records if r["status"] == "ok" and r["worker"]["models_loaded"] == 0]
    assert len(reused) >= TWINS + 1 - len(loads)
    _same_results(tmp_path / "out", serial_run[0])


def test_runs_on_a_distributed_local_cluster(folder, serial_run, tmp_path):
    distributed = pytest.importorskip("distributed", reason="distributed is a declared dependency")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        result = run_batch([folder[0]], tmp_path / "out", BatchSettings(material="MoS2"), scheduler=client,
                           report=False)
        workers = {r["worker"]["pid"] for r in result.records if "worker" in r}
    assert result.analysed == TWINS + 3 and len(workers) == 2
    _same_results(tmp_path / "out", serial_run[0])
    info = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert info["executor"]["kind"] == "dask" and info["executor"]["workers"] == 2


def test_inputs_from_globs_and_folders_keep_the_output_folder_out(folder, tmp_path):
    inp = tmp_path / "in"
    shutil.copytree(folder[0], inp)
    (inp / "results").mkdir()
    np.save(inp / "results" / "heatmaps.npy", np.zeros((4, 4)))  # an output folder inside the inputs
    files = collect_inputs([inp], exclude=[inp / "results"])
    assert [f.rel for f in files] == ["day1/scan_0.tif", "day1/scan_2.tif", "day1/spectrum.npy", "day2/scan_1.tif",
                                      "day2/scan_3.tif", "day2/series.npy", "day2/truncated.tif"]
    globbed = collect_inputs([str(inp / "day*" / "scan_*.tif")])
    assert [f.rel for f in globbed] == ["day1/scan_0.tif", "day1/scan_2.tif", "day2/scan_1.tif", "day2/scan_3.tif"]
    assert [f.rel for f in collect_inputs([inp / "day1" / "scan_0.tif", inp / "day2"])][:2] == \
        ["day1/scan_0.tif", "day2/scan_1.tif"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        collect_inputs([inp / "missing"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        collect_inputs([str(inp / "*.dm4")])
    # a TIA pair is one input, read through its .ser
    tia = tmp_path / "tia"
    tia.mkdir()
    for name in ("a.emi", "a_1.ser", "b.emi"):
        (tia / name).write_bytes(b"x")
    assert [f.rel for f in collect_inputs([tia])] == ["a_1.ser", "b.emi"]


def test_bad_settings_stop_before_any_file(folder, tmp_path, capsys):
    assert main(["batch", str(folder[0]), "--out", str(tmp_path / "o"), "--heatmaps", "sliding-window"]) == 2
    assert "material" in capsys.readouterr().err
    assert main(["batch", str(folder[0]), "--out", str(tmp_path / "o"), "--material", "MoS2",
                 "--cell-model", "no-such-model"]) == 2
    assert not (tmp_path / "o").exists()
    assert main(["batch", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2


def test_batch_takes_every_option_of_analyze():
    """Options added to `analyze` must be added to `batch` too (and passed on by BatchSettings)."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    options = {name: {o for a in sub.choices[name]._actions for o in a.option_strings}
               for name in ("analyze", "batch")}
    assert options["analyze"] - {"-h", "--help"} <= options["batch"]


def test_a_lazy_stack_is_analysed_frame_by_frame_as_a_whole_one(tmp_path):
    frames = np.stack([_twin(20 + t, (160, 160)).image for t in range(3)]).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", frames, imagej=True, resolution=(1 / 0.012, 1 / 0.012),
                     metadata={"unit": "nm", "axes": "TYX"})
    lazy = read_stem_file(tmp_path / "s.tif", lazy=True)[0]
    assert type(lazy.data).__module__.startswith("dask")
    eager = read_stem_file(tmp_path / "s.tif")[0]
    assert isinstance(eager.data, np.ndarray) and eager.pixel_size == lazy.pixel_size
    settings = BatchSettings(material="MoS2", classifier="physics")
    from napari_stem_defects.analyze import analyze_image

    by_frame = analyze_frames(lazy, settings)
    whole = analyze_image(eager, **settings.analysis_kwargs())
    pd.testing.assert_frame_equal(by_frame.sites_table(), whole.sites_table())
    pd.testing.assert_frame_equal(by_frame.cells_table(), whole.cells_table())
    assert by_frame.summary() == whole.summary()
    assert all(r.detection_map is None for r in by_frame.columns)  # dropped frame by frame


def _chromium() -> str:
    """The headless browser: $NSD_CHROMIUM, or chromium / google-chrome on the PATH.

    Skips only where scripts/setup_env.sh recorded that it could not install Debian's chromium
    (it lists what it could not install in <venv>/missing-debian-packages); fails otherwise.
    """
    names = [os.environ.get("NSD_CHROMIUM") or "", "chromium", "chromium-browser", "google-chrome",
             "google-chrome-stable"]
    for name in names:
        if name and shutil.which(name):
            return shutil.which(name)
    marker = Path(sys.prefix) / "missing-debian-packages"
    if marker.is_file() and "chromium" in marker.read_text().split():
        pytest.skip("chromium is missing and scripts/setup_env.sh could not install it here (not root); "
                    "`sudo apt-get install chromium` to run this test")
    pytest.fail("no chromium found to render report.html: install Debian's `chromium` package "
                "(scripts/setup_env.sh does as root) or set NSD_CHROMIUM to a Chrome/Chromium binary")


def test_report_renders_in_headless_chromium(serial_run, tmp_path):
    """The report opens offline in a real browser, every embedded figure decodes; a screenshot is written
    ($NSD_SCREENSHOT_DIR, else the test's temporary folder) for a person to look at."""
    from PIL import Image

    browser = _chromium()
    report = serial_run[0] / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=10000", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    import re

    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[-2000:]
    images = int(re.search(r'data-images="(\d+)"', body.group(0)).group(1))
    decoded = int(re.search(r'data-images-decoded="(\d+)"', body.group(0)).group(1))
    assert images >= 5 + 3 * TWINS and decoded == images
    shots = Path(os.environ.get("NSD_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "batch_report.png"
    subprocess.run([browser, *flags, "--window-size=1366,3000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    picture = np.asarray(Image.open(shot).convert("L"), float)
    assert picture.shape == (3000, 1366)
    assert picture.std() > 20 and (picture < 60).mean() > 0.01  # text, tables and figures drawn, not blank
    print(f"report screenshot: {shot}")


def test_heatmaps_in_a_batch_and_stale_files_removed_when_redone_without(folder, tmp_path):
    one = [folder[0] / "day1" / "scan_0.tif"]
    out = tmp_path / "out"
    result = run_batch(one, out, BatchSettings(material="MoS2", heatmaps="sliding-window"), workers=1)
    assert result.failed == 0
    row = _dataset(out).iloc[0]
    regions = pd.read_csv(out / "scan_0.tif" / "regions.csv")
    assert int(row["regions_defect"]) == int((regions["class"] == "defect").sum())
    assert (out / "scan_0.tif" / "heatmaps.npy").is_file() and (out / "scan_0.tif" / "figures" / "heatmaps.png").is_file()
    assert "Defect heatmaps" in (out / "report.html").read_text()
    info = json.loads((out / "batch.json").read_text())
    assert info["models"]["heatmaps"]["sha256"] and info["settings"]["heatmaps"] == "sliding-window"
    # other settings: done again, and the heatmap files of the earlier run do not linger
    again = run_batch(one, out, BatchSettings(material="MoS2"), workers=1, report=False)
    assert again.analysed == 1
    assert not (out / "scan_0.tif" / "heatmaps.npy").exists() and not (out / "scan_0.tif" / "regions.csv").exists()
    assert not (out / "scan_0.tif" / "figures" / "heatmaps.png").exists()
    assert pd.isna(_dataset(out).iloc[0]["regions_defect"])


def _spawned_workers() -> list:
    """Live worker processes spawned by this test process (multiprocessing's spawn_main)."""
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in p for p in child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


def test_a_worker_process_killed_mid_batch_does_not_lose_files(folder, serial_run, tmp_path):
    """SIGKILL one worker process (as the kernel's out-of-memory killer would): the files it held are run again
    one at a time in a fresh pool, and the batch ends with every file done."""
    import threading

    killed = []

    def progress(p):
        if p.kind == "finished" and not killed:
            workers = _spawned_workers()
            if workers:
                workers[0].send_signal(signal.SIGKILL)
                killed.append(workers[0].pid)

    result = {}
    thread = threading.Thread(target=lambda: result.update(r=run_batch(
        [folder[0]], tmp_path / "out", BatchSettings(material="MoS2"), workers=2, report=False, progress=progress)))
    thread.start()
    thread.join(timeout=600)
    assert killed and "r" in result
    assert result["r"].failed == 2 and len(result["r"].records) == TWINS + 3  # only the two bad files
    _same_results(tmp_path / "out", serial_run[0])


def test_cancel_stops_the_worker_processes_and_a_rerun_finishes(folder, serial_run, tmp_path):
    finished = []
    result = run_batch([folder[0]], tmp_path / "out", BatchSettings(material="MoS2"), workers=2, report=False,
                       progress=lambda p: finished.append(p.rel) if p.kind == "finished" else None,
                       cancel=lambda: len(finished) >= 1)
    assert result.cancelled and 1 <= result.analysed < TWINS + 3
    assert not _spawned_workers()
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["status"] == "cancelled"
    # a file a worker finished while the batch was being cancelled is recorded too, and kept
    recorded = len(list((tmp_path / "out").glob(f"**/{RECORD_NAME}")))
    assert result.analysed <= recorded < TWINS + 3
    rest = run_batch([folder[0]], tmp_path / "out", BatchSettings(material="MoS2"), workers=1, report=False)
    assert rest.skipped == recorded and rest.analysed == TWINS + 3 - recorded
    _same_results(tmp_path / "out", serial_run[0])
