"""Seconds per step of fine-tuning on this computer: the numbers behind the Train dock's time estimate.

Trains each model kind for a few steps (default batch sizes, the dock's number of twins) on a
training set made from a digital twin, and compares the measured time with the dock's
estimate (``train_widget.estimate_seconds``) for the same settings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def make_dataset(folder: Path) -> Path:
    """A training set of one 256 x 256 MoS2 twin whose cells are all verified."""
    from napari_stem_defects.annotations.training_set_export import export_training_set
    from napari_stem_defects.annotations.twins import twin_annotations
    from napari_stem_defects.simulate import ImagingParams, simulate_twin

    twin = simulate_twin("MoS2", (256, 256), 0.11, defects={"V_X1": 0.06, "V_M": 0.04},
                         imaging=ImagingParams(dose=1e5), seed=11)
    ann, truth = twin_annotations(twin, "bench twin")
    cells = ann.cells.features
    known = truth != ""
    cells.loc[known, "class"] = truth[known]
    cells.loc[known, "verified"] = True
    export_training_set([(twin.image, ann)], folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=2, default=(10, 40), help="two run lengths (per-step slope)")
    parser.add_argument("--twins", type=int, default=24)
    args = parser.parse_args()

    from napari_stem_defects._widgets.train_widget import estimate_seconds
    from napari_stem_defects.training.finetune import finetune_cell_cnn
    from napari_stem_defects.training.finetune_columns import finetune_column_unet

    trainers = {"cells": finetune_cell_cnn, "columns": finetune_column_unet}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp) / "set")
        for kind, train in trainers.items():
            times = []
            for steps in args.steps:
                t0 = time.perf_counter()
                train([dataset], Path(tmp) / f"{kind}-{steps}.pt", steps=steps, n_twins=args.twins,
                      eval_every=10 ** 6)
                times.append(time.perf_counter() - t0)
            per_step = (times[1] - times[0]) / (args.steps[1] - args.steps[0])
            fixed = times[0] - per_step * args.steps[0]
            rows.append((kind, per_step, fixed, times[1], estimate_seconds(kind, args.steps[1], args.twins)))
    print(f"Fine-tuning time on this computer ({args.twins} twins):")
    print("| model | s per step | s fixed (twins, evaluation, saving) | "
          f"{args.steps[1]} steps measured (s) | dock's estimate (s) |")
    print("|---|---|---|---|---|")
    for kind, per_step, fixed, total, estimate in rows:
        print(f"| {kind} | {per_step:.2f} | {fixed:.0f} | {total:.0f} | {estimate:.0f} |")


if __name__ == "__main__":
    main()
