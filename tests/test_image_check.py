"""The image check: images that are not the stated 2H material are refused (or flagged with --force)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.analyze import analyze_image
from napari_stem_defects.cli import main
from napari_stem_defects.columns import columns_from_map, compute_detection_map
from napari_stem_defects.columns.pipeline import lattice_spacing
from napari_stem_defects.image_check import (
    ImageCheckError,
    SublatticeLevels,
    check_composition,
    check_honeycomb,
    check_image,
    check_lattice,
    ratio_fits,
)
from napari_stem_defects.image_check_sites import RATIO_TOLERANCE
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.cross_sections import metal_x2_ratio
from napari_stem_defects.simulate.export import write_twin
from napari_stem_defects.simulate.imaging_conditions import calibrated_imaging
from napari_stem_defects.simulate.microscope import MicroscopeSettings

#: Every TMD image in shared data with the material it shows (W(S,Te)2: an alloy of unstated composition).
REAL_TMD = [
    ("MoS2_Se-implanted_60kV_HAADF.dm3", "MoS2+Se"),
    ("MoSe2_80K_small_region.tif", "MoSe2"),
    ("MoSe2_GB_mono.tif", "MoSe2"),
    ("MoTe2_sample_1.jpg", "MoTe2"),
    ("MoWSSe_3D_Stack_align2_original.png", "MoWSSe"),
    ("WS2Te2_alloy_0040_1_Cut.tif", "W(S,Te)2"),
    ("WSSe_partial_SuperScan_HAADF_12_corrected.tif", "WSSe"),
    ("WSSe_partial_SuperScan_HAADF_3_corrected.tif", "WSSe"),
    ("WSe2_full_SuperScan_HAADF_14_corrected.tif", "WSe2"),
]


@pytest.fixture(scope="module")
def mos2_twin():
    return simulate_twin("MoS2", shape=(384, 384), pixel_size=0.12, rotation_deg=11.0, seed=21,
                         defects={"V_X1": 0.03, "V_M": 0.01}, imaging=ImagingParams(dose=1e5))


def _check(image, material, pixel_size, source="file", microscope=None):
    """The check as analyze runs it: lattice, columns of the first frame, then every finding."""
    img = np.asarray(image, dtype=np.float32)
    lattice, nn = lattice_spacing(img, material, pixel_size)
    dmap = compute_detection_map(img, material=material, pixel_size=pixel_size, lattice=(lattice, nn))
    result = columns_from_map(img, dmap, material=material, pixel_size=pixel_size)
    return check_image(img, lattice, result.sites, nn, material, pixel_size, pixel_size_source=source,
                       fitted=(result.a1, result.a2), microscope=microscope)


@pytest.mark.parametrize("name", ["16_STOimage_1.ser", "Acquisition_18.emd"])
def test_square_lattice_files_are_refused_with_what_they_are(shared_data, tmp_path, capsys, name):
    out = tmp_path / "out"
    assert main(["analyze", str(shared_data / "formats" / name), "--material", "MoS2", "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert "square lattice" in err and "not a 2H-MX2 monolayer" in err and "--force" in err
    assert not out.exists() or not any(out.iterdir())  # no statistics, nothing at all


def test_force_analyses_anyway_and_every_output_carries_the_warning(shared_data, tmp_path):
    out = tmp_path / "out"
    status = main(["analyze", str(shared_data / "formats" / "16_STOimage_1.ser"), "--material", "MoS2",
                   "--out", str(out), "--classifier", "physics", "--force"])
    assert status == 0
    for name in ("summary.json", "analysis.json"):
        info = json.loads((out / name).read_text())
        assert any("square lattice" in w for w in info["warnings"])
        assert info["image_check"]["ok"] is False and info["image_check"]["forced"] is True


def test_nanoparticles_without_a_lattice_are_refused(shared_data, tmp_path, capsys):
    path = shared_data / "formats" / "example_Au_nanoparticle.emd"
    assert main(["analyze", str(path), "--material", "MoS2", "--out", str(tmp_path / "o")]) == 4
    assert "No lattice of atom columns found" in capsys.readouterr().err


@pytest.mark.parametrize("wrong", ["WSe2", "MoTe2"])
def test_a_mos2_twin_analysed_as_another_material_is_refused_and_named(mos2_twin, tmp_path, capsys, wrong):
    write_twin(mos2_twin, tmp_path / "twin")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "twin" / "image.tif"), "--material", wrong, "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert "Is this MoS2?" in err and wrong in err
    assert not (out / "summary.json").exists()


def test_right_material_passes_every_check_on_the_twin(mos2_twin):
    check = _check(mos2_twin.image, "MoS2", (0.12, 0.12))
    assert check.ok and [f.name for f in check.findings] == ["lattice", "honeycomb", "composition", "spacing"]
    assert check.pixel_size == (0.12, 0.12) and check.pixel_size_source == "file" and not check.warnings
    # goodness of fit: the hexagon explains the spectrum, the hollow is dark, the ratio is MoS2's
    metrics = {f.name: f.metrics for f in check.findings}
    assert metrics["lattice"]["explained_power"] > 0.95
    assert metrics["honeycomb"]["hollow_contrast"] > 0.2
    assert metrics["composition"]["bright_over_dim"] == pytest.approx(42**1.7 / (2 * 16**1.7), rel=0.1)


@pytest.mark.parametrize("factor", [1.15, 1 / 1.15])
def test_a_file_pixel_size_15_percent_off_is_replaced_by_the_lattice_with_a_warning(mos2_twin, tmp_path, factor):
    stored = 0.12 * factor
    image = StemImage(mos2_twin.image, (stored, stored), "twin", {})
    analysis = analyze_image(image, material="MoS2", classifier="physics")
    assert analysis.check.ok and analysis.check.pixel_size_source == "lattice"
    assert analysis.image.pixel_size == pytest.approx((0.12, 0.12), rel=0.01)
    assert analysis.check.file_pixel_size == pytest.approx((stored, stored))
    assert any("lattice's pixel size" in w for w in analysis.warnings)
    sites = analysis.sites_table()
    np.testing.assert_allclose(sites["x_pm"], sites["x_px"] * 100 * analysis.image.pixel_size[1])
    assert analysis.summary()["image_check"]["file_pixel_size"] == pytest.approx([stored, stored])


def test_a_typed_pixel_size_15_percent_off_is_refused_not_replaced(mos2_twin, tmp_path, capsys):
    write_twin(mos2_twin, tmp_path / "twin")
    status = main(["analyze", str(tmp_path / "twin" / "image.tif"), "--material", "MoS2", "--pixel-size", "0.138",
                   "--out", str(tmp_path / "out")])
    assert status == 4
    assert "pixel size you gave" in capsys.readouterr().err


def test_unknown_formulas_are_refused_before_any_work(mos2_twin, tmp_path, capsys):
    write_twin(mos2_twin, tmp_path / "twin")
    for bad, hint in (("MoS3", "not an MX2 formula"), ("Mos2", "did you mean 'MoS2'")):
        assert main(["analyze", str(tmp_path / "twin" / "image.tif"), "--material", bad,
                     "--out", str(tmp_path / "out")]) == 2
        assert hint in capsys.readouterr().err
    assert parse_material("W(S,Te)2").chalcogens == {"S": 0.5, "Te": 0.5}


@pytest.mark.parametrize("name, material", REAL_TMD)
def test_every_real_tmd_image_is_accepted_with_its_material(shared_data, name, material):
    image = read_stem_file(shared_data / "real" / name)[0]
    check = _check(image.data, material, image.pixel_size)
    assert check.ok, check.message
    if check.pixel_size_source == "lattice":  # a stored calibration replaced: always said
        assert check.warnings and image.pixel_size is not None


def test_real_ws2te2_alloy_stated_as_ws2_is_refused_with_what_it_looks_like(shared_data):
    image = read_stem_file(shared_data / "real" / "WS2Te2_alloy_0040_1_Cut.tif")[0]
    check = _check(image.data, "WS2", image.pixel_size)
    assert not check.ok and "closer in brightness than WS2 allows" in check.message
    assert "WTe2" in check.suggestions  # its 2H part: W with columns as heavy as Te2


def test_lattice_check_on_hand_made_spectra():
    yy, xx = np.mgrid[:256, :256].astype(float)
    square = np.cos(2 * np.pi * xx / 16) + np.cos(2 * np.pi * yy / 16)
    finding = check_lattice(square, None, (0.25, 0.25))
    assert not finding.ok and "square lattice" in finding.message and "4.00 Å" in finding.message
    twin = simulate_twin("WSe2", shape=(256, 256), pixel_size=0.12, seed=3, imaging=ImagingParams(dose=None))
    lattice, _ = lattice_spacing(twin.image, "WSe2", (0.12, 0.12))
    assert check_lattice(twin.image, lattice).ok


def test_honeycomb_and_composition_decisions_on_given_levels():
    mos2 = SublatticeLevels(metal=42**1.7, chalcogen=2 * 16**1.7, hollow=0.0, n_sites=100)
    assert check_honeycomb(mos2).ok and check_composition(mos2, parse_material("MoS2")).ok
    assert not check_composition(mos2, parse_material("MoSe2")).ok  # Mo and Se2 are nearly equal
    one_t = SublatticeLevels(metal=74**1.7, chalcogen=34**1.7, hollow=34**1.7 * 0.98, n_sites=100)
    finding = check_honeycomb(one_t)
    assert not finding.ok and "three columns per cell" in finding.message
    assert ratio_fits(2.6, "MoS2") and not ratio_fits(2.0, "WS2") and ratio_fits(6.5, "WS2")
    # W over S2 at 2.6: only at 60 kV and low angles (the table), never by a Z-contrast exponent
    assert ratio_fits(2.6, "WS2") and not ratio_fits(2.6, "WS2", table=False)


def test_mose2_at_60kv_and_low_detector_angles_is_accepted_as_mose2():
    # At 60 kV with a 60 mrad inner angle an Se2 pair scatters 1.9 times a Mo atom (multislice table): beyond
    # every Z-contrast exponent of GAMMA_RANGE (Z**1.25 gives 1.54), yet this is MoSe2
    setting = MicroscopeSettings(energy_kV=60, convergence_mrad=25, detector_inner_mrad=60, detector_outer_mrad=190,
                                 source_size_A=0.4, frozen_phonons=8)
    twin = simulate_twin("MoSe2", shape=(320, 320), pixel_size=0.12, seed=4,
                         imaging=calibrated_imaging(setting, dose=1e5))
    check = _check(twin.image, "MoSe2", (0.12, 0.12))
    levels = {f.name: f.metrics for f in check.findings}["composition"]
    assert levels["bright_over_dim"] == pytest.approx(metal_x2_ratio("MoSe2", setting) ** -1, rel=0.15)
    assert levels["bright_over_dim"] > 1.54 * (1 + RATIO_TOLERANCE)  # what the exponents alone refused
    assert check.ok, check.message
    # accepted with a warning that names what the exponents say, unless the microscope is known and explains it
    assert len(check.warnings) == 1 and "only as multislice does at low voltage" in check.warnings[0]
    assert "WSe2" in check.warnings[0]
    told = _check(twin.image, "MoSe2", (0.12, 0.12), microscope=setting)
    assert told.ok and not told.warnings


def test_analyze_api_raises_the_check_error_with_its_findings(mos2_twin):
    image = StemImage(mos2_twin.image, (0.12, 0.12), "twin", {})
    with pytest.raises(ImageCheckError) as info:
        analyze_image(image, material="MoTe2", classifier="physics")
    assert not info.value.check.ok and info.value.check.suggestions[0] == "MoS2"
    table = pd.DataFrame([f.__dict__ for f in info.value.check.findings])
    assert set(table["name"]) == {"lattice", "honeycomb", "composition", "spacing"}
