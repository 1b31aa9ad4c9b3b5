"""Bring your own AtomAI model: training pairs from an export, a Segmentor trained on them, run back as an engine."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects.annotations.atomai_pairs import atomai_training_arrays, segmentor_classes
from napari_stem_defects.annotations.training_set import read_training_set
from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.annotations.twins import twin_annotations
from napari_stem_defects.cli import main
from napari_stem_defects.columns.atomai_engine import UntrustedModelError, load_atomai_model
from napari_stem_defects.columns.evaluate import score_sites
from napari_stem_defects.simulate import ImagingParams, simulate_twin

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def twin():
    return simulate_twin("MoS2", (160, 160), 0.12, rotation_deg=None, defects={"V_M": 0.04, "V_X1": 0.05},
                         imaging=ImagingParams(dose=1e5), seed=8_280_001)


@pytest.fixture(scope="module")
def dataset(twin, tmp_path_factory):
    ann, _ = twin_annotations(twin, "twin", classifier="physics")
    return export_training_set([(twin.image, ann)], tmp_path_factory.mktemp("atomai") / "set", verified_only=False)


def test_an_export_becomes_the_arrays_segmentor_fit_takes(dataset):
    ts = read_training_set(dataset)
    images, masks = atomai_training_arrays(dataset, tile=64)
    # 160 px: tiles at 0, 64 and 96 on each axis
    assert images.shape == (9, 1, 64, 64) and masks.shape == (9, 1, 64, 64)
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert segmentor_classes(masks) == 1
    # the last tile is flush with the corner: its mask is the export's mask there, columns = 1
    assert np.array_equal(masks[-1, 0], (ts.masks[0][96:, 96:] > 0).astype(np.float32))
    _, sites = atomai_training_arrays(dataset, tile=64, target="sites")
    assert sites.shape == (9, 64, 64) and sites.dtype == np.int64
    present = np.unique(ts.masks[0])
    assert np.array_equal(np.unique(sites), np.arange(len(present)))
    assert segmentor_classes(sites) == len(present)
    # at half the scale the images shrink and the tile with them (160 -> 80 px: one 80 px tile fits 64)
    small, small_masks = atomai_training_arrays(dataset, tile=64, nn_px=0.5 * ts.manifest["images"][0]["nn_px"])
    assert small.shape == (4, 1, 64, 64) and 0 < small_masks.mean() < masks.mean() * 1.5
    with pytest.raises(ValueError, match="multiple of 8"):
        atomai_training_arrays(dataset, tile=60)


def test_a_segmentor_trained_on_an_export_runs_back_through_the_atomai_engine(twin, dataset, tmp_path):
    atomai = pytest.importorskip("atomai")
    from napari_stem_defects.columns.atomai_engine import atomai_detection_map
    from napari_stem_defects.columns.pipeline import detect_columns

    images, masks = atomai_training_arrays(dataset, tile=64)
    torch.manual_seed(0)
    seg = atomai.models.Segmentor("Unet", nb_classes=segmentor_classes(masks), nb_filters=8)
    seg.fit(images, masks, training_cycles=40, batch_size=2, filename=str(tmp_path / "cols"), print_loss=1000,
            plot_training_history=False)
    path = tmp_path / "cols_metadict_final.tar"
    assert path.is_file()
    dmap = atomai_detection_map(twin.image, twin.nn_px, model=path, trust_model_file=True)
    truth = read_training_set(dataset).masks[0] > 0
    assert dmap.shape == twin.image.shape and 0.0 <= dmap.min() and dmap.max() <= 1.0
    # a few dozen steps already put the map's weight on the columns the masks marked
    assert dmap[truth].mean() > dmap[~truth].mean() + 0.1
    result = detect_columns(twin.image, method="atomai", model=path, trust_model_file=True, material="MoS2",
                            pixel_size=twin.pixel_size)
    assert set(result.sites["sublattice"]) == {"M", "X"}
    scores = score_sites(result.sites, twin.sites, twin.nn_px, twin.pixel_size)
    assert scores.f1 > 0.7, scores


def test_an_atomai_model_file_is_not_loaded_without_the_opt_in(twin, tmp_path, capsys):
    path = tmp_path / "someone_elses_model.tar"
    torch.save({"model_type": "seg"}, path)
    with pytest.raises(UntrustedModelError, match="pickle") as err:
        load_atomai_model(path)
    assert "trust" in str(err.value)
    image = tmp_path / "image.npy"
    np.save(image, twin.image)
    code = main(["analyze", str(image), "--method", "atomai", "--column-model", str(path), "--pixel-size", "0.12",
                 "--out", str(tmp_path / "out")])
    err_text = capsys.readouterr().err
    assert code != 0 and "--trust-model-file" in err_text and "Traceback" not in err_text
    assert not (tmp_path / "out" / "sites.csv").exists()
    # trusted, a file that is not an atomai Segmentor is a clear error too
    code = main(["analyze", str(image), "--method", "atomai", "--column-model", str(path), "--pixel-size", "0.12",
                 "--trust-model-file", "--out", str(tmp_path / "out")])
    assert code != 0 and "AtomAI" in capsys.readouterr().err
    code = main(["analyze", str(image), "--method", "atomai", "--pixel-size", "0.12", "--out", str(tmp_path / "o2")])
    assert code != 0 and "needs a model file" in capsys.readouterr().err
