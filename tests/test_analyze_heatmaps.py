"""`napari-stem-defects analyze --heatmaps`: the maps, their sidecar, the regions and the summary entry.

These tests check the files' structure and their agreement with each other; the
maps' accuracy is tested in ``test_heatmaps.py`` and measured in ``benchmarks/bench_heatmaps.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.analyze import HEATMAP_CHOICES, analyze_image, write_analysis
from napari_stem_defects.cli import build_parser, main
from napari_stem_defects.columns import SITES_CSV_COLUMNS
from napari_stem_defects.heatmaps.classes import HEATMAP_CLASSES
from napari_stem_defects.heatmaps.engines import ENGINES, binary_entropy
from napari_stem_defects.heatmaps.regions import MIN_AREA_NN2, REGION_COLUMNS, find_regions
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.simulate import ImagingParams, simulate_twin

pytest.importorskip("torch")

SHAPE = (256, 240)
HEATMAP_FILES = ("heatmaps.npy", "uncertainty.npy", "heatmaps.json", "regions.csv")


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory):
    """A small calibrated MoS2 twin with vacancies, written by ``simulate``."""
    out = tmp_path_factory.mktemp("twin")
    assert main(["simulate", "--material", "MoS2", "--shape", *map(str, SHAPE), "--pixel-size", "0.12",
                 "--dose", "1e6", "--defect", "V_M=0.05", "--defect", "V_X2=0.05", "--seed", "5",
                 "--out", str(out)]) == 0
    return out / "image.tif"


def test_parser_offers_every_engine():
    ana = build_parser()._subparsers._group_actions[0].choices["analyze"]
    option = {a.dest: a for a in ana._actions}
    assert tuple(option["heatmaps"].choices) == HEATMAP_CHOICES == ("none", *ENGINES, "cells")
    assert option["heatmaps"].default == "none" and option["heatmap_threshold"].default == 0.5
    assert option["heatmap_window"].default is None and option["heatmap_min_area"].default == MIN_AREA_NN2


@pytest.mark.parametrize("engine", ["sliding-window", "attention-unet", "cells"])
def test_cli_analyze_writes_heatmaps_regions_and_summary(engine, twin_file, tmp_path, capsys):
    out = tmp_path / "ana"
    assert main(["analyze", str(twin_file), "--material", "MoS2", "--heatmaps", engine,
                 "--heatmap-threshold", "0.4", "--out", str(out)]) == 0
    assert f"heatmaps ({engine}" in capsys.readouterr().out

    maps = np.load(out / "heatmaps.npy")
    assert maps.shape == (len(HEATMAP_CLASSES), *SHAPE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    unc = np.load(out / "uncertainty.npy")
    assert unc.shape == SHAPE and unc.dtype == np.float32
    np.testing.assert_allclose(unc, binary_entropy(maps[0]), atol=1e-6)

    info = json.loads((out / "heatmaps.json").read_text())
    assert info["classes"] == list(HEATMAP_CLASSES) and info["engine"] == engine
    assert info["shape"] == [5, *SHAPE] and info["axes"] == "cyx" and info["dtype"] == "float32"
    np.testing.assert_allclose(info["pixel_size"], [0.12, 0.12], rtol=1e-5)
    assert info["units"] == "angstrom" and info["threshold"] == 0.4
    assert info["uncertainty_file"] == "uncertainty.npy" and info["maps_file"] == "heatmaps.npy"
    if engine == "sliding-window":  # nn ~ 15 px: the default 64 px window, windows every 8 px
        assert info["window_px"] == 64.0 and info["stride_px"] == 8.0
    else:
        assert info["window_px"] is None and info["stride_px"] is None

    regions = pd.read_csv(out / "regions.csv", keep_default_na=False)
    assert list(regions.columns) == list(REGION_COLUMNS)
    # the table is that of the saved maps at the threshold without the specks under MIN_AREA_NN2 nn^2,
    # areas in nm^2 at 0.12 Å per pixel
    nn_px = json.loads((out / "analysis.json").read_text())["frames"][0]["nn_px"]
    assert info["min_area_nn2"] == MIN_AREA_NN2 and info["min_area_px"] == [int(np.ceil(MIN_AREA_NN2 * nn_px**2))]
    expected = find_regions(maps, 0.4, pixel_size=info["pixel_size"], min_area_px=info["min_area_px"][0]).table
    assert (expected["area_px"] >= info["min_area_px"][0]).all()
    assert regions["region_id"].tolist() == expected["region_id"].tolist()
    assert regions["class"].tolist() == expected["class"].tolist()
    np.testing.assert_array_equal(regions["area_px"], expected["area_px"])
    if len(regions):
        np.testing.assert_allclose(regions["area_nm2"].astype(float), regions["area_px"] * 0.12**2 / 100, rtol=1e-3)
        assert (regions["max_probability"].astype(float) >= 0.4).all()

    summary = json.loads((out / "summary.json").read_text())
    assert {"pixel_size_A", "material", "total", "frames"} <= set(summary)
    entry = summary["heatmaps"]
    assert entry["engine"] == engine and entry["threshold"] == 0.4 and entry["min_area_nn2"] == MIN_AREA_NN2
    assert entry["window_px"] == info["window_px"] and entry["stride_px"] == info["stride_px"]
    counts = regions["class"].value_counts()
    assert entry["region_counts"] == {c: int(counts.get(c, 0)) for c in HEATMAP_CLASSES}
    assert entry["frames"] == [entry["region_counts"]]
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["settings"]["heatmaps"]["engine"] == engine
    # the other files keep their columns
    sites = pd.read_csv(out / "sites.csv", keep_default_na=False)
    assert list(sites.columns) == [*SITES_CSV_COLUMNS, "y_pm", "x_pm", "defect", "domain", "phase", "boundary"]


def test_cells_heatmaps_give_the_cells_answer_and_find_the_true_defects(twin_file):
    """The 'cells' engine draws its maps from the analysis's cells: every region holds a cell that puts a
    defect of the region's family on a site inside it, every such confident cell is under a region, and
    the twin's true vacancies are found."""
    from napari_stem_defects.cells.site_labels import site_defects
    from napari_stem_defects.heatmaps.classes import SITE_FAMILY
    from napari_stem_defects.io.rsciio_reader import read_stem_file

    image = read_stem_file(twin_file)[0]
    analysis = analyze_image(image, material="MoS2", heatmaps="cells")
    sites, cells = analysis.columns[0].sites, analysis.cells[0]
    labels = pd.Series(site_defects(sites, cells), index=sites.index)
    table = analysis.regions[0].table
    assert analysis.heatmaps[0].engine == "cells" and len(table)
    yx = sites[["y_px", "x_px"]].to_numpy(float)
    for family in ("vacancy", "defect"):
        members = [d for d, f in SITE_FAMILY.items() if f == family or family == "defect"]
        flagged = labels.isin(members).to_numpy()
        boxes = table[table["class"] == family]
        inside = np.zeros((len(boxes), len(yx)), bool)
        for k, b in enumerate(boxes.itertuples(index=False)):
            inside[k] = ((yx[:, 0] >= b.bbox_y0_px) & (yx[:, 0] < b.bbox_y1_px)
                         & (yx[:, 1] >= b.bbox_x0_px) & (yx[:, 1] < b.bbox_x1_px))
        assert (inside[:, flagged].any(axis=1)).all(), family  # no region without a defective cell
        confident = flagged & (sites["site_id"].map(_confidence_of(cells)).fillna(0).to_numpy() > 0.6)
        assert inside[:, confident].any(axis=0).all(), family  # no confident defect without a region
    truth = pd.read_csv(twin_file.parent / "sites.csv", keep_default_na=False)
    true_yx = truth.loc[truth["defect"].isin(["V_M", "V_X2"]), ["y_px", "x_px"]].to_numpy(float)
    vac = table[table["class"] == "vacancy"]
    found = [((vac["bbox_y0_px"] <= y) & (y < vac["bbox_y1_px"]) & (vac["bbox_x0_px"] <= x)
              & (x < vac["bbox_x1_px"])).any() for y, x in true_yx]
    assert len(true_yx) >= 6 and np.mean(found) >= 0.9, np.mean(found)


