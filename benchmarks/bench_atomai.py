"""Benchmark: an atomai Segmentor against our U-Net and the classical method for column detection.

Both networks are trained from scratch for the same wall-clock budget
(``--budget`` seconds, default 180) on the same digital twins (the column
U-Net's own training examples, :func:`napari_stem_defects.training.column_unet.make_example`,
seeds from ``TRAIN_SEED_BASE``; atomai gets each example's column mask, the
target blobs above 0.5): atomai's ``Segmentor('Unet', nb_classes=1)`` through
atomai's own trainer (``fit``), our U-Net architecture (``build_column_unet``)
through a plain Adam loop on the same arrays with its own blob targets. The
shipped U-Net (trained for hours, ``models/column_unet.md``) and the
classical method are the references.

Scored on fresh twins (seeds from ``TEST_SEED_BASE``, never trained on) at
doses 1e4, 1e5, 1e6 e/Å^2, at the scale the networks were trained at
(nn = 11 px): F1 and position RMSE (pm) of the occupied columns,
:func:`napari_stem_defects.columns.evaluate.score_sites`, through the same
peaks, refinement and site steps (``detect_columns``, methods 'atomai',
'deep' and 'classical').

Run ``python benchmarks/bench_atomai.py [--budget 180] [--twins 48] [--per-dose 4] [--threads 2]``;
the default run takes about 10-15 minutes on a 2-core laptop CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_stem_defects.columns.evaluate import score_sites
from napari_stem_defects.columns.pipeline import detect_columns
from napari_stem_defects.columns.result import ColumnDetectionError
from napari_stem_defects.columns.unet import CANONICAL_NN_PX, build_column_unet
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.training.column_unet import TEST_SEED_BASE, TRAIN_SEED_BASE, make_example

DOSES = (1e4, 1e5, 1e6)
DEFECTS = {"V_X1": 0.05, "V_X2": 0.03, "V_M": 0.03, "dopant_M": 0.03, "adatom": 0.02}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}"


def training_arrays(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same twins (n, 1, s, s) as each engine normalises them: atomai's images (0-1) and masks, ours and targets."""
    from napari_stem_defects.columns.atomai_engine import atomai_normalize

    ex = [make_example(TRAIN_SEED_BASE + k, size) for k in range(n)]
    ours = np.stack([e["image"] for e in ex])[:, None].astype(np.float32)
    targets = np.stack([e["target"] for e in ex])[:, None].astype(np.float32)
    atomai_images = np.stack([atomai_normalize(e["image"]) for e in ex])[:, None]
    return atomai_images, (targets > 0.5).astype(np.float32), ours, targets


def train_atomai(images: np.ndarray, masks: np.ndarray, budget: float, out: Path, batch: int) -> tuple[Path, int]:
    """atomai Segmentor trained for about ``budget`` seconds; returns its file and the cycles run."""
    import atomai
    import torch

    torch.manual_seed(0)
    probe = atomai.models.Segmentor("Unet", nb_classes=1)
    t0 = time.perf_counter()
    # atomai's trainer wants a test set of at least one batch; it only prints its loss (no early stopping)
    monitor = (images[:batch], masks[:batch])
    probe.fit(images, masks, *monitor, training_cycles=5, batch_size=batch, filename=str(out / "probe"),
              print_loss=10**6, plot_training_history=False)
    per_cycle = (time.perf_counter() - t0) / 5
    cycles = max(5, int(budget / per_cycle))
    torch.manual_seed(0)
    seg = atomai.models.Segmentor("Unet", nb_classes=1)
    seg.fit(images, masks, *monitor, training_cycles=cycles, batch_size=batch, filename=str(out / "atomai"),
            print_loss=10**6, plot_training_history=False)
    return out / "atomai_metadict_final.tar", cycles


def train_ours(images: np.ndarray, targets: np.ndarray, budget: float, batch: int) -> tuple[object, int]:
    """Our column U-Net architecture, from scratch, Adam on BCE with logits, for ``budget`` seconds."""
    import torch

    torch.manual_seed(0)
    model = build_column_unet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(targets)
    gen = torch.Generator().manual_seed(0)
    model.train()
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget:
        idx = torch.randint(len(x), (batch,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    return model, steps


def test_twins(per_dose: int, size: int) -> list[tuple[float, object]]:
    out = []
    for d, dose in enumerate(DOSES):
        for k in range(per_dose):
            mat = ("MoS2", "WSe2", "MoSe2", "WS2")[k % 4]
            pixel = parse_material(mat).a / np.sqrt(3) / CANONICAL_NN_PX
            twin = simulate_twin(mat, (size, size), pixel, rotation_deg=None, defects=DEFECTS,
                                 imaging=ImagingParams(dose=dose), seed=TEST_SEED_BASE + 900_000 + 100 * d + k)
            out.append((dose, twin))
    return out


def score(twins, engines: dict[str, tuple[str, object]]) -> pd.DataFrame:
    rows = []
    for name, (method, model) in engines.items():
        for dose, twin in twins:
            t0 = time.perf_counter()
            try:
                pred = detect_columns(twin.image, method=method, material=twin.material.name, model=model,
                                      trust_model_file=True).sites
                s = score_sites(pred, twin.sites, twin.nn_px, twin.pixel_size).as_dict()
            except ColumnDetectionError:
                s = {"f1": 0.0, "rmse_pm": np.nan}
            rows.append({"engine": name, "dose": f"{dose:.0e}", "F1": s["f1"], "RMSE pm": s["rmse_pm"],
                         "s/image": time.perf_counter() - t0})
    return pd.DataFrame(rows).groupby(["engine", "dose"], sort=False).mean().reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per network (default 180)")
    parser.add_argument("--twins", type=int, default=48, help="training twins (default 48)")
    parser.add_argument("--size", type=int, default=128, help="training example side, px (default 128)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--per-dose", type=int, default=4, help="test twins per dose (default 4)")
    parser.add_argument("--test-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200, "display.precision", 3)
    print(f"# bench_atomai on {machine()}, torch threads {args.threads}")
    images, masks, ours_images, targets = training_arrays(args.twins, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path, cycles = train_atomai(images, masks, args.budget, Path(tmp), args.batch)
        t_atomai = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours, steps = train_ours(ours_images, targets, args.budget, args.batch)
        t_ours = time.perf_counter() - t0
        print(f"# trained on {args.twins} twins of {args.size} px, batch {args.batch}: atomai Segmentor "
              f"{cycles} cycles in {t_atomai:.0f} s (incl. its 5-cycle timing probe); our U-Net {steps} steps "
              f"in {t_ours:.0f} s\n")
        engines = {"atomai Segmentor (budget)": ("atomai", str(path)), "our U-Net (budget)": ("deep", ours),
                   "our U-Net (shipped)": ("deep", None), "classical": ("classical", None)}
        table = score(test_twins(args.per_dose, args.test_size), engines)
    print(f"## Column detection on fresh twins ({args.per_dose} per dose, {args.test_size}^2 px, nn 11 px)")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
