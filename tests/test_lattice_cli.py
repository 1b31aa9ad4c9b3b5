"""``analyze --strain`` writes the lattice columns and files; without it sites.csv keeps its columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_stem_defects.cli import main
from napari_stem_defects.lattice.analysis import LATTICE_SITE_COLUMNS
from napari_stem_defects.lattice.profiles import PROFILE_COLUMNS


def test_cli_analyze_strain_writes_columns_profiles_and_class_averages(tmp_path):
    out = tmp_path / "twin"
    assert main(["simulate", "--material", "MoS2", "--shape", "256", "256", "--pixel-size", "0.12",
                 "--defect", "V_M=0.04", "--seed", "5", "--out", str(out)]) == 0
    plain, strained = tmp_path / "plain", tmp_path / "strain"
    assert main(["analyze", str(out / "image.tif"), "--material", "MoS2", "--classifier", "physics",
                 "--out", str(plain)]) == 0
    assert main(["analyze", str(out / "image.tif"), "--material", "MoS2", "--classifier", "physics",
                 "--strain", "--out", str(strained)]) == 0
    before = pd.read_csv(plain / "sites.csv")
    after = pd.read_csv(strained / "sites.csv")
    assert list(after.columns) == list(before.columns) + list(LATTICE_SITE_COLUMNS)  # added, never renamed
    assert not (plain / "defect_profiles.csv").exists()
    metal = after[(after["sublattice"] == "M") & after["detected"]]
    assert metal["exx"].notna().mean() > 0.9
    assert abs(metal["exx"].median()) < 0.003  # an unstrained twin against its own lattice
    maps = np.load(strained / "strain_maps.npy")
    assert maps.shape == (4, 256, 256) and np.isfinite(maps).any()
    profiles = pd.read_csv(strained / "defect_profiles.csv")
    assert list(profiles.columns) == list(PROFILE_COLUMNS)
    assert "V_M" in set(profiles["class"])
    averages = np.load(strained / "class_averages.npz")
    assert "V_M" in averages.files and int(averages["V_M__n"]) >= 2
    assert (strained / "class_averages.png").stat().st_size > 1000
    assert pd.read_csv(strained / "class_average_columns.csv")["radial_err_pm"].notna().any()


def test_cli_material_reference_needs_a_material(tmp_path, capsys):
    out = tmp_path / "twin"
    assert main(["simulate", "--material", "MoS2", "--shape", "128", "128", "--seed", "1", "--out", str(out)]) == 0
    code = main(["analyze", str(out / "image.tif"), "--strain", "--strain-reference", "material",
                 "--pixel-size", "0.12", "--out", str(tmp_path / "a")])
    assert code == 2
    assert "lattice constant" in capsys.readouterr().err


def test_batch_strain_writes_the_lattice_files_and_a_gallery_in_the_report(tmp_path):
    twin = tmp_path / "in"
    assert main(["simulate", "--material", "MoS2", "--shape", "192", "192", "--pixel-size", "0.12",
                 "--defect", "V_M=0.05", "--seed", "7", "--out", str(twin)]) == 0
    out = tmp_path / "batch"
    assert main(["batch", str(twin / "image.tif"), "--out", str(out), "--material", "MoS2", "--classifier",
                 "physics", "--strain", "--workers", "1"]) == 0
    folder = next(p.parent for p in out.rglob("defect_profiles.csv"))
    assert {"exx", "cross_section_A2"} <= set(pd.read_csv(folder / "sites.csv").columns)
    assert (folder / "class_averages.png").is_file()
    assert "Class-averaged defects" in (out / "report.html").read_text()
