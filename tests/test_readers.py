"""File readers: every shared file opens with the shape and pixel size (Å) of SOURCES.md.

Pure tests: no napari viewer, no Qt.
"""

from __future__ import annotations

import doctest
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_stem_defects.io import StemImage, StemReadError, units
from napari_stem_defects.io.rsciio_reader import (
    SUPPORTED_EXTENSIONS,
    UnsupportedFormatError,
    read_stem_file,
)
from napari_stem_defects.io.units import angstrom_per_unit, to_angstrom, unit_kind

# file -> (folder, shape, pixel size (y, x) in Å or None, dtype), from shared/data/SOURCES.md
EXPECTED: dict[str, tuple[str, tuple[int, ...], tuple[float, float] | None, str]] = {
    "test_STEM_image.dm3": ("formats", (68, 68), (2.48538, 2.48538), "uint32"),
    "dmTest_float32_nonSquare_diffPixelSize.dm3": ("formats", (64, 128), (2.0, 10.0), "float32"),
    "dmTest_float32_nonSquare_diffPixelSize.dm4": ("formats", (64, 128), (2.0, 10.0), "float32"),
    "STEM_HAADF_Diffraction_Micro.emd": ("formats", (128, 128), (873.71, 873.71), "uint16"),
    "example_Au_nanoparticle.emd": ("formats", (2048, 2048), (0.07498, 0.07498), "uint16"),
    "Acquisition_18.emd": ("formats", (1024, 1024), (0.12247, 0.12247), "uint16"),
    "16_STOimage.emi": ("formats", (1024, 1024), (0.10013, 0.10013), "uint16"),
    "16_STOimage_1.ser": ("formats", (1024, 1024), (0.10013, 0.10013), "uint16"),
    "128x128-TEM_search.emi": ("formats", (128, 128), (52.61214, 52.61214), "int32"),
    "128x128-TEM_search_1.ser": ("formats", (128, 128), (52.61214, 52.61214), "int32"),
    "HAADFscan.mrc": ("formats", (16, 16), (56.79131, 56.79131), "uint16"),
    "test_loading_image_saved_with_imageJ.tif": ("formats", (68, 68), (1686.75, 1686.75), "float32"),
    "test_loading_image_saved_with_DM.tif": ("formats", (68, 68), (1686.75, 1686.75), "int32"),
    "MoS2_Se-implanted_60kV_HAADF.dm3": ("real", (1024, 1024), (0.12695, 0.12695), "uint32"),
    "WSSe_partial_SuperScan_HAADF_3_corrected.tif": ("real", (1024, 1024), (0.078125, 0.078125), "uint8"),
    "WSSe_partial_SuperScan_HAADF_12_corrected.tif": ("real", (512, 512), (0.078125, 0.078125), "uint8"),
    "WSe2_full_SuperScan_HAADF_14_corrected.tif": ("real", (1024, 1024), None, "uint8"),
    "MoWSSe_3D_Stack_align2_original.png": ("real", (1024, 1024), None, "uint8"),
    "MoSe2_GB_mono.tif": ("real", (500, 500), None, "float32"),
    "WS2Te2_alloy_0040_1_Cut.tif": ("real", (374, 374), None, "float32"),
    "MoSe2_80K_small_region.tif": ("real", (512, 512), None, "float32"),
    "MoTe2_sample_1.jpg": ("real", (535, 535), None, "uint8"),
}

# SOURCES.md gives 5-6 significant digits.
REL = 2e-4


def _read_one(path: Path) -> StemImage:
    images = read_stem_file(path)
    assert len(images) == 1, [im.name for im in images]
    return images[0]


# --------------------------------------------------------------------------- units


