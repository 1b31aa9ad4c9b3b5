"""The annotation file: exact round trips, atomic saves, clear errors for damaged files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_stem_defects.annotations import (
    FORMAT,
    VERSION,
    AnnotationFileError,
    Annotations,
    ImageReference,
    LayerAnnotation,
    annotations_from_layers,
    image_sha256,
    load_annotations,
    save_annotations,
    set_cell_class,
    sidecar_path,
)
from napari_stem_defects.cells.classify import classify_site_table
from napari_stem_defects.cells.shapes_layer import cells_to_shapes_data
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.columns.points_layer import result_to_points_data
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.defects import CELL_CLASSES

PIXEL = 0.12


@pytest.fixture(scope="module")
def layers():
    """Image, sites and cells layers (look-alikes of napari's) of a small classified twin."""
    twin = simulate_twin("MoS2", (192, 192), PIXEL, defects={"V_X1": 0.05, "V_M": 0.03, "V_X2": 0.02},
                         imaging=ImagingParams(dose=1e6), seed=11)
    result = detect_columns(twin.image, material="MoS2", pixel_size=PIXEL)
    cells = classify_site_table(None, result.sites, "MoS2", "physics", posteriors=result.posteriors)
    pdata, pk, _ = result_to_points_data(result, scale=(PIXEL, PIXEL), units=("angstrom", "angstrom"),
                                         name="twin columns", parameters={"material": "MoS2"})
    sdata, sk, _ = cells_to_shapes_data(cells, result.a1, result.a2, scale=(PIXEL, PIXEL), units="angstrom",
                                        name="twin cells", metadata={"material": "MoS2"})
    image = SimpleNamespace(data=twin.image, name="twin", scale=np.array([PIXEL, PIXEL]),
                            units=("angstrom", "angstrom"), translate=np.array([0.0, 0.0]), metadata={},
                            source=SimpleNamespace(path=None))
    points = SimpleNamespace(data=pdata, features=pk["features"], metadata=pk["metadata"], name=pk["name"],
                             scale=np.array(pk["scale"]))
    shapes = SimpleNamespace(data=list(sdata), features=sk["features"], metadata=sk["metadata"], name=sk["name"],
                             scale=np.array(sk["scale"]))
    return image, points, shapes


def test_annotations_of_a_classified_twin_round_trip_exactly(layers, tmp_path):
    image, points, shapes = layers
    np.save(tmp_path / "twin.npy", image.data)
    edited = set_cell_class(shapes.features, [0, 3], "V_M")
    cells = SimpleNamespace(**{**vars(shapes), "features": edited})
    ann = annotations_from_layers(image, points, cells, image_file=tmp_path / "twin.npy")
    assert ann.material == "MoS2"  # from the layers' metadata
    assert ann.image.sha256 == image_sha256(image.data) and ann.image.shape == (192, 192)
    path = save_annotations(ann, sidecar_path(tmp_path / "twin.npy"))
    assert path.name == "twin.npy.annotations.json"
    assert ann.saved_at and ann.software.startswith("napari-stem-defects")

    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["format"] == FORMAT and raw["version"] == VERSION
    assert raw["image"]["file"] == "twin.npy"  # relative: the image lies beside its annotations
    assert raw["image"]["scale"] == [PIXEL, PIXEL] and raw["image"]["units"] == ["angstrom", "angstrom"]

    back = load_annotations(path)
    assert back.equals(ann)
    assert back.image.file == str(tmp_path / "twin.npy")
    pd.testing.assert_frame_equal(back.sites.features, points.features.reset_index(drop=True), check_exact=True)
    pd.testing.assert_frame_equal(back.cells.features, edited, check_exact=True)
    assert back.cells.features.loc[0, "source"] == "human" and back.cells.features.loc[1, "source"] == "model"
    np.testing.assert_array_equal(back.sites.data, points.data)
    np.testing.assert_array_equal(back.cells.data, np.stack(shapes.data))
    assert back.cells.metadata["a1_px"] == shapes.metadata["a1_px"]
    assert back.sites.metadata["parameters"]["nn_px"] == points.metadata["parameters"]["nn_px"]


def test_moved_points_are_saved_where_they_are(layers, tmp_path):
    image, points, _ = layers
    data = points.data.copy()
    data[5] += (1.5, -2.25)
    moved = SimpleNamespace(**{**vars(points), "data": data})
    ann = annotations_from_layers(image, moved)
    features = ann.sites.features
    assert features.loc[5, "y_px"] == data[5, 0] and features.loc[5, "x"] == data[5, 1] * PIXEL
    others = features.drop(index=5)
    # untouched rows as they were
    pd.testing.assert_frame_equal(others, points.features.drop(index=5), check_exact=True)
    back = load_annotations(save_annotations(ann, tmp_path / "a.annotations.json"))
    assert back.equals(ann) and back.image.file is None and back.cells is None


def test_an_interrupted_save_leaves_the_previous_file_intact(layers, tmp_path, monkeypatch):
    image, points, shapes = layers
    path = tmp_path / "twin.npy.annotations.json"
    save_annotations(annotations_from_layers(image, points, shapes), path)
    before = path.read_bytes()
    edited = SimpleNamespace(**{**vars(shapes), "features": set_cell_class(shapes.features, [1], "V_X1")})
    ann = annotations_from_layers(image, points, edited)

    def crash_mid_write(self, text, *args, **kwargs):
        with open(self, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])  # half the file, then the process "dies"
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", crash_mid_write)
        with pytest.raises(OSError, match="disk full"):
            save_annotations(ann, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind

    def no_rename(src, dst):
        raise OSError("rename refused")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", no_rename)
        with pytest.raises(OSError, match="rename refused"):
            save_annotations(ann, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert load_annotations(path).cells.features.loc[1, "source"] == "model"  # still the previous save

    save_annotations(ann, path)  # and a save that goes through replaces it
    assert load_annotations(path).cells.features.loc[1, "class"] == "V_X1"


def test_a_table_that_cannot_be_written_does_not_touch_the_previous_file(layers, tmp_path):
    image, points, _ = layers
    path = tmp_path / "x.annotations.json"
    save_annotations(annotations_from_layers(image, points), path)
    before = path.read_bytes()
    bad = SimpleNamespace(**{**vars(points), "features": points.features.assign(z=1j)})
    with pytest.raises(TypeError, match="complex"):
        save_annotations(annotations_from_layers(image, bad), path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def _valid_doc(layers, tmp_path) -> tuple[Path, dict]:
    image, points, shapes = layers
    path = save_annotations(annotations_from_layers(image, points, shapes), tmp_path / "img.annotations.json")
    return path, json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("damage, message", [
    (lambda text, doc: text[: len(text) // 3], "not valid JSON"),
    (lambda text, doc: b"\xff\xfe\x00garbage", "not valid JSON"),
    (lambda text, doc: json.dumps([1, 2, 3]), "not a napari-stem-defects annotation file"),
    (lambda text, doc: json.dumps({**doc, "format": "something else"}), "format 'something else'"),
    (lambda text, doc: json.dumps({**doc, "version": VERSION + 1}), "newer napari-stem-defects"),
    (lambda text, doc: json.dumps({**doc, "version": "one"}), "unknown annotation file version"),
    (lambda text, doc: json.dumps({k: v for k, v in doc.items() if k != "cells"}), "missing entry 'cells'"),
    (lambda text, doc: json.dumps({**doc, "image": {**doc["image"], "shape": None}}), "damaged"),
    (lambda text, doc: json.dumps({**doc, "sites": {**doc["sites"], "data": {**doc["sites"]["data"],
                                                                             "values": []}}}), "damaged"),
])
def test_damaged_or_foreign_files_raise_annotation_file_error(layers, tmp_path, damage, message):
    path, doc = _valid_doc(layers, tmp_path)
    out = damage(path.read_text(encoding="utf-8"), doc)
    (path.write_bytes if isinstance(out, bytes) else path.write_text)(out)
    with pytest.raises(AnnotationFileError, match=message) as err:
        load_annotations(path)
    assert path.name in str(err.value)  # the message names the file


def test_data_and_features_must_agree(tmp_path):
    ref = ImageReference.from_array(np.zeros((4, 4)), name="z")
    layer = LayerAnnotation("cells", "c", np.zeros((2, 4, 2)), pd.DataFrame({"class": ["perfect"]}))
    with pytest.raises(ValueError, match="2 items in data but 1 rows"):
        save_annotations(Annotations(ref, None, None, layer), tmp_path / "a.json")
    with pytest.raises(ValueError, match="kind"):
        LayerAnnotation("lines", "c", np.zeros((0, 2)), pd.DataFrame()).check()


def test_image_file_outside_the_folder_stays_absolute(tmp_path):
    ref = ImageReference.from_array(np.ones((3, 5), np.uint16), name="far", file=tmp_path / "elsewhere" / "a.tif",
                                    scale=(0.1, 0.2), units=("angstrom", "angstrom"))
    ann = Annotations(ref, "WSe2", None, None)
    path = save_annotations(ann, tmp_path / "sub" / "a.tif.annotations.json")
    assert json.loads(path.read_text())["image"]["file"] == str(tmp_path / "elsewhere" / "a.tif")
    back = load_annotations(path)
    assert back.equals(ann) and back.image.dtype == "uint16" and back.image.calibrated


def test_metadata_keeps_json_values_and_drops_the_rest(tmp_path):
    meta = {"nn_px": np.float32(7.5), "a1_px": np.array([1.0, 2.0]), "frames": {0: {"n": np.int64(3)}},
            "path": Path("/x/y.npy"), "callback": print, "nested": [1, object(), "z"]}
    layer = LayerAnnotation("sites", "s", np.zeros((0, 2)), pd.DataFrame({"species": pd.Series([], dtype=object),
                                                                          "sublattice": pd.Series([], dtype=object)}),
                            meta)
    ann = Annotations(ImageReference.from_array(np.zeros((2, 2)), name="i"), None, layer, None)
    back = load_annotations(save_annotations(ann, tmp_path / "m.json"))
    assert back.sites.metadata == {"nn_px": 7.5, "a1_px": [1.0, 2.0], "frames": {"0": {"n": 3}}, "path": "/x/y.npy",
                                   "nested": [1, None, "z"]}
    assert back.equals(ann)


# --- property test: random annotations ------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=5)


SPECIES = st.sampled_from(["Mo", "W", "S2", "SSe", "Se2", "S", "empty", "adatom", "", "M1", "X2"])


@st.composite
def layer_annotations(draw, kind: str, shape: tuple[int, ...]) -> LayerAnnotation:
    """A layer the format's rules accept (:mod:`napari_stem_defects.annotations.schema`) on an image of ``shape``."""
    n = draw(st.integers(0, 6))
    dims = draw(st.sampled_from([2, 3])) if len(shape) == 3 else 2
    data_shape = (n, dims) if kind == "sites" else (n, 4, dims)
    h, w = shape[-2:]
    data = np.array(draw(st.lists(st.floats(-0.5, 1.0), min_size=int(np.prod(data_shape)),
                                  max_size=int(np.prod(data_shape)))), dtype=float).reshape(data_shape)
    data[..., -2] *= h
    data[..., -1] *= w
    if dims == 3:
        data[..., 0] = np.round(np.clip(data[..., 0], 0, 1) * (shape[0] - 1))
    ids = draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n, unique=True))
    features = pd.DataFrame({
        "species": pd.Series(draw(st.lists(st.one_of(st.none(), SPECIES), min_size=n, max_size=n)), dtype="str"),
        "sublattice": pd.Series(draw(st.lists(st.sampled_from(["M", "X", "H"]), min_size=n, max_size=n)),
                                dtype="str"),
        "confidence": pd.Series(draw(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), min_size=n,
                                              max_size=n)), dtype=float),
        "p32": pd.Series(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), dtype=np.float32),
        "verified": pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
        "site_id": pd.Series([-1 if draw(st.booleans()) else i for i in ids], dtype=np.int64),
        "source": pd.Categorical(draw(st.lists(st.sampled_from(["model", "human"]), min_size=n, max_size=n)),
                                 categories=["model", "human"]),
        "note": pd.Series(draw(st.lists(st.one_of(st.none(), TEXT, st.floats()), min_size=n, max_size=n)),
                          dtype=object),
    })
    if kind == "cells":
        features["class"] = pd.Series(draw(st.lists(st.sampled_from(CELL_CLASSES), min_size=n, max_size=n)),
                                      dtype="str")
    metadata = draw(st.dictionaries(st.text(max_size=4), st.one_of(st.none(), st.integers(), TEXT,
                                                                   st.floats(allow_nan=False)), max_size=3))
    return LayerAnnotation(kind, draw(TEXT), data, features, metadata)