def _confidence_of(cells: pd.DataFrame) -> pd.Series:
    """Each site's cell confidence (metal and X2 sites of complete cells)."""
    parts = [cells[[column, "confidence"]].rename(columns={column: "site_id"}) for column in ("m_site_id", "x_site_id")]
    table = pd.concat(parts)
    return table[table["site_id"] >= 0].groupby("site_id")["confidence"].max()


def test_without_heatmaps_no_heatmap_files(twin_file, tmp_path):
    out = tmp_path / "ana"
    assert main(["analyze", str(twin_file), "--material", "MoS2", "--out", str(out)]) == 0
    assert (out / "sites.csv").exists() and (out / "summary.json").exists()
    for name in HEATMAP_FILES:
        assert not (out / name).exists(), name
    assert "heatmaps" not in json.loads((out / "summary.json").read_text())
    assert "heatmaps" not in json.loads((out / "analysis.json").read_text())["settings"]
    out2 = tmp_path / "none"
    assert main(["analyze", str(twin_file), "--material", "MoS2", "--heatmaps", "none", "--out", str(out2)]) == 0
    assert not any((out2 / name).exists() for name in HEATMAP_FILES)


@pytest.mark.parametrize(("args", "message"), [
    (["--material", "MoS2", "--heatmaps", "sliding-window", "--heatmap-window", "300"], "trained on"),
    (["--heatmaps", "sliding-window"], "material"),
    (["--material", "MoS2", "--heatmaps", "attention-unet", "--heatmap-threshold", "0"], "threshold"),
    (["--material", "MoS2", "--heatmaps", "sliding-window", "--heatmap-window", "0"], "window"),
    (["--material", "MoS2", "--heatmaps", "sliding-window", "--heatmap-min-area", "-1"], "smallest"),
])
def test_bad_heatmap_settings_give_a_message_and_status_2(args, message, twin_file, tmp_path, capsys):
    out = tmp_path / "ana"
    assert main(["analyze", str(twin_file), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-stem-defects analyze: error:") and message in err
    assert "Traceback" not in err
    assert not (out / "sites.csv").exists() and not (out / "heatmaps.npy").exists()


def test_stack_heatmaps_have_a_frame_axis(tmp_path):
    frames = np.stack([simulate_twin("MoS2", shape=(128, 128), pixel_size=0.12, rotation_deg=None,
                                     defects={"V_M": 0.05}, imaging=ImagingParams(dose=1e6), seed=s).image
                       for s in (1, 2)])
    analysis = analyze_image(StemImage(frames, (0.12, 0.12), "stack", {}), material="MoS2",
                             heatmaps="sliding-window", heatmap_threshold=0.5)
    paths = write_analysis(analysis, tmp_path)
    maps = np.load(paths["heatmaps"])
    assert maps.shape == (2, 5, 128, 128) and maps.dtype == np.float32
    assert np.load(paths["uncertainty"]).shape == (2, 128, 128)
    info = json.loads(paths["heatmaps_info"].read_text())
    assert info["axes"] == "tcyx" and info["uncertainty_axes"] == "tyx" and info["shape"] == [2, 5, 128, 128]
    regions = pd.read_csv(paths["regions"], keep_default_na=False)
    assert list(regions.columns) == ["frame", *REGION_COLUMNS]
    entry = json.loads(paths["summary"].read_text())["heatmaps"]
    assert len(entry["frames"]) == 2
    assert entry["region_counts"] == {c: sum(f[c] for f in entry["frames"]) for c in HEATMAP_CLASSES}
    assert sum(entry["region_counts"].values()) == len(regions)
