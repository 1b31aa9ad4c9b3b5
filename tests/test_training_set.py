"""Training sets: export the verified cells of twins, read them back, import the images and annotations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_stem_defects.annotations.training_inputs import MASK_VALUES
from napari_stem_defects.annotations.training_set import (
    FORMAT, TrainingSetError, import_training_set, read_training_set,
)
from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.annotations.twins import twin_annotations
from napari_stem_defects.simulate import CELL_CLASSES, ImagingParams, simulate_twin

pytest.importorskip("torch")

DEFECTS = {"V_X1": 0.05, "V_X2": 0.04, "V_M": 0.04, "dopant_M": 0.03, "adatom": 0.03}


def _verify(ann, truth, rows):
    """Mark cells verified with their true class, as a person's corrections would."""
    cells = ann.cells.features
    cells.loc[rows, "class"] = truth[rows]
    cells.loc[rows, "confidence"] = 1.0
    cells.loc[rows, "verified"] = True
    cells.loc[rows, "source"] = "human"


@pytest.fixture(scope="module")
def twins():
    out = []
    for k, (mat, seed) in enumerate((("MoS2", 7_100_001), ("WSe2", 7_100_002))):
        twin = simulate_twin(mat, (200, 200), 0.11, rotation_deg=None, defects=DEFECTS,
                             imaging=ImagingParams(dose=1e5), seed=seed)
        ann, truth = twin_annotations(twin, f"twin {k} {mat}")
        out.append((twin, ann, truth))
    return out


def _sources(twins, n_verified=(12, 7)):
    sources, rows = [], []
    for (twin, ann, truth), n in zip(twins, n_verified):
        ann = _copy(ann)
        r = np.flatnonzero(truth != "")
        # the least confident first (review by uncertainty), plus every defect the twin holds
        order = r[np.argsort(ann.cells.features["confidence"].to_numpy()[r], kind="stable")]
        chosen = np.unique(np.concatenate([order[:n], r[truth[r] != "perfect"][:5]]))
        _verify(ann, truth, chosen)
        sources.append((twin.image, ann))
        rows.append(chosen)
    return sources, rows


def _copy(ann):
    import copy

    return copy.deepcopy(ann)


def test_export_then_import_gives_back_identical_images_and_annotations(twins, tmp_path):
    sources, rows = _sources(twins)
    sources[1][1].saved_at, sources[1][1].saved_by = "2025-01-31T12:00:00+00:00", "alice"
    before = [_copy(a) for _, a in sources]
    manifest = export_training_set(sources, tmp_path / "set")
    assert manifest == tmp_path / "set" / "manifest.json"
    # the caller's annotations are not touched (no save provenance filled in)
    assert all(a.equals(b) for (_, a), b in zip(sources, before))
    items = import_training_set(tmp_path / "set")
    assert len(items) == 2
    for (image, ann), (image2, ann2) in zip(sources, items):
        assert image2.dtype == image.dtype and np.array_equal(image2, image)
        assert ann2.equals(ann)
    assert items[1][1].saved_by == "alice"
    info = json.loads(manifest.read_text())
    assert info["format"] == FORMAT and info["version"] == 1
    assert [e["material"] for e in info["images"]] == ["MoS2", "WSe2"]
    assert info["images"][0]["pixel_size_A"] == pytest.approx(0.11)
    assert info["totals"]["n_cells"] == sum(len(r) for r in rows)
    assert info["crop"] == {"size": 32, "canonical_nn_px": 11.0, "channels": ["X2 centred", "M centred"]}
    assert info["class_names"] == list(CELL_CLASSES)


