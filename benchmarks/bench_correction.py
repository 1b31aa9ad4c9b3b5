"""The correction loop: correct N cells of shifted images, retrain, measure; and annotation save/load time.

Run (about 5-10 min on 2 cores; ``--quick`` for a smoke run of about a minute)::

    python benchmarks/bench_correction.py            # prints markdown tables

Sections:

1. **Correction loop** on twins made to differ from the shipped classifier's
   training distribution: MoS2 at a dose of 2e3 e/Å^2 (training saw 1e4-1e7),
   random imaging, scale and rotation otherwise. The shipped model classifies
   the cells of a pool of such twins; a person reviewing by uncertainty
   corrects the N least confident cells (N = 50, 200), here by setting them to
   their true class; the corrections are exported
   (:func:`~napari_stem_defects.annotations.training_set_export.export_training_set`)
   and the shipped model is fine-tuned on them mixed with digital twins
   (:func:`~napari_stem_defects.training.finetune.finetune_cell_cnn`, its
   defaults). Accuracy and macro-F1 are measured before and after on held-out
   twins of the same kind (other seeds, never corrected), from ground-truth
   positions with a detector-like error of up to 0.1 nn, through
   :func:`~napari_stem_defects.cells.cnn.classify_cells` as users call it.
   As a control, the same fine-tuning with the labels of the N cells left as
   the model gave them (no correction: only the twins and the model's own
   opinion) shows how much of the gain the corrections bring.
2. **Save and reload** the annotations of a 2048 x 2048 twin with about
   15,000 cells and its sites (:func:`~napari_stem_defects.annotations.store.save_annotations`,
   :func:`~napari_stem_defects.annotations.store.load_annotations`): time, file size, exact round trip.

Seeds: correction pool from 70_000_000, held-out twins from 71_000_000, the
save/load twin 72_000_000; none is a training, validation, test or fine-tuning
twin seed, nor one the tests use.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_stem_defects.annotations.store import load_annotations, save_annotations
from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.annotations.twins import twin_annotations
from napari_stem_defects.cells.cnn import classify_cells, load_cell_model
from napari_stem_defects.simulate import CELL_CLASSES, ImagingParams, simulate_twin
from napari_stem_defects.training.cell_cnn import (
    class_metrics, jitter, random_cell_twin, twin_cells, twin_nn_px,
)
from napari_stem_defects.training.finetune import finetune_cell_cnn

POOL_SEED_BASE = 70_000_000
HELDOUT_SEED_BASE = 71_000_000
IO_SEED = 72_000_000
#: The shift: a dose below the shipped classifier's training range (1e4-1e7 e/Å^2).
SHIFT = {"material": "MoS2", "dose": 2e3}


def make_twins(base: int, n: int, size: int) -> list:
    """``n`` shifted twins (seeds ``base``, ``base + 1``...)."""
    return [random_cell_twin(base + k, size, dose=SHIFT["dose"], material=SHIFT["material"]) for k in range(n)]


def heldout_inputs(twins: list) -> list:
    """Per twin: image, jittered metal and X2 positions, nn, material, true labels (fixed for every model)."""
    out = []
    for k, twin in enumerate(twins):
        nn = twin_nn_px(twin)
        m, x, labels = twin_cells(twin)
        rng = np.random.default_rng([HELDOUT_SEED_BASE + k, 1])
        out.append((twin.image, jitter(m, nn, rng), jitter(x, nn, rng), nn, twin.material, labels))
    return out


def evaluate(model, inputs: list) -> dict:
    """Accuracy, macro-F1 and per-class metrics of a model on the held-out cells."""
    k = len(CELL_CLASSES)
    cm = np.zeros((k, k), np.int64)
    for image, m, x, nn, mat, labels in inputs:
        p = classify_cells(image, m, x, nn, mat, model=model)
        cm += np.bincount(labels * k + p.argmax(1), minlength=k * k).reshape(k, k)
    return class_metrics(cm)


def pool_annotations(twins: list) -> list:
    """The shipped model's annotations of the pool twins and the true class of each cell."""
    return [(twin.image, *twin_annotations(twin, f"pool {k}")) for k, twin in enumerate(twins)]


def corrected_sources(pool: list, n: int, correct: bool = True) -> tuple[list, dict]:
    """Mark the ``n`` least confident cells of the pool (over all its images) verified; with ``correct``,
    set them to their true class (a person's correction), else keep the model's class (control)."""
    conf = []
    for k, (_, ann, truth) in enumerate(pool):
        c = ann.cells.features["confidence"].to_numpy(float)
        for r in np.flatnonzero(truth != ""):
            conf.append((c[r], k, r))
    conf.sort()
    chosen = conf[:n]
    sources, n_changed = [], 0
    counts = dict.fromkeys(CELL_CLASSES, 0)
    for k, (image, ann, truth) in enumerate(pool):
        rows = np.array([r for _, kk, r in chosen if kk == k], dtype=np.int64)
        if len(rows) == 0:
            continue
        ann = copy.deepcopy(ann)
        cells = ann.cells.features
        if correct:
            n_changed += int((cells.loc[rows, "class"].to_numpy() != truth[rows]).sum())
            cells.loc[rows, "class"] = truth[rows]
            cells.loc[rows, "confidence"] = 1.0
            cells.loc[rows, "source"] = "human"
        cells.loc[rows, "verified"] = True
        for c in cells.loc[rows, "class"]:
            counts[c] += 1
        sources.append((image, ann))
    return sources, {"changed": n_changed, "counts": {c: n for c, n in counts.items() if n}}


