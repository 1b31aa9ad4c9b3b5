"""Lattice spacing from the FFT recovers the pixel size of twins and flags miscalibrated files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects.calibration import LatticeNotFoundError, check_calibration, measure_lattice
from napari_stem_defects.simulate import ImagingParams, simulate_twin


@pytest.mark.parametrize(
    "material, pixel_size, rotation, dose",
    [
        ("MoS2", 0.12, 0.0, 1e5),
        ("WSe2", 0.08, 17.0, 1e4),
        ("MoTe2", 0.20, 41.0, 1e6),
        ("MoWSSe", 0.15, 33.0, 1e5),
        ("WS2", 0.06, 8.0, 1e5),
    ],
)
def test_recovers_the_pixel_size_of_twins_within_one_percent(material, pixel_size, rotation, dose):
    twin = simulate_twin(material, (512, 512), pixel_size, rotation_deg=rotation, seed=1,
                         imaging=ImagingParams(dose=dose, line_jitter=0.1))
    report = check_calibration(twin.image, material, pixel_size)
    assert report.ok
    np.testing.assert_allclose(report.measured_pixel_size, pixel_size, rtol=0.01)
    # and a file calibration 8 % off is flagged, with the right correction
    wrong = check_calibration(twin.image, material, pixel_size * 1.08)
    assert not wrong.ok and wrong.relative_difference == pytest.approx(1 - 1 / 1.08, abs=0.01)
    assert "off" in wrong.message


def test_non_square_pixels_are_measured_per_axis():
    # a slow-scan stretch of 6 % makes y pixels 6 % smaller in Å than x pixels
    twin = simulate_twin("MoS2", (512, 512), 0.1, rotation_deg=11.0, seed=2,
                         imaging=ImagingParams(dose=1e6, drift=(0.06, 0.0)))
    py, px = check_calibration(twin.image, "MoS2", None).measured_pixel_size
    assert py == pytest.approx(0.1 / 1.06, rel=0.01)
    assert px == pytest.approx(0.1, rel=0.01)


def test_stack_and_nan_pixels_are_handled():
    twin = simulate_twin("WSe2", (256, 256), 0.1, seed=4)
    img = twin.image.copy()
    img[:10, :10] = np.nan
    stack = np.stack([img, twin.image])
    lat = measure_lattice(stack)
    assert lat.d100_px == pytest.approx(twin.material.d100 / 0.1, rel=0.01)


def test_noise_flat_and_tiny_images_get_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(LatticeNotFoundError, match="no lattice"):
        measure_lattice(rng.poisson(50, size=(256, 256)).astype(float))
    with pytest.raises(LatticeNotFoundError, match="flat"):
        measure_lattice(np.ones((128, 128)))
    with pytest.raises(ValueError, match="too small"):
        measure_lattice(np.ones((16, 16)))
    with pytest.raises(ValueError, match="2D"):
        measure_lattice(np.ones(100))
    with pytest.raises(ValueError, match="finite"):
        measure_lattice(np.full((64, 64), np.nan))


@pytest.mark.parametrize("name, shape", [("WSSe_partial_SuperScan_HAADF_3_corrected.tif", (1024, 1024)),
                                         ("WSSe_partial_SuperScan_HAADF_12_corrected.tif", (512, 512))])
def test_real_wsse_tiffs_are_flagged_about_twelve_percent_off(shared_data, name, shape):
    from napari_stem_defects.io.rsciio_reader import read_stem_file

    (img,) = read_stem_file(shared_data / "real" / name)
    assert img.data.shape == shape
    report = check_calibration(img.data, "WSSe", img.pixel_size)
    assert not report.ok
    assert 0.08 < report.relative_difference < 0.2
    # the stored value is too small: the lattice implies larger pixels (about 8.7-9 pm)
    assert all(0.083 < p < 0.093 for p in report.measured_pixel_size)


def test_real_mose2_without_calibration_gets_the_published_spacing(shared_data):
    from napari_stem_defects.io.rsciio_reader import read_stem_file

    (img,) = read_stem_file(shared_data / "real" / "MoSe2_GB_mono.tif")
    lat = measure_lattice(img.data)
    assert lat.d100_px == pytest.approx(18.3, rel=0.03)  # SOURCES.md: FFT d = 18.3 px
