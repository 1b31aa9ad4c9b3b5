"""The multislice validation library script on a tiny setting: a stated dopant reaches the truth and the index."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("abtem")

from napari_stem_defects.simulate.microscope import MicroscopeSettings  # noqa: E402

#: 60 kV, small convergence and outer angle: few plane waves and a coarse grid (seconds per image).
COARSE = MicroscopeSettings(energy_kV=60, convergence_mrad=20, detector_inner_mrad=45, detector_outer_mrad=120)


def test_library_builds_a_doped_material_into_its_own_folder_and_resumes(tmp_path, load_script, monkeypatch, capsys,
                                                                        coarse_potential_grid):
    lib = load_script("build_multislice_library")
    monkeypatch.setitem(lib.SETTINGS, "tiny", dict(microscope=COARSE, pixel_size=0.16, shape=(72, 72)))
    monkeypatch.setattr(lib, "DOSES", (1e5,))
    monkeypatch.setattr(lib, "DOPED", (0.3, 0.3))  # a few dopant cells even in a 12 Å field
    assert "80kV" in lib.SETTINGS and lib.SETTINGS["80kV"]["microscope"].detector_inner_mrad == 70
    argv = ["--out", str(tmp_path), "--settings", "tiny", "--materials", "WSe2+Mn"]
    monkeypatch.setattr("sys.argv", ["build_multislice_library.py", *argv])
    lib.main()
    index = pd.read_csv(tmp_path / "index.csv", keep_default_na=False)
    assert len(index) == 1
    row = index.iloc[0]
    assert (row["setting"], row["material"], row["dopant"]) == ("tiny", "WSe2+Mn", "Mn") and row["seconds"] > 0
    assert json.loads((tmp_path / "library.json").read_text())["materials"] == ["WSe2+Mn"]
    sites = pd.read_csv(tmp_path / row["path"] / "sites.csv", keep_default_na=False)
    doped = sites[sites["defect"] == "dopant_M"]
    assert len(doped) >= 1 and set(doped["species"]) == {"Mn"} and set(doped["sublattice"]) == {"M"}
    assert (tmp_path / "tiny" / "WSe2+Mn" / "clean.npy").is_file()
    # resumable: a second run skips what is written
    lib.main()
    assert "WSe2+Mn: already written, skipped" in capsys.readouterr().out


def test_dopant_set_and_its_defect_mix(load_script):
    import numpy as np

    lib = load_script("build_multislice_library")
    assert {"WSe2+V", "WSe2+Cr", "WSe2+Mn", "WSe2+Co", "MoS2+V", "MoS2+Cr"} == set(lib.DOPANT_MATERIALS)
    doped = lib.defect_mix("WSe2+Co", np.random.default_rng(0))
    plain = lib.defect_mix("WSe2", np.random.default_rng(0))
    assert set(doped) == set(plain) and "dopant_M" in doped
    assert lib.DOPED[0] <= doped["dopant_M"] <= lib.DOPED[1] and plain["dopant_M"] <= lib.PLAIN[1]
    # the undoped materials draw the same mix as before (the existing library stays reproducible)
    assert all(doped[c] == plain[c] for c in doped if c != "dopant_M")