def section_correction(args) -> None:
    print(f"\n## Correction loop: {SHIFT['material']} at {SHIFT['dose']:g} e/Å^2 (training: 1e4-1e7)\n")
    t0 = time.time()
    pool = pool_annotations(make_twins(POOL_SEED_BASE, args.pool, args.size))
    inputs = heldout_inputs(make_twins(HELDOUT_SEED_BASE, args.heldout, args.size))
    n_pool = sum(len(a.cells.features) for _, a, _ in pool)
    n_held = sum(len(i[-1]) for i in inputs)
    pool_acc = np.mean(np.concatenate([a.cells.features["class"].to_numpy() == t for _, a, t in pool]))
    print(f"pool: {args.pool} twins, {n_pool} cells (shipped model accuracy there {pool_acc:.3f}); held out: "
          f"{args.heldout} twins, {n_held} cells; twins of {args.size} canonical px ({time.time() - t0:.0f} s)")
    shipped = load_cell_model()
    before = evaluate(shipped, inputs)
    rows, per_class = [], {"shipped": before}
    settings = {"steps": args.steps, "batch": args.batch, "n_twins": args.twins, "threads": args.threads,
                "val_fraction": 0.0, "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            for correct in (True, False) if args.control else (True,):
                sources, info = corrected_sources(pool, n, correct)
                data = Path(tmp) / f"set_{n}_{correct}"
                export_training_set(sources, data)
                t1 = time.time()
                result = finetune_cell_cnn([data], Path(tmp) / f"model_{n}_{correct}.pt", **settings)
                train_s = time.time() - t1
                after = evaluate(load_cell_model(result.path), inputs)
                label = f"{n} corrected" if correct else f"{n} unchanged (control)"
                per_class[label] = after
                rows.append((label, info, before, after, train_s))
    print("\nHeld-out cells (single mode, class-balanced output); fine-tuning "
          f"{args.steps} steps x {args.batch} cells, half from {args.twins} fresh twins:\n")
    print("| cells reviewed | labels changed | accuracy before | after | gain | macro-F1 before | after | gain "
          "| train s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, info, b, a, s in rows:
        print(f"| {label} | {info['changed']} | {b['accuracy']:.3f} | {a['accuracy']:.3f} | "
              f"{a['accuracy'] - b['accuracy']:+.3f} | {b['macro_f1']:.3f} | {a['macro_f1']:.3f} | "
              f"{a['macro_f1'] - b['macro_f1']:+.3f} | {s:.0f} |")
    print("\nClasses of the reviewed cells: " + "; ".join(f"{label}: {info['counts']}" for label, info, *_ in rows))
    print("\nPer-class F1 on the held-out cells:\n")
    names = list(per_class)
    print("| class | support | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for c in CELL_CLASSES:
        support = before["per_class"][c]["support"]
        if support:
            print(f"| {c} | {support} | " + " | ".join(f"{per_class[k]['per_class'][c]['f1']:.3f}" for k in names)
                  + " |")


def section_io(args) -> None:
    side = args.io_size
    print(f"\n## Save and reload the annotations of a {side} x {side} twin\n")
    t0 = time.time()
    twin = simulate_twin("MoS2", (side, side), 0.176, rotation_deg=None,
                         defects={"V_X1": 0.03, "V_M": 0.01, "dopant_M": 0.01, "adatom": 0.005},
                         imaging=ImagingParams(dose=1e5), seed=IO_SEED)
    ann, _ = twin_annotations(twin, "big", classifier="physics")
    print(f"{len(ann.cells.features)} cells, {len(ann.sites.features)} sites "
          f"(simulated and classified in {time.time() - t0:.0f} s)\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.npy.annotations.json"
        times = {"save": [], "load": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            save_annotations(ann, path)
            times["save"].append(time.perf_counter() - t)
            t = time.perf_counter()
            back = load_annotations(path)
            times["load"].append(time.perf_counter() - t)
        size_mb = path.stat().st_size / 1e6
        exact = back.equals(ann)
    print("| cells | sites | file MB | save s (median) | load s (median) | exact round trip |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {len(ann.cells.features)} | {len(ann.sites.features)} | {size_mb:.1f} | "
          f"{np.median(times['save']):.2f} | {np.median(times['load']):.2f} | {exact} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=16, help="twins whose cells may be corrected")
    parser.add_argument("--heldout", type=int, default=16, help="held-out twins")
    parser.add_argument("--size", type=int, default=192, help="twin side in canonical pixels (nn = 11 px)")
    parser.add_argument("--n", type=int, nargs="+", default=[50, 200], help="cells corrected")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--twins", type=int, default=24, help="twins mixed into fine-tuning batches")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="skip the control runs (the N cells with the model's labels)")
    parser.add_argument("--io-size", type=int, default=2048, help="side of the save/load twin (px)")
    parser.add_argument("--repeats", type=int, default=3, help="save/load repetitions")
    parser.add_argument("--sections", nargs="+", default=["correction", "io"])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers not meaningful)")
    args = parser.parse_args()
    if args.quick:
        args.pool, args.heldout, args.size, args.n = 3, 3, 128, [10, 30]
        args.steps, args.batch, args.twins, args.io_size, args.repeats = 20, 32, 2, 512, 1
    import torch

    torch.set_num_threads(args.threads)
    print(f"# Correction loop benchmark{' (quick smoke run)' if args.quick else ''}\n\n"
          f"machine: {os.cpu_count()} CPU cores, torch threads {args.threads}")
    t0 = time.time()
    if "correction" in args.sections:
        section_correction(args)
    if "io" in args.sections:
        section_io(args)
    print(f"\ntotal {time.time() - t0:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
