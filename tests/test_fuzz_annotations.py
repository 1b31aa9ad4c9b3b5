"""Annotation files against bad input: every damage the QA fuzzing found, and random damage (hypothesis).

A damaged file is refused with an :class:`AnnotationFileError` that names it (never another exception,
never applied in silence), :func:`recover_annotations` reads what it can without raising, and whatever
either returns can be drawn as layers.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_stem_defects.annotations import (
    AnnotationFileError,
    Annotations,
    ImageReference,
    LayerAnnotation,
    annotation_layer_data,
    load_annotations,
    recover_annotations,
    save_annotations,
    sidecar_path,
)
from napari_stem_defects.annotations.schema import check_annotations
from napari_stem_defects.io.napari_reader import read_layers
from napari_stem_defects.simulate import ImagingParams, simulate_twin

PIXEL = 0.12


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small classified twin saved as ``scan.npy`` with its annotation file: (image path, text, doc)."""
    from napari_stem_defects.cells.classify import classify_site_table
    from napari_stem_defects.columns import detect_columns

    folder = tmp_path_factory.mktemp("ann")
    twin = simulate_twin("MoS2", (128, 128), PIXEL, defects={"V_X1": 0.05}, imaging=ImagingParams(dose=1e6), seed=3)
    result = detect_columns(twin.image, material="MoS2", pixel_size=PIXEL)
    cells = classify_site_table(None, result.sites, "MoS2", "physics", posteriors=result.posteriors)
    sites = result.sites.head(30).reset_index(drop=True)
    cells = cells.head(10).reset_index(drop=True)
    image_path = folder / "scan.npy"
    np.save(image_path, twin.image)
    ref = ImageReference.from_array(twin.image, name="scan", file=image_path, scale=(PIXEL, PIXEL),
                                    units=("angstrom", "angstrom"))
    polygons = np.stack([cells[["m_y_px", "m_x_px"]].to_numpy() + d for d in
                         ([0, 0], [0, 5.0], [5.0, 5.0], [5.0, 0])], axis=1)
    ann = Annotations(ref, "MoS2",
                      LayerAnnotation("sites", "scan columns", sites[["y_px", "x_px"]].to_numpy(float), sites,
                                      {"parameters": {"nn_px": 8.0, "material": "MoS2"}}),
                      LayerAnnotation("cells", "scan cells", polygons, cells,
                                      {"low_confidence": {"threshold": 0.8}, "a1_px": [0.0, 13.8],
                                       "a2_px": [12.0, -6.9], "material": "MoS2"}))
    path = save_annotations(ann, sidecar_path(image_path))
    text = path.read_text(encoding="utf-8")
    return image_path, text, json.loads(text)


def _write(path: Path, content: str | bytes | dict) -> None:
    if isinstance(content, dict):
        content = json.dumps(content)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)


def _edit(doc: dict, where: str, value) -> dict:
    """A deep copy of ``doc`` with the entry at ``where`` ('a.b.0.c') set to ``value``."""
    out = json.loads(json.dumps(doc))
    keys = [int(k) if k.isdigit() else k for k in where.split(".")]
    node = out
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return out


def _column(doc: dict, kind: str, name: str) -> int:
    return doc[kind]["features"]["columns"].index(name)


def _set_value(doc: dict, kind: str, name: str, row: int, value) -> dict:
    return _edit(doc, f"{kind}.features.values.{_column(doc, kind, name)}.{row}", value)


