"""Opening an image with the plugin reader restores its saved annotations exactly."""

from __future__ import annotations

import dataclasses
import json
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.columns.points_layer import FACE_ALPHA, SIZE_FRACTION
from napari_stem_defects.annotations import (
    annotation_layer_data,
    annotations_from_layers,
    image_path_of,
    load_annotations,
    save_annotations,
    set_cell_class,
    set_site_species,
    sidecar_path,
)
from napari_stem_defects.cells.classify import classify_site_table
from napari_stem_defects.cells.shapes_layer import cells_to_shapes_data
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.columns.points_layer import result_to_points_data
from napari_stem_defects.io.napari_reader import read_layers

PIXEL = 0.12


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A twin saved as an uncalibrated .npy with corrected sites and cells in its annotation file."""
    from napari_stem_defects.simulate import ImagingParams, simulate_twin

    folder = tmp_path_factory.mktemp("reader")
    twin = simulate_twin("MoS2", (160, 160), PIXEL, defects={"V_X1": 0.05, "V_M": 0.03},
                         imaging=ImagingParams(dose=1e6), seed=21)
    result = detect_columns(twin.image, material="MoS2", pixel_size=PIXEL)
    cells = classify_site_table(None, result.sites, "MoS2", "physics", posteriors=result.posteriors)
    pdata, pk, _ = result_to_points_data(result, scale=(PIXEL, PIXEL), units=("angstrom", "angstrom"),
                                         name="scan columns", parameters={"material": "MoS2"})
    sdata, sk, _ = cells_to_shapes_data(cells, result.a1, result.a2, scale=(PIXEL, PIXEL), units="angstrom",
                                        name="scan cells", metadata={"material": "MoS2"})
    image_file = folder / "scan.npy"
    np.save(image_file, twin.image)
    image = SimpleNamespace(data=twin.image, name="scan", scale=np.array([PIXEL, PIXEL]),
                            units=("angstrom", "angstrom"), translate=np.zeros(2), metadata={},
                            source=SimpleNamespace(path=str(image_file)))
    points = SimpleNamespace(data=pdata, features=set_site_species(pk["features"], [4], "empty"),
                             metadata=pk["metadata"], name=pk["name"], scale=np.array(pk["scale"]))
    shapes = SimpleNamespace(data=list(sdata), features=set_cell_class(sk["features"], [7], "V_X2"),
                             metadata=sk["metadata"], name=sk["name"], scale=np.array(sk["scale"]))
    ann = annotations_from_layers(image, points, shapes)
    path = save_annotations(ann, sidecar_path(image_file))
    return image_file, path, ann, twin


def test_image_path_comes_from_the_layer_source_or_metadata(tmp_path):
    assert image_path_of(SimpleNamespace(source=SimpleNamespace(path="/a/b.dm4"), metadata={})).name == "b.dm4"
    assert image_path_of(SimpleNamespace(source=SimpleNamespace(path=None), metadata={"source_path": "/c.tif"})
                         ).name == "c.tif"
    assert image_path_of(SimpleNamespace(metadata={})) is None


def test_reopening_restores_image_sites_and_cells_exactly(saved):
    image_file, path, ann, twin = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        layers = read_layers(str(image_file))
    assert [kind for *_, kind in layers] == ["image", "points", "shapes"]
    (img, ik, _), (pts, pk, _), (shp, sk, _) = layers
    np.testing.assert_array_equal(img, twin.image)
    # the .npy holds no calibration; the annotation file's is applied to the image
    assert ik["scale"] == (PIXEL, PIXEL) and ik["units"] == ("angstrom", "angstrom")
    assert ik["metadata"]["calibrated"] and ik["metadata"]["pixel_size_A"] == (PIXEL, PIXEL)
    assert pk["scale"] == (PIXEL, PIXEL) and sk["scale"] == (PIXEL, PIXEL)
    assert pk["units"] == ("angstrom", "angstrom") and pk["translate"] == (0.0, 0.0)

    assert pts.dtype == ann.sites.data.dtype and np.array_equal(pts, ann.sites.data)
    assert shp.shape == ann.cells.data.shape and np.array_equal(shp, ann.cells.data)
    pd.testing.assert_frame_equal(pk["features"], ann.sites.features, check_exact=True)
    pd.testing.assert_frame_equal(sk["features"], ann.cells.features, check_exact=True)
    assert pk["name"] == "scan columns" and sk["name"] == "scan cells" and sk["shape_type"] == "polygon"
    assert sk["features"].loc[7, ["class", "verified", "source"]].tolist() == ["V_X2", True, "human"]
    assert pk["features"].loc[4, ["species", "source"]].tolist() == ["empty", "human"]
    assert pk["metadata"]["parameters"]["material"] == "MoS2" and sk["metadata"]["a1_px"] == ann.cells.metadata["a1_px"]
    # styled like the widgets draw them: hollow points for empty sites, class-coloured cell edges
    assert pk["face_color"][4, 3] == 0 and pk["face_color"][0, 3] == FACE_ALPHA  # hollow / translucent
    assert len(sk["edge_color"]) == len(shp) and sk["edge_color"][7, 3] == 1
    assert pk["size"] == pytest.approx(SIZE_FRACTION * ann.sites.metadata["parameters"]["nn_px"])


def test_layer_data_builds_real_napari_layers(saved):
    napari_layers = pytest.importorskip("napari.layers")
    _, _, ann, _ = saved
    (pts, pk, _), (shp, sk, _) = annotation_layer_data(ann)
    points = napari_layers.Points(pts, **pk)
    shapes = napari_layers.Shapes(shp, **sk)
    assert len(points.data) == len(ann.sites.data) and len(shapes.data) == len(ann.cells.data)
    assert points.features["species"].tolist() == ann.sites.features["species"].tolist()
    assert shapes.features["class"].tolist() == ann.cells.features["class"].tolist()


def test_a_damaged_annotation_file_still_opens_the_image_with_a_warning(saved, tmp_path):
    image_file, path, _, twin = saved
    copy = tmp_path / "scan.npy"
    copy.write_bytes(image_file.read_bytes())
    sidecar_path(copy).write_text(path.read_text()[:500])
    with pytest.warns(UserWarning, match="could not be read"):
        layers = read_layers(copy)
    assert [kind for *_, kind in layers] == ["image"]
    assert layers[0][1]["units"] == ("pixel", "pixel")  # nothing taken from a damaged file
    np.testing.assert_array_equal(layers[0][0], twin.image)

    doc = json.loads(path.read_text())
    sidecar_path(copy).write_text(json.dumps({**doc, "version": 99}))
    with pytest.warns(UserWarning, match="newer"):
        assert len(read_layers(copy)) == 1


def test_a_changed_image_warns_but_keeps_its_annotations(saved, tmp_path):
    image_file, path, ann, twin = saved
    changed = tmp_path / "scan.npy"
    np.save(changed, twin.image * 2)
    sidecar_path(changed).write_text(path.read_text())
    with pytest.warns(UserWarning, match="changed since its annotations were saved"):
        layers = read_layers(changed)
    assert [kind for *_, kind in layers] == ["image", "points", "shapes"]
    pd.testing.assert_frame_equal(layers[2][1]["features"], ann.cells.features, check_exact=True)


def test_without_annotations_only_the_image_opens(tmp_path):
    plain = tmp_path / "plain.npy"
    np.save(plain, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    layers = read_layers(plain)
    assert len(layers) == 1 and layers[0][2] == "image" and layers[0][1]["units"] == ("pixel", "pixel")


def test_annotations_reload_after_reopening_and_saving_again(saved, tmp_path):
    image_file, path, ann, _ = saved
    (pts, pk, _), (shp, sk, _) = read_layers(image_file)[1:]
    image = SimpleNamespace(data=np.load(image_file), name="scan", scale=np.array([PIXEL, PIXEL]),
                            units=("angstrom", "angstrom"), translate=np.zeros(2), metadata={},
                            source=SimpleNamespace(path=str(image_file)))
    points = SimpleNamespace(data=pts, features=pk["features"], metadata=pk["metadata"], name=pk["name"],
                             scale=np.array(pk["scale"]))
    shapes = SimpleNamespace(data=list(shp), features=sk["features"], metadata=sk["metadata"], name=sk["name"],
                             scale=np.array(sk["scale"]))
    again = annotations_from_layers(image, points, shapes)
    again_path = save_annotations(again, tmp_path / "again.annotations.json")
    back = load_annotations(again_path)
    for mine, theirs in ((ann.sites, back.sites), (ann.cells, back.cells)):
        assert theirs.equals(mine)  # a second save of the restored layers changes nothing


def test_a_calibration_adopted_before_saving_is_restored_over_the_files(saved, tmp_path):
    from napari_stem_defects.simulate.export import _write_tiff

    _, _, ann, twin = saved
    tif = tmp_path / "scan.tif"
    _write_tiff(tif, twin.image, 0.1)  # the file says 0.1 Å/px; the person adopted 0.12 from the lattice
    (plain,) = read_layers(tif)
    assert plain[1]["scale"] == pytest.approx((0.1, 0.1))
    ref = dataclasses.replace(ann.image, file=str(tif), translate=(2.0, -3.0))
    save_annotations(dataclasses.replace(ann, image=ref), sidecar_path(tif))
    with pytest.warns(UserWarning, match="saved calibration is used"):
        (img, ik, _), (_, pk, _), (_, sk, _) = read_layers(tif)
    assert ik["scale"] == (PIXEL, PIXEL) == pk["scale"] == sk["scale"]
    assert ik["translate"] == (2.0, -3.0) == pk["translate"] == sk["translate"]  # every layer placed alike
    assert ik["metadata"]["calibration_source"] == "annotation file scan.tif.annotations.json"