@st.composite
def annotations(draw) -> Annotations:
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 4096), min_size=ndim, max_size=ndim)))
    ref = ImageReference(
        file=draw(st.sampled_from([None, "/data/scan.dm4"])), name=draw(TEXT), shape=shape,
        dtype=draw(st.sampled_from(["float32", "uint16", "float64"])), sha256="0" * 64,
        scale=tuple(draw(st.lists(st.floats(1e-3, 10), min_size=ndim, max_size=ndim))),
        units=tuple(draw(st.lists(st.sampled_from(["angstrom", "pixel", ""]), min_size=ndim, max_size=ndim))),
        translate=tuple(draw(st.lists(st.floats(-1e3, 1e3), min_size=ndim, max_size=ndim))))
    return Annotations(ref, draw(st.one_of(st.none(), st.sampled_from(["MoS2", "Mo0.5W0.5SSe"]))),
                       draw(st.one_of(st.none(), layer_annotations("sites", shape))),
                       draw(st.one_of(st.none(), layer_annotations("cells", shape))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(annotations())
def test_random_annotations_round_trip_exactly(ann):
    with tempfile.TemporaryDirectory() as folder:
        path = save_annotations(ann, Path(folder) / "r.annotations.json")
        back = load_annotations(path)
        assert back.equals(ann)
        for mine, theirs in ((ann.sites, back.sites), (ann.cells, back.cells)):
            if mine is not None:
                pd.testing.assert_frame_equal(theirs.features, mine.features, check_exact=True)
                assert theirs.data.dtype == mine.data.dtype and np.array_equal(theirs.data, mine.data)
        assert os.listdir(folder) == ["r.annotations.json"]