def test_cells_are_the_classifier_inputs_with_the_verified_labels(twins, tmp_path):
    from napari_stem_defects.annotations.training_inputs import cell_table_positions, nn_of_cells
    from napari_stem_defects.composition import class_mask
    from napari_stem_defects.cells.cnn import classify_cells, load_cell_model, predict_logits, probabilities

    sources, rows = _sources(twins)
    ts = read_training_set(export_training_set(sources, tmp_path / "set"))
    n = sum(len(r) for r in rows)
    assert ts.crops.shape == (n, 2, 32, 32) and ts.crops.dtype == np.float32
    assert ts.context.shape == (n, 12) and ts.context.dtype == np.float32
    assert ts.labels.dtype == np.int16 and ts.verified.all()
    model = load_cell_model()
    for k, ((image, ann), r) in enumerate(zip(sources, rows)):
        mine = ts.image_index == k
        np.testing.assert_array_equal(ts.cell_index[mine], r)
        cls = ann.cells.features["class"].to_numpy()[r]
        assert [CELL_CLASSES[i] for i in ts.labels[mine]] == list(cls)
        assert len(set(cls)) >= 3  # defects and perfect cells
        # the exported crops and context are exactly what the network saw: the same class-balanced
        # probabilities (the layer's own are under the prior of all the image's cells, not only these,
        # and after the Z-contrast check, which is not the network's)
        p = probabilities(predict_logits(model, ts.crops[mine], ts.context[mine]), class_mask(ann.material))
        m, x, complete = cell_table_positions(ann.cells.features)
        expected = classify_cells(image, m, x, nn_of_cells(m, x, complete), ann.material, prior="balanced",
                                  z_contrast=False)[r]
        np.testing.assert_allclose(p, expected, atol=2e-5)
        assert ts.manifest["images"][k]["n_verified"] == len(r)
        assert sum(ts.manifest["images"][k]["class_counts"].values()) == len(r)


def test_masks_mark_the_occupied_sites_by_sublattice(twins, tmp_path):
    sources, _ = _sources(twins)
    ts = read_training_set(export_training_set(sources, tmp_path / "set"))
    for (image, ann), mask in zip(sources, ts.masks):
        assert mask.shape == image.shape and mask.dtype == np.uint8
        f = ann.sites.features
        yx = np.round(f[["y_px", "x_px"]].to_numpy()).astype(int)
        inside = np.all((yx >= 0) & (yx < image.shape), axis=1)
        value = np.zeros(len(f), int)
        value[inside] = mask[yx[inside, 0], yx[inside, 1]]
        occupied = f["species"].to_numpy() != "empty"
        for sub, v in MASK_VALUES.items():
            there = inside & occupied & (f["sublattice"].to_numpy() == sub)
            if sub != "H":
                assert there.sum() > 20
            assert (value[there] == v).all(), sub
        empty = inside & ~occupied
        assert empty.sum() >= 3 and (value[empty] == 0).all()
        # discs of 0.25 nn: a small share of the image
        assert 0.02 < (mask > 0).mean() < 0.35


def test_all_cells_nothing_verified_and_folders(twins, tmp_path):
    twin, ann, truth = twins[0]
    with pytest.raises(ValueError, match="nothing to export"):
        export_training_set([(twin.image, ann)], tmp_path / "none")
    assert not (tmp_path / "none" / "manifest.json").exists()
    ts = read_training_set(export_training_set([(twin.image, ann)], tmp_path / "all", verified_only=False))
    classed = (ann.cells.features["class"] != "incomplete").sum()  # border cells have no class to learn
    assert len(ts.labels) == classed and not ts.verified.any()
    # a foreign non-empty folder is refused; a training set is replaced, stale files removed
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    sources, rows = _sources(twins)
    with pytest.raises(ValueError, match="not a training set"):
        export_training_set(sources, tmp_path / "foreign")
    two = read_training_set(export_training_set(sources, tmp_path / "all"))
    assert len(two.items) == 2 and len(two.labels) == sum(len(r) for r in rows)
    again = read_training_set(export_training_set(sources[:1], tmp_path / "all"))
    assert len(again.items) == 1 and len(list((tmp_path / "all" / "images").iterdir())) == 1
    with pytest.raises(TrainingSetError, match="no manifest.json"):
        read_training_set(tmp_path / "foreign")
    with pytest.raises(ValueError, match="2D"):
        export_training_set([(np.stack([twin.image] * 2), ann)], tmp_path / "stack")
