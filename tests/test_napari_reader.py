"""The npe2 reader contribution: get_reader, layer tuples, and files opened in a real viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_stem_defects.io import StemReadError
from napari_stem_defects.io.napari_reader import get_reader

PLUGIN = "napari-stem-defects"

# file -> (folder, shape, scale in Å (y, x) or None if uncalibrated)
VIEWER_CASES = {
    "test_STEM_image.dm3": ("formats", (68, 68), (2.48538, 2.48538)),
    "dmTest_float32_nonSquare_diffPixelSize.dm4": ("formats", (64, 128), (2.0, 10.0)),
    "STEM_HAADF_Diffraction_Micro.emd": ("formats", (128, 128), (873.71, 873.71)),
    "Acquisition_18.emd": ("formats", (1024, 1024), (0.12247, 0.12247)),
    "16_STOimage_1.ser": ("formats", (1024, 1024), (0.10013, 0.10013)),
    "WSSe_partial_SuperScan_HAADF_12_corrected.tif": ("real", (512, 512), (0.078125, 0.078125)),
    "MoS2_Se-implanted_60kV_HAADF.dm3": ("real", (1024, 1024), (0.12695, 0.12695)),
    "MoWSSe_3D_Stack_align2_original.png": ("real", (1024, 1024), None),
}


# --------------------------------------------------------------------------- get_reader


@pytest.mark.parametrize("path", ["foo.xyz", "image.csv", "notes.txt", ["a.dm3", "b.xyz"], []])
def test_get_reader_declines_what_it_cannot_read(path) -> None:
    assert get_reader(path) is None


def test_get_reader_declines_directories(tmp_path: Path) -> None:
    folder = tmp_path / "looks_like.tif"
    folder.mkdir()
    assert get_reader(str(folder)) is None


@pytest.mark.parametrize("path", ["a.dm3", "A.DM4", "b.emd", "c_1.ser", "c.emi", "d.mrc", "e.tif",
                                  "e.TIFF", "f.hspy", "g.npy", "h.png", "i.jpg", "j.jpeg",
                                  ["a.dm3", "b.npy"]])
def test_get_reader_accepts_supported_files(path) -> None:
    assert callable(get_reader(path))


def test_reader_function_layer_tuples(shared_data: Path) -> None:
    paths = [str(shared_data / "formats" / "test_STEM_image.dm3"),
             str(shared_data / "real" / "MoTe2_sample_1.jpg")]
    reader = get_reader(paths)
    layers = reader(paths)
    assert len(layers) == 2
    (dm_data, dm_kwargs, dm_type), (jpg_data, jpg_kwargs, jpg_type) = layers
    assert dm_type == jpg_type == "image"
    assert dm_data.shape == (68, 68)
    assert dm_kwargs["scale"] == pytest.approx((2.48538, 2.48538), rel=2e-4)
    assert dm_kwargs["units"] == ("angstrom", "angstrom")
    assert dm_kwargs["name"] == "test_STEM_image"
    assert dm_kwargs["colormap"] == "gray"
    assert dm_kwargs["metadata"]["pixel_size_A"] == pytest.approx((2.48538, 2.48538), rel=2e-4)
    assert dm_kwargs["metadata"]["beam_energy_keV"] == pytest.approx(200.0)
    assert jpg_data.shape == (535, 535)
    assert jpg_kwargs["scale"] == (1.0, 1.0) and jpg_kwargs["units"] == ("pixel", "pixel")
    assert jpg_kwargs["metadata"]["calibrated"] is False


def test_reader_function_propagates_stem_read_error(tmp_path: Path) -> None:
    path = tmp_path / "spectrum.npy"
    np.save(path, np.arange(50.0))
    reader = get_reader(str(path))
    with pytest.raises(StemReadError, match="spectrum"):
        reader(str(path))


def test_module_import_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, napari_stem_defects.io.napari_reader; "
            "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PySide2', 'PyQt6', 'PySide6', 'rsciio')"
            " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- in a viewer


@pytest.mark.parametrize("name", sorted(VIEWER_CASES))
def test_viewer_opens_shared_file(make_napari_viewer, shared_data: Path, name: str) -> None:
    folder, shape, scale = VIEWER_CASES[name]
    viewer = make_napari_viewer()
    layers = viewer.open(str(shared_data / folder / name), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.shape == shape
    assert layer.name == Path(name).stem
    if scale is None:
        np.testing.assert_allclose(layer.scale, (1.0, 1.0))
        assert [str(u) for u in layer.units] == ["pixel", "pixel"]
        assert layer.metadata["pixel_size_A"] is None
    else:
        np.testing.assert_allclose(layer.scale, scale, rtol=2e-4)
        assert [str(u) for u in layer.units] == ["angstrom", "angstrom"]
        np.testing.assert_allclose(layer.metadata["pixel_size_A"], scale, rtol=2e-4)
    assert layer.colormap.name == "gray"


def test_viewer_opens_calibrated_stack(make_napari_viewer, tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "movie.tif"
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 48), dtype=np.uint8)
    tifffile.imwrite(path, frames, imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "nm", "axes": "TYX"})
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.shape == (4, 32, 48)
    np.testing.assert_allclose(layer.scale, (1.0, 2.5, 2.5))
    assert [str(u) for u in layer.units][1:] == ["angstrom", "angstrom"]
    assert viewer.dims.ndim == 3


def test_viewer_opens_several_files(make_napari_viewer, shared_data: Path) -> None:
    paths = [str(shared_data / "formats" / "dmTest_float32_nonSquare_diffPixelSize.dm3"),
             str(shared_data / "formats" / "HAADFscan.mrc")]
    viewer = make_napari_viewer()
    viewer.open(paths, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == [
        "dmTest_float32_nonSquare_diffPixelSize", "HAADFscan"]
    np.testing.assert_allclose(viewer.layers[1].scale, (56.79131, 56.79131), rtol=2e-4)


def test_viewer_reports_unreadable_file(make_napari_viewer, tmp_path: Path) -> None:
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros((3, 4, 8, 8), np.float32))
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(str(path), plugin=PLUGIN)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, StemReadError) and "4D-STEM" in str(e) for e in chain)
    assert len(viewer.layers) == 0
