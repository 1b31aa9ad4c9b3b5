"""The deep column detector (columns.unet): packaged weights, map contract, tiling, cancel."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_stem_defects.columns import unet  # noqa: E402
from napari_stem_defects.simulate import random_imaging, simulate_twin  # noqa: E402

#: Seed of the held-out twin; training twins use seeds >= 10_000_000, validation 1..N.
HELD_OUT_SEED = 777_777


def _twin(nn_px: float, shape=(256, 256), dose=1e6, seed=HELD_OUT_SEED, defects=None):
    a = 3.16  # MoS2
    imaging = dataclasses.replace(random_imaging(np.random.default_rng(seed), (1e3, 1e7)), dose=dose)
    return simulate_twin(
        "MoS2", shape, a / math.sqrt(3) / nn_px, rotation_deg=None,
        defects=defects if defects is not None else {"V_X2": 0.05, "V_M": 0.03},
        imaging=imaging, seed=seed,
    )


def test_import_does_not_import_torch():
    code = "import sys, napari_stem_defects.columns.unet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_packaged_weights_load_with_weights_only():
    path = unet.default_weights_path()
    payload = torch.load(path, weights_only=True, map_location="cpu")
    assert set(payload) == {"state_dict", "metadata"}
    meta = payload["metadata"]
    assert meta["canonical_nn_px"] == unet.CANONICAL_NN_PX
    assert "train_column_unet.py" in meta["training_command"]
    assert path.stat().st_size < 2e6
    model = unet.load_column_model()
    assert model is unet.load_column_model()  # cached
    assert not model.training
    assert model.metadata["arch"]["channels"] == list(unet.DEFAULT_ARCH["channels"])


def test_missing_weights_raise_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_column_unet.py"):
        unet.load_column_model(tmp_path / "nope.pt")


def test_map_shape_dtype_range_any_dtype():
    twin = _twin(13.0, shape=(150, 171), dose=1e5)
    raw = (twin.image / twin.image.max() * 20000 + 3000).astype(np.uint16)
    dmap = unet.deep_detection_map(raw, 13.0)
    assert dmap.shape == raw.shape and dmap.dtype == np.float32
    assert 0.0 <= dmap.min() and dmap.max() <= 1.0
    assert dmap.max() > 0.8 and np.median(dmap) < 0.2


def test_map_high_at_columns_low_at_vacancies():
    nn = 12.0
    twin = _twin(nn)
    dmap = unet.deep_detection_map(twin.image, nn)
    sites = twin.sites
    iy = np.clip(np.round(sites["y_px"].to_numpy()).astype(int), 0, dmap.shape[0] - 1)
    ix = np.clip(np.round(sites["x_px"].to_numpy()).astype(int), 0, dmap.shape[1] - 1)
    values = dmap[iy, ix]
    occupied = sites["species"].to_numpy() != ""
    assert (~occupied).sum() >= 10  # the twin has vacancies
    assert np.mean(values[occupied] > 0.5) >= 0.98
    assert np.mean(values[~occupied] < 0.3) >= 0.90


def test_tiled_equals_untiled():
    twin = _twin(11.0, shape=(200, 180), dose=1e5)
    whole = unet.deep_detection_map(twin.image, 11.0, tile=512)
    calls = []
    tiled = unet.deep_detection_map(twin.image, 11.0, tile=192, progress=calls.append)
    assert len(calls) >= 6  # several tiles
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(tiled, whole, atol=1e-3)


def test_cancel_raises_interrupted():
    twin = _twin(11.0, shape=(128, 128), dose=1e5)
    with pytest.raises(InterruptedError):
        unet.deep_detection_map(twin.image, 11.0, cancel=lambda: True)


@pytest.mark.parametrize("bad", [np.zeros((4, 64, 64)), np.zeros(64)])
def test_rejects_non_2d(bad):
    with pytest.raises(ValueError):
        unet.deep_detection_map(bad, 11.0)


def test_rejects_bad_nn():
    with pytest.raises(ValueError):
        unet.deep_detection_map(np.zeros((64, 64)), -1.0)
