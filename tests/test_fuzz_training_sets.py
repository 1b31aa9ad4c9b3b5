"""Training sets against bad input: every damage the QA fuzzing found, and random damage (hypothesis).

A damaged or hand-made dataset is refused with a :class:`TrainingSetError` naming it before anything is
trained (never an IndexError, EOFError or a shape error from the network, never a model of NaN weights);
annotations that would export NaN sites or a zero pixel size are refused at the export.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_stem_defects.annotations.training_checks import check_cells, check_manifest
from napari_stem_defects.annotations.training_set import (
    TrainingSetError,
    read_cells,
    read_training_set,
)
from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.annotations.twins import twin_annotations
from napari_stem_defects.simulate import ImagingParams, simulate_twin


@pytest.fixture(scope="module")
def source():
    """A twin and its annotations with a third of the cells verified (their true class)."""
    twin = simulate_twin("MoS2", (160, 160), 0.11, defects={"V_X1": 0.06, "V_M": 0.04}, imaging=ImagingParams(dose=1e5),
                         seed=5)
    ann, truth = twin_annotations(twin, "scan")
    cells = ann.cells.features
    rows = np.flatnonzero(truth != "")[::3]
    cells.loc[rows, "class"] = truth[rows]
    cells.loc[rows, "verified"] = True
    return twin.image, ann


@pytest.fixture(scope="module")
def dataset(source, tmp_path_factory):
    folder = tmp_path_factory.mktemp("set") / "set"
    export_training_set([source], folder)
    read_training_set(folder)  # intact: read without complaint
    return folder


def _copy(dataset: Path, where: Path) -> Path:
    out = where / "set"
    shutil.copytree(dataset, out)
    return out


def _manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _arrays(folder: Path, edit) -> None:
    with np.load(folder / "cells.npz") as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    with open(folder / "cells.npz", "wb") as f:
        np.savez(f, **arrays)


def _nan_crop(a):
    a["crops"] = a["crops"].copy()
    a["crops"][2, 0, 5, 5] = np.nan


CASES = {
    "images []": (lambda f: _manifest(f, lambda d: d.update(images=[])), "lists no images"),
    "empty cells.npz": (lambda f: (f / "cells.npz").write_bytes(b""), "cannot be read"),
    "truncated cells.npz": (lambda f: (f / "cells.npz").write_bytes((f / "cells.npz").read_bytes()[:3000]),
                            "cannot be read"),
    "label 99": (lambda f: _arrays(f, lambda a: a["label"].__setitem__(0, 99)), "not class numbers"),
    "label -1": (lambda f: _arrays(f, lambda a: a["label"].__setitem__(0, -1)), "not class numbers"),
    "16 x 16 crops": (lambda f: _arrays(f, lambda a: a.update(crops=a["crops"][:, :, :16, :16].copy())), r"\(2, 32, 32\)"),
    "context of width 3": (lambda f: _arrays(f, lambda a: a.update(context=a["context"][:, :3].copy())), r"\(12,\)"),
    "NaN crops": (lambda f: _arrays(f, _nan_crop), "NaN or infinite cell crops"),
    "5 labels for all crops": (lambda f: _arrays(f, lambda a: a.update(label=a["label"][:5].copy())),
                               "disagree on the number of cells"),
    "reversed class_names": (lambda f: _manifest(f, lambda d: d.update(class_names=d["class_names"][::-1])),
                             "not this plugin's classes in its order"),
    "pixel_size_A 0.0": (lambda f: _manifest(f, lambda d: d["images"][0].update(pixel_size_A=0.0)), "pixel_size_A"),
    "nn_px NaN": (lambda f: _manifest(f, lambda d: d["images"][0].update(nn_px=float("nan"))), "nn_px"),
    "material 42": (lambda f: _manifest(f, lambda d: d["images"][0].update(material=42)), "names no material"),
    "image of another cell array": (lambda f: _arrays(f, lambda a: a["image"].__setitem__(0, 7)),
                                    "name an image the manifest does not list"),
    "missing array": (lambda f: _arrays(f, lambda a: a.pop("verified")), "cannot be read|no 'verified'"),
    "pickled array": (lambda f: _arrays(f, lambda a: a.update(label=np.array([{}] * len(a["label"]), dtype=object))),
                      "cannot be read"),
}

ITEM_CASES = {
    "empty image file": (lambda f: next((f / "images").iterdir()).write_bytes(b""), "EOFError|cannot be read"),
    "NaN image": (lambda f: np.save(next((f / "images").iterdir()), np.full((160, 160), np.nan, np.float32)),
                  "NaN or infinite"),
    "3D image": (lambda f: np.save(next((f / "images").iterdir()), np.zeros((2, 160, 160), np.float32)),
                 "not a 2D image"),
    "mask of another shape": (lambda f: np.save(next((f / "masks").iterdir()), np.zeros((10, 10), np.uint8)),
                              "its mask is"),
    "damaged annotations": (lambda f: next((f / "annotations").iterdir()).write_text('{"n_rows": 1e400'),
                            "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_damage_is_refused_before_training(dataset, tmp_path, case):
    folder = _copy(dataset, tmp_path)
    damage, message = CASES[case]
    damage(folder)
    with pytest.raises(TrainingSetError, match=message) as err:
        read_cells(folder)
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("case", sorted(ITEM_CASES))
def test_each_damaged_image_is_refused_before_training_columns(dataset, tmp_path, case):
    folder = _copy(dataset, tmp_path)
    damage, message = ITEM_CASES[case]
    damage(folder)
    read_cells(folder)  # the cells alone are fine
    with pytest.raises(TrainingSetError, match=message) as err:
        read_training_set(folder)
    assert str(folder) in str(err.value)


def test_nan_sites_and_a_zero_pixel_size_are_not_exported(source, tmp_path):
    image, ann = source
    from napari_stem_defects.annotations.store import Annotations, LayerAnnotation

    sites = LayerAnnotation("sites", ann.sites.name, ann.sites.data.copy(), ann.sites.features, ann.sites.metadata)
    sites.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite positions"):
        export_training_set([(image, Annotations(ann.image, ann.material, sites, ann.cells))], tmp_path / "a")
    from dataclasses import replace

    zero = replace(ann.image, scale=(0.0, 0.0))
    with pytest.raises(ValueError, match="scale"):
        export_training_set([(image, Annotations(zero, ann.material, ann.sites, ann.cells))], tmp_path / "b")
    assert not (tmp_path / "a" / "manifest.json").exists() and not (tmp_path / "b" / "manifest.json").exists()


# --------------------------------------------------------------------------- random damage

ARRAY_DAMAGE = st.sampled_from(["nan", "inf", "shorter", "longer", "float labels", "huge label", "transpose",
                                "drop axis", "empty"])


def _damage_array(arrays: dict, name: str, how: str, index: int) -> None:
    a = arrays[name]
    i = index % max(1, len(a))
    if how in ("nan", "inf") and a.dtype.kind == "f" and a.size:
        a = a.copy()
        a.reshape(len(a), -1)[i, 0] = np.nan if how == "nan" else np.inf
    elif how == "shorter":
        a = a[: i]
    elif how == "longer":
        a = np.concatenate([a, a[:1]]) if len(a) else a
    elif how == "float labels":
        a = a.astype(np.float64) + 0.5
    elif how == "huge label" and a.dtype.kind in "iu":
        a = a.astype(np.int64)
        a[i] = 2**40
    elif how == "transpose" and a.ndim > 1:
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2))
    elif how == "drop axis" and a.ndim > 1:
        a = a[..., 0]
    elif how == "empty":
        a = a[:0]
    arrays[name] = a


MANIFEST_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(),
                            st.text(max_size=8), st.lists(st.integers(0, 3), max_size=3))


def test_random_damage_never_crashes(dataset):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(name=st.sampled_from(["crops", "context", "label", "image", "cell", "verified"]), how=ARRAY_DAMAGE,
           index=st.integers(0, 10**6),
           key=st.sampled_from(["images", "class_names", "crop", "context_length", "material", "nn_px",
                                "pixel_size_A", "shape", "version"]),
           value=MANIFEST_VALUES, damage_manifest=st.booleans())
    def check(name, how, index, key, value, damage_manifest):
        with tempfile.TemporaryDirectory() as where:
            folder = _copy(dataset, Path(where))
            _arrays(folder, lambda a: _damage_array(a, name, how, index))
            if damage_manifest:
                def edit(doc):
                    target = doc["images"][0] if key in ("material", "nn_px", "pixel_size_A", "shape") else doc
                    target[key] = value
                _manifest(folder, edit)
            try:
                manifest, arrays = read_cells(folder)
            except TrainingSetError as err:
                assert str(folder) in str(err)
                return
            check_manifest(manifest)  # accepted: it follows every rule
            check_cells(arrays, manifest)
            assert np.isfinite(arrays["crops"]).all() and len(set(map(len, arrays.values()))) == 1

    check()
