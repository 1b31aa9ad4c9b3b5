#!/usr/bin/env python
"""Choose the weight of the Z-contrast antisite check on tuning twins (never training or benchmark seeds).

Example
-------
    python scripts/tune_z_contrast.py --per 16

For each host and dose, classifies tuning twins with the packaged CNN (from
ground-truth positions with the benchmark's detector-like error), computes the
Z-contrast log odds of M_X against sub_X (``cells.z_contrast.antisite_evidence``)
and prints the F1 of both classes for each candidate weight, and the weight
with the best mean F1 over all rows. ``cells.z_contrast.ANTISITE_WEIGHT`` is
set from that by hand.

Tuning seeds: 2,600,000 + 10,000 * host number + 1,000 * dose number + i
(training twins are 20,000,000+, validation 2,500,000+, benchmark 3,000,000+).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

TUNE_SEED_BASE = 2_600_000
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 1e3)


def main(argv: list[str] | None = None) -> int:
    """Collect evidence on tuning twins and print the F1 table per weight."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per", type=int, default=16, help="tuning twins per host and dose")
    parser.add_argument("--materials", nargs="+", default=["MoS2", "WSe2", "MoTe2"])
    parser.add_argument("--doses", nargs="+", type=float, default=[1e5, 1e6])
    args = parser.parse_args(argv)

    from napari_stem_defects.cells.cnn import classify_cells, load_cell_model
    from napari_stem_defects.cells.crops import prepare_image
    from napari_stem_defects.cells.z_contrast import antisite_evidence, arbitrate
    from napari_stem_defects.simulate import CELL_CLASSES
    from napari_stem_defects.training.cell_cnn import class_metrics, heldout_twin, jitter, twin_cells

    model = load_cell_model()
    k = len(CELL_CLASSES)
    scores = {w: [] for w in WEIGHTS}
    print("| host | dose | M_X + sub_X cells | " + " | ".join(f"w={w:g} M_X / sub_X" for w in WEIGHTS) + " |")
    print("|---|---|---|" + "---|" * len(WEIGHTS))
    for mat in args.materials:
        for dose in args.doses:
            runs = []
            for i in range(args.per):
                twin, seed = heldout_twin(mat, dose, i, seed_base=TUNE_SEED_BASE, imaging="clean")
                m, x, labels = twin_cells(twin)
                rng = np.random.default_rng([seed, 1])
                mj, xj = jitter(m, twin.nn_px, rng), jitter(x, twin.nn_px, rng)
                p = classify_cells(twin.image, mj, xj, twin.nn_px, twin.material, model=model, z_contrast=False)
                log_odds, _ = antisite_evidence(p, prepare_image(twin.image, twin.nn_px), mj, xj,
                                                twin.nn_px, twin.material)
                runs.append((p, log_odds, labels))
            cells = [f"{mat}", f"{dose:.0e}",
                     str(sum(int(np.isin(lab, [CELL_CLASSES.index("M_X"), CELL_CLASSES.index("sub_X")]).sum())
                             for _, _, lab in runs))]
            for w in WEIGHTS:
                cm = np.zeros((k, k), dtype=np.int64)
                for p, log_odds, labels in runs:
                    q = p if log_odds is None else arbitrate(p, log_odds, w)
                    cm += np.bincount(labels * k + q.argmax(1), minlength=k * k).reshape(k, k)
                per = class_metrics(cm)["per_class"]
                f_m, f_s = per["M_X"]["f1"], per["sub_X"]["f1"]
                scores[w].append((f_m + f_s) / 2)
                cells.append(f"{f_m:.3f} / {f_s:.3f}")
            print("| " + " | ".join(cells) + " |", flush=True)
    best = max(WEIGHTS, key=lambda w: np.mean(scores[w]))
    print("\nmean of (M_X F1 + sub_X F1) / 2 over the rows: "
          + ", ".join(f"w={w:g}: {np.mean(scores[w]):.4f}" for w in WEIGHTS))
    print(f"best weight: {best:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
