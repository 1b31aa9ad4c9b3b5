"""The command line writes what the README promises."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from napari_stem_defects.cli import main
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.simulate import CELL_COLUMNS, SITE_COLUMNS


def test_simulate_writes_image_with_calibration_and_exact_labels(tmp_path):
    out = tmp_path / "twin"
    rc = main(["simulate", "--material", "WSe2", "--shape", "200", "240", "--pixel-size", "0.1",
               "--defect", "V_X1=0.05", "--defect", "V_M=0.02", "--seed", "3", "--out", str(out)])
    assert rc == 0
    sites = pd.read_csv(out / "sites.csv", keep_default_na=False)
    cells = pd.read_csv(out / "cells.csv", keep_default_na=False)
    assert list(sites.columns) == list(SITE_COLUMNS) and list(cells.columns) == list(CELL_COLUMNS)
    meta = json.loads((out / "twin.json").read_text())
    assert meta["material"] == "WSe2" and meta["seed"] == 3
    assert meta["counts"]["cell_classes"]["V_X1"] == (cells["class"] == "V_X1").sum() > 0
    assert set(sites.loc[sites.defect == "V_M", "species"]) == {""}  # empty site survives the CSV
    # the image reopens through the plugin's reader at the simulated pixel size
    (img,) = read_stem_file(out / "image.tif")
    assert img.data.shape == (200, 240)
    np.testing.assert_allclose(img.pixel_size, (0.1, 0.1), rtol=1e-5)


def test_simulate_preset_is_reproducible(tmp_path):
    assert main(["simulate", "--preset", "wse2_low_dose", "--out", str(tmp_path / "a")]) == 0
    assert main(["simulate", "--preset", "wse2_low_dose", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "sites.csv").read_text() == (tmp_path / "b" / "sites.csv").read_text()


def test_bad_input_gives_a_message_and_status_2(tmp_path, capsys):
    assert main(["simulate", "--defect", "V_S=0.1", "--out", str(tmp_path)]) == 2
    assert "unknown defect types" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "missing.dm3"), "--material", "MoS2"]) == 2
    assert "missing.dm3" in capsys.readouterr().err


def test_calibrate_exit_status_says_whether_the_file_agrees(tmp_path, shared_data, capsys):
    main(["simulate", "--material", "MoS2", "--pixel-size", "0.12", "--out", str(tmp_path), "--seed", "1"])
    assert main(["calibrate", str(tmp_path / "image.tif"), "--material", "MoS2"]) == 0
    assert "agrees" in capsys.readouterr().out
    wsse = shared_data / "real" / "WSSe_partial_SuperScan_HAADF_12_corrected.tif"
    assert main(["calibrate", str(wsse), "--material", "WSSe", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["relative_difference"] > 0.08


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "napari_stem_defects.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "simulate" in proc.stdout and "calibrate" in proc.stdout