def test_units_doctests() -> None:
    result = doctest.testmod(units, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(("unit", "factor"), [
    ("nm", 10.0), ("NM", 10.0), (" nm ", 10.0), ("n_m", 10.0), ("u_m", 1e4), ("p_m", 0.01),
    ("µm", 1e4), ("\u03bcm", 1e4), ("um", 1e4), ("micron", 1e4), ("microns", 1e4),
    ("Å", 1.0), ("\u212b", 1.0), ("A", 1.0), ("angstrom", 1.0), ("Angstroms", 1.0),
    ("pm", 0.01), ("m", 1e10), ("mm", 1e7),
])
def test_length_units(unit: str, factor: float) -> None:
    assert angstrom_per_unit(unit) == pytest.approx(factor)
    assert unit_kind(unit) == "length"


@pytest.mark.parametrize(("unit", "kind"), [
    ("1/nm", "reciprocal"), ("nm^-1", "reciprocal"), ("1/Å", "reciprocal"), ("1 / A", "reciprocal"),
    ("nm\u207b\u00b9", "reciprocal"), ("mrad", "angle"), ("deg", "angle"), ("eV", "energy"),
    ("keV", "energy"), ("s", "time"), ("ms", "time"), (None, "none"), ("", "none"),
    ("pixel", "none"), ("px", "none"), ("furlong", "unknown"),
])
def test_non_length_units_give_none(unit: str | None, kind: str) -> None:
    assert angstrom_per_unit(unit) is None
    assert to_angstrom(1.0, unit) is None
    assert unit_kind(unit) == kind


# --------------------------------------------------------------------------- shared files


def test_expected_table_covers_every_shared_file(shared_data: Path) -> None:
    on_disk = {p.name for folder in ("formats", "real") for p in (shared_data / folder).iterdir()
               if p.suffix.lower() != ".csv"}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_file_shape_and_pixel_size(shared_data: Path, name: str) -> None:
    folder, shape, pixel_size, dtype = EXPECTED[name]
    image = _read_one(shared_data / folder / name)
    assert image.data.shape == shape
    assert image.data.dtype == np.dtype(dtype)
    assert image.data.ndim == 2 and not image.is_stack
    if pixel_size is None:
        assert image.pixel_size is None
        assert image.metadata["calibrated"] is False
        assert image.scale == (1.0, 1.0) and image.units == ("pixel", "pixel")
    else:
        assert image.pixel_size == pytest.approx(pixel_size, rel=REL)
        assert image.metadata["pixel_size_A"] == pytest.approx(pixel_size, rel=REL)
        assert image.metadata["calibrated"] is True
        assert image.units == ("angstrom", "angstrom")
    meta = image.metadata
    assert meta["source_path"] == str((shared_data / folder / name).resolve())
    assert isinstance(meta["original_metadata"], dict)
    assert image.name == Path(name).stem
    assert np.isfinite(image.data).any()


def test_dm_axes_converted_with_their_own_unit(shared_data: Path) -> None:
    for ext in (".dm3", ".dm4"):
        image = _read_one(shared_data / "formats" / f"dmTest_float32_nonSquare_diffPixelSize{ext}")
        # y: 2.0 "A", x: 1.0 "nm"
        assert image.pixel_size == pytest.approx((2.0, 10.0))
        assert image.scale == pytest.approx((2.0, 10.0))


def test_dm3_metadata(shared_data: Path) -> None:
    meta = _read_one(shared_data / "real" / "MoS2_Se-implanted_60kV_HAADF.dm3").metadata
    assert meta["beam_energy_keV"] == pytest.approx(60.0)
    assert meta["detector"] == "HAADF"
    assert meta["signal_title"] == "SI Survey Image (active)"
    assert meta["frame_interval_s"] is None
    assert "ImageList" in meta["original_metadata"]


def test_velox_emd_metadata(shared_data: Path) -> None:
    image = _read_one(shared_data / "formats" / "STEM_HAADF_Diffraction_Micro.emd")
    meta = image.metadata
    assert meta["beam_energy_keV"] == pytest.approx(300.0)
    assert meta["detector"] == "HAADF"
    assert meta["signal_title"] == "HAADF"
    inner, outer = meta["collection_angles_mrad"]
    assert inner == pytest.approx(27.4026, rel=1e-4)
    assert outer == pytest.approx(166.355, rel=1e-4)


def test_ncem_emd_underscore_unit_and_orientation(shared_data: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = shared_data / "formats" / "Acquisition_18.emd"
    image = _read_one(path)
    assert image.pixel_size == pytest.approx((0.12247, 0.12247), rel=REL)  # 0.012247 "n_m"
    assert image.metadata["beam_energy_keV"] == pytest.approx(200.0)
    with h5py.File(path, "r") as f:
        stored = f["data/single/data"][()]
        assert f["data/single/dim1"].attrs["name"] in (b"Y", "Y")
    # rows are Y as the file labels them (rsciio's own output is transposed)
    np.testing.assert_array_equal(image.data, stored)


def test_tia_emi_and_ser_give_the_same_image(shared_data: Path) -> None:
    from_emi = _read_one(shared_data / "formats" / "16_STOimage.emi")
    from_ser = _read_one(shared_data / "formats" / "16_STOimage_1.ser")
    np.testing.assert_array_equal(from_emi.data, from_ser.data)
    assert from_emi.pixel_size == pytest.approx(from_ser.pixel_size)
    assert from_emi.metadata["beam_energy_keV"] == pytest.approx(80.0)
    assert from_ser.metadata["beam_energy_keV"] == pytest.approx(80.0)


def test_imagej_tiff_unit_from_header(shared_data: Path) -> None:
    image = _read_one(shared_data / "real" / "WSSe_partial_SuperScan_HAADF_3_corrected.tif")
    assert image.pixel_size == pytest.approx((0.078125, 0.078125))  # 0.0078125 nm, ImageJ unit=nm


def test_rgba_png_with_equal_channels_is_gray(shared_data: Path) -> None:
    import imageio.v3 as iio

    path = shared_data / "real" / "MoWSSe_3D_Stack_align2_original.png"
    rgba = iio.imread(path)
    assert rgba.shape == (1024, 1024, 4)
    image = _read_one(path)
    np.testing.assert_array_equal(image.data, rgba[..., 0])


def test_emi_without_its_ser(shared_data: Path, tmp_path: Path) -> None:
    shutil.copy(shared_data / "formats" / "16_STOimage.emi", tmp_path / "lonely.emi")
    with pytest.raises(StemReadError, match="lonely_1.ser"):
        read_stem_file(tmp_path / "lonely.emi")


def test_truncated_dm3(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.dm3"
    path.write_bytes((shared_data / "formats" / "test_STEM_image.dm3").read_bytes()[:1000])
    with pytest.raises(StemReadError, match=r"truncated\.dm3.*DigitalMicrograph"):
        read_stem_file(path)


def test_truncated_emd(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.emd"
    path.write_bytes((shared_data / "formats" / "example_Au_nanoparticle.emd").read_bytes()[:5000])
    with pytest.raises(StemReadError, match=r"truncated\.emd.*EMD"):
        read_stem_file(path)


# --------------------------------------------------------------------------- synthetic files


def test_spectrum_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "spectrum.npy", np.linspace(0, 1, 200))
    with pytest.raises(StemReadError, match="spectrum"):
        read_stem_file(tmp_path / "spectrum.npy")


def test_4d_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((4, 5, 16, 16), np.float32))
    with pytest.raises(StemReadError, match="4D-STEM"):
        read_stem_file(tmp_path / "cube.npy")


def test_stack_npy(tmp_path: Path) -> None:
    frames = np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64)
    np.save(tmp_path / "stack.npy", frames)
    image = _read_one(tmp_path / "stack.npy")
    assert image.is_stack and image.data.shape == (3, 64, 64)
    assert image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.data, frames)
    assert image.pixel_size is None
    assert image.scale == (1.0, 1.0, 1.0)


