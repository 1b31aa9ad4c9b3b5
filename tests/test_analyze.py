"""`napari-stem-defects analyze` and the analysis API write what the README promises."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_stem_defects.analyze import analyze_image, write_analysis
from napari_stem_defects.cli import main
from napari_stem_defects.columns import SITES_CSV_COLUMNS
from napari_stem_defects.columns.evaluate import score_sites
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.simulate import ImagingParams, simulate_twin


def _twin(seed=1, shape=(256, 256)):
    return simulate_twin("MoS2", shape=shape, pixel_size=0.12, rotation_deg=None, defects={"V_M": 0.03, "V_X2": 0.03},
                         imaging=ImagingParams(dose=1e6), seed=seed)


def test_cli_analyze_writes_sites_with_ground_truth_quality(tmp_path):
    twin = _twin()
    out = tmp_path / "twin"
    assert main(["simulate", "--material", "MoS2", "--shape", "256", "256", "--pixel-size", "0.12",
                 "--dose", "1e6", "--defect", "V_M=0.03", "--seed", "4", "--out", str(out)]) == 0
    assert main(["analyze", str(out / "image.tif"), "--material", "MoS2", "--out", str(tmp_path / "ana")]) == 0
    sites = pd.read_csv(tmp_path / "ana" / "sites.csv", keep_default_na=False)
    assert list(sites.columns) == [*SITES_CSV_COLUMNS, "y_pm", "x_pm", "defect", "domain", "phase", "boundary"]
    truth = pd.read_csv(out / "sites.csv", keep_default_na=False)
    nn = twin.material.a / np.sqrt(3) / 0.12
    scores = score_sites(sites, truth, nn, 0.12)
    assert scores.f1 >= 0.99 and scores.species_accuracy >= 0.98
    # positions in pm follow the file's calibration (0.12 Å = 12 pm per pixel)
    np.testing.assert_allclose(sites["x_pm"], sites["x_px"] * 12.0, rtol=1e-3)
    info = json.loads((tmp_path / "ana" / "analysis.json").read_text())
    assert info["pixel_size_A"] == [0.12, 0.12] or np.allclose(info["pixel_size_A"], 0.12, rtol=1e-5)
    assert info["frames"][0]["n_sites"] == len(sites)
    assert set(info["frames"][0]["species_fits"]) == {"M", "X"}
    # site defects follow the cells and match the ground truth's per-site labels
    for label in ("V_M", "V_X1", "V_X2"):
        assert (sites["defect"] == label).sum() == (truth["defect"] == label).sum()
    cells = pd.read_csv(tmp_path / "ana" / "cells.csv", keep_default_na=False)
    assert len(cells) == (sites["sublattice"] == "M").sum()
    assert {"cell_id", "m_site_id", "x_site_id", "class", "confidence", "p_perfect", "p_V_M"} <= set(cells.columns)
    summary = json.loads((tmp_path / "ana" / "summary.json").read_text())
    total = summary["total"]
    assert total["counts"]["V_M"] == (sites["defect"] == "V_M").sum()
    area_cm2 = total["area_nm2"] * 1e-14
    assert total["concentration_cm2"]["V_M"] == pytest.approx(total["counts"]["V_M"] / area_cm2)


def test_cli_analyze_bad_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "flat.tif"
    tifffile.imwrite(bad, np.full((64, 64), 3, np.uint16))
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "constant" in capsys.readouterr().err
    assert not (tmp_path / "o" / "sites.csv").exists()


def test_stack_gets_a_frame_column_and_pixel_units_without_calibration(tmp_path):
    frames = np.stack([_twin(seed=s, shape=(192, 192)).image for s in (1, 2, 3)])
    calls = []
    analysis = analyze_image(StemImage(frames, None, "stack", {}), material="MoS2",
                             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    paths = write_analysis(analysis, tmp_path)
    table = pd.read_csv(paths["sites"], keep_default_na=False)
    assert sorted(table["frame"].unique()) == [0, 1, 2]
    assert (table["y_pm"] == "").all()  # no calibration, no pm