# Every damage the QA fuzzing reported, each with what the message must say.
CASES = {
    "n_rows 1e400": (lambda t, d: re.sub(r'"n_rows": \d+', '"n_rows": 1e400', t, count=1), "n_rows"),
    "arrays nested 100k deep": (lambda t, d: json.dumps(d).replace('"values": [[', '"values": ' + "[" * 100_000 + "1"
                                                                   + "]" * 100_000 + ', "x": [[', 1), "nested"),
    "5000-digit version": (lambda t, d: t.replace('"version": 1', '"version": ' + "1" * 5000, 1), "digits|readable"),
    "scale [0, 0]": (lambda t, d: _edit(d, "image.scale", [0, 0]), "scale"),
    "negative scale": (lambda t, d: _edit(d, "image.scale", [-PIXEL, PIXEL]), "scale"),
    "NaN translate": (lambda t, d: json.dumps(_edit(d, "image.translate", [float("nan"), 0.0])), "translate"),
    "point at NaN": (lambda t, d: _edit(d, "sites.data.values.3", [None, 4.0]), "NaN or infinite"),
    "point at inf": (lambda t, d: _edit(d, "sites.data.values.3", ["inf", 4.0]), "NaN or infinite"),
    "point at 1e308": (lambda t, d: _edit(d, "sites.data.values.3", [1e308, 4.0]), "far outside"),
    "int64 positions": (lambda t, d: _edit(_edit(d, "sites.data.dtype", "int64"), "sites.data.values.0", [10, 12]),
                        "floats"),
    "duplicated site_id": (lambda t, d: _set_value(d, "sites", "site_id", 1, d["sites"]["features"]["values"][
        _column(d, "sites", "site_id")][0]), "repeat a site_id"),
    "duplicated cell row": (lambda t, d: _set_value(d, "cells", "cell_id", 2, d["cells"]["features"]["values"][
        _column(d, "cells", "cell_id")][1]), "repeat a cell_id"),
    "duplicated JSON key": (lambda t, d: t.replace('"material": "MoS2"', '"material": "WSe2",\n "material": "MoS2"', 1),
                            "twice"),
    "class banana": (lambda t, d: _set_value(d, "cells", "class", 0, "banana"), "class"),
    "class 7": (lambda t, d: _set_value(d, "cells", "class", 0, 7), "class"),
    "species Unobtainium": (lambda t, d: _set_value(d, "sites", "species", 0, "Unobtainium"), "species"),
    "confidence 7.5": (lambda t, d: _set_value(d, "cells", "confidence", 0, 7.5), "probability"),
    "cells with 3 vertices": (lambda t, d: _edit(_edit(d, "cells.data.shape", [10, 3, 2]), "cells.data.values",
                                                 [row[:3] for row in d["cells"]["data"]["values"]]), "shape|4 corners"),
    "renamed column": (lambda t, d: _edit(d, f"cells.features.columns.{_column(d, 'cells', 'class')}", "klass"),
                       "'class' column"),
    "duplicated column": (lambda t, d: _edit(d, f"sites.features.columns.{_column(d, 'sites', 'species')}",
                                             "sublattice"), "twice"),
    "material 42": (lambda t, d: _edit(d, "material", 42), "material"),
    "unknown material": (lambda t, d: _edit(d, "material", "Unobtainium2"), "material"),
    "int column with a fraction": (lambda t, d: _set_value(d, "sites", "site_id", 0, 1.5), "whole number"),
    "ragged array": (lambda t, d: _edit(d, "sites.data.values.2", [1.0]), "fill"),
    "metadata threshold not a number": (lambda t, d: _edit(d, "cells.metadata.low_confidence.threshold", "high"),
                                        "threshold"),
    "lattice vector not numbers": (lambda t, d: _edit(d, "cells.metadata.a1_px", ["x", 1]), "a1_px"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_damage_is_refused_with_a_message_naming_the_file(saved, tmp_path, case):
    image_path, text, doc = saved
    damage, message = CASES[case]
    path = tmp_path / "scan.npy.annotations.json"
    _write(path, damage(text, doc))
    with pytest.raises(AnnotationFileError, match=message) as err:
        load_annotations(path)
    assert str(path) in str(err.value)
    recovered, notes = recover_annotations(path, ImageReference.from_array(np.load(image_path), name="scan"))
    if recovered is not None:  # whatever is recovered passes the rules and can be drawn
        check_annotations(recovered)
        annotation_layer_data(recovered)
        assert notes


@pytest.mark.parametrize("case", ["scale [0, 0]", "negative scale", "NaN translate", "metadata threshold not a number",
                                  "class banana", "point at 1e308"])
def test_the_image_still_opens_with_what_can_be_recovered(saved, tmp_path, case):
    image_path, text, doc = saved
    image = tmp_path / "scan.npy"
    image.write_bytes(image_path.read_bytes())
    _write(sidecar_path(image), CASES[case][0](text, doc))
    with pytest.warns(UserWarning, match="could not be read"):
        layers = read_layers(image)
    kinds = [kind for *_, kind in layers]
    assert kinds[0] == "image" and "shapes" in kinds  # the cells come back (the valid ones)
    data, kwargs, _ = layers[0]
    assert all(np.isfinite(kwargs["scale"])) and min(kwargs["scale"]) > 0  # never a zero, NaN or flipped scale
    assert all(np.isfinite(kwargs.get("translate", (0.0, 0.0))))
    import napari.layers

    for d, kw, kind in layers:  # napari builds every layer
        getattr(napari.layers, kind.capitalize())(d, **kw)


def test_annotations_of_an_image_of_another_shape_are_not_shown(saved, tmp_path):
    image_path, text, doc = saved
    image = tmp_path / "scan.npy"
    np.save(image, np.load(image_path)[:100])
    _write(sidecar_path(image), text)
    with pytest.warns(UserWarning, match=r"shape \(128, 128\), not \(100, 128\)"):
        layers = read_layers(image)
    assert [kind for *_, kind in layers] == ["image"]


# --------------------------------------------------------------------------- random damage


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.sampled_from(["inf", "-inf", "MoS2", "perfect", "V_M", "float32", "int64", "category"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


def _paths(obj, prefix=()):
    """Every path to a value of a JSON document (lists of more than 6 items sampled at their ends)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        idx = range(len(obj)) if len(obj) <= 6 else [0, 1, len(obj) - 1]
        for i in idx:
            yield from _paths(obj[i], (*prefix, i))


@st.composite
def damaged_files(draw, doc: dict, text: str) -> str:
    """The file's text with 1-3 random damages: a value replaced or removed, a key repeated, the end cut off."""
    out = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "replace", "delete", "cut"]))
        paths = [p for p in _paths(out) if p]
        if kind == "cut" or not paths:
            text = json.dumps(out, allow_nan=True)
            return text[: draw(st.integers(0, len(text) - 1))]
        path = draw(st.sampled_from(paths))
        node = out
        for k in path[:-1]:
            node = node[k]
        if kind == "delete" and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = draw(JSON_VALUES)
    text = json.dumps(out, allow_nan=True)
    if draw(st.booleans()) and '"name": ' in text:
        text = text.replace('"name": ', '"name": "twice", "name": ', 1)
    return text


def test_random_damage_never_crashes(saved):
    image_path, text, doc = saved
    reference = ImageReference.from_array(np.load(image_path), name="scan")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
    @given(damaged_files(doc, text))
    def check(content: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "scan.npy.annotations.json"
            path.write_text(content, encoding="utf-8")
            try:
                ann = load_annotations(path)
            except AnnotationFileError as err:
                assert str(path) in str(err)
            else:  # accepted: it follows every rule, and draws
                check_annotations(ann)
                annotation_layer_data(ann)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                recovered, notes = recover_annotations(path, reference)
            assert isinstance(notes, list)
            if recovered is not None:
                check_annotations(recovered)
                for data, kwargs, kind in annotation_layer_data(recovered):
                    assert np.isfinite(np.asarray(data, float)).all()
                    assert all(math.isfinite(s) and s > 0 for s in kwargs["scale"])

    check()