def test_plain_2d_npy_keeps_values(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(size=(20, 30)).astype(np.float32)
    np.save(tmp_path / "img.npy", data)
    image = _read_one(tmp_path / "img.npy")
    np.testing.assert_array_equal(image.data, data)
    assert image.pixel_size is None


@pytest.mark.parametrize("content", [np.full((8, 8), np.nan), np.full((8, 8), np.inf)])
def test_non_finite_npy_is_refused(tmp_path: Path, content: np.ndarray) -> None:
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(StemReadError, match="NaN or infinite"):
        read_stem_file(tmp_path / "bad.npy")


def test_empty_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "empty.npy", np.zeros((0, 8)))
    with pytest.raises(StemReadError, match="empty"):
        read_stem_file(tmp_path / "empty.npy")


def test_pickled_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(StemReadError, match=r"obj\.npy"):
        read_stem_file(tmp_path / "obj.npy")


def test_gray_rgb_png_becomes_grayscale(tmp_path: Path) -> None:
    import imageio.v3 as iio

    gray = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    iio.imwrite(tmp_path / "gray.png", np.stack([gray, gray, gray], axis=-1))
    image = _read_one(tmp_path / "gray.png")
    assert image.data.shape == (40, 50) and image.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data, gray)


def test_colour_png_is_refused(tmp_path: Path) -> None:
    import imageio.v3 as iio

    gray = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    iio.imwrite(tmp_path / "colour.png", np.stack([gray, gray // 2, 255 - gray], axis=-1))
    with pytest.raises(StemReadError, match="colour"):
        read_stem_file(tmp_path / "colour.png")


def test_colour_tiff_is_refused(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    gray = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "colour.tif", np.stack([gray, gray // 2, gray], -1),
                     photometric="rgb")
    with pytest.raises(StemReadError, match="colour"):
        read_stem_file(tmp_path / "colour.tif")


def test_imagej_stack_tiff(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 50), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", frames, imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "nm", "finterval": 0.5, "axes": "TYX"})
    image = _read_one(tmp_path / "stack.tif")
    assert image.data.shape == (3, 40, 50)
    assert image.pixel_size == pytest.approx((2.5, 2.5))  # 4 px/nm
    assert image.metadata["frame_interval_s"] == pytest.approx(0.5)
    assert image.scale == pytest.approx((1.0, 2.5, 2.5))
    assert image.units == ("", "angstrom", "angstrom")


def _hspy_signal(data: np.ndarray, axes: list[dict], title: str = "test") -> dict:
    """A signal dict as rsciio.hspy.file_writer expects it without HyperSpy."""
    return {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": title}, "Signal": {"signal_type": ""},
                     "Acquisition_instrument": {"TEM": {"beam_energy": 80.0}}},
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "learning_results": {},
        "models": {},
        "package_info": {"name": "", "version": ""},
    }


def _axis(size: int, scale: float, units: str, navigate: bool = False) -> dict:
    return {"name": "", "size": size, "offset": 0.0, "scale": scale, "units": units,
            "navigate": navigate}


def _write_hspy(path: Path, signal: dict) -> None:
    try:
        from rsciio.hspy import file_writer

        file_writer(str(path), signal, show_progressbar=False)
    except Exception as exc:  # pragma: no cover - depends on the rsciio version
        pytest.skip(f"rsciio.hspy.file_writer cannot write a signal dict without HyperSpy: {exc}")


def test_hspy_round_trip(tmp_path: Path) -> None:
    data = np.arange(48 * 64, dtype=np.float32).reshape(48, 64)
    path = tmp_path / "image.hspy"
    _write_hspy(path, _hspy_signal(data, [_axis(48, 0.02, "nm"), _axis(64, 0.03, "nm")]))
    image = _read_one(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.pixel_size == pytest.approx((0.2, 0.3))
    assert image.metadata["beam_energy_keV"] == pytest.approx(80.0)
    assert image.metadata["signal_title"] == "test"


def test_hspy_time_stack(tmp_path: Path) -> None:
    path = tmp_path / "movie.hspy"
    axes = [_axis(3, 0.5, "s", navigate=True), _axis(16, 1.0, "Å"), _axis(16, 1.0, "Å")]
    _write_hspy(path, _hspy_signal(np.ones((3, 16, 16), np.float32), axes))
    image = _read_one(path)
    assert image.data.shape == (3, 16, 16)
    assert image.pixel_size == pytest.approx((1.0, 1.0))
    assert image.metadata["frame_interval_s"] == pytest.approx(0.5)


@pytest.mark.parametrize(("shape", "axes", "message"), [
    ((48, 64), [_axis(48, 0.02, "1/nm"), _axis(64, 0.02, "1/nm")], "diffraction"),
    ((48, 64), [_axis(48, 0.5, "mrad"), _axis(64, 0.5, "mrad")], "diffraction"),
    ((4, 5, 100), [_axis(4, 0.1, "nm", True), _axis(5, 0.1, "nm", True), _axis(100, 0.01, "keV")],
     "spectrum image"),
    ((4, 5, 16, 16), [_axis(4, 0.1, "nm", True), _axis(5, 0.1, "nm", True),
                      _axis(16, 0.1, "mrad"), _axis(16, 0.1, "mrad")], "4D-STEM"),
])
def test_hspy_non_images_are_refused(tmp_path: Path, shape, axes, message: str) -> None:
    path = tmp_path / "not_image.hspy"
    _write_hspy(path, _hspy_signal(np.ones(shape, np.float32), axes))
    with pytest.raises(StemReadError, match=message):
        read_stem_file(path)


def test_multi_signal_emd_names_and_skips_spectra(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "multi.emd"
    with h5py.File(path, "w") as f:  # a Berkeley EMD v0.2 file with two images and a spectrum
        f.attrs["version_major"], f.attrs["version_minor"] = 0, 2
        for name, data, dims in [
            ("HAADF", np.ones((32, 48), np.uint16), [("Y", "n_m", 0.02), ("X", "n_m", 0.02)]),
            ("ADF", np.full((32, 48), 2, np.uint16), [("Y", "n_m", 0.02), ("X", "n_m", 0.02)]),
            ("EELS", np.ones(100, np.float32), [("E", "eV", 0.5)]),
        ]:
            group = f.create_group(f"data/{name}")
            group.attrs["emd_group_type"] = 1
            group.create_dataset("data", data=data)
            for i, (dim_name, unit, step) in enumerate(dims, start=1):
                dim = group.create_dataset(f"dim{i}", data=np.arange(data.shape[i - 1]) * step)
                dim.attrs["name"], dim.attrs["units"] = dim_name, unit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = read_stem_file(path)
    assert any("spectrum" in str(w.message) for w in caught)
    assert sorted(im.name for im in images) == ["multi [ADF]", "multi [HAADF]"]
    for image in images:
        assert image.data.shape == (32, 48)
        assert image.pixel_size == pytest.approx((0.2, 0.2))


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "foo.xyz"
    path.write_bytes(b"whatever")
    with pytest.raises(UnsupportedFormatError, match=r"\.xyz"):
        read_stem_file(path)
    assert ".xyz" not in SUPPORTED_EXTENSIONS


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_stem_file(tmp_path / "missing.dm3")
