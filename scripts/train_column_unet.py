#!/usr/bin/env python
"""Train the column U-Net on digital twins and write the packaged weights.

Example
-------
    taskset -c 1 python scripts/train_column_unet.py --steps 3000 --batch 8 --size 128

Prints validation metrics while training, then held-out detection metrics
per dose (precision / recall / F1 of peaks picked from the map), and writes
``src/napari_stem_defects/models/column_unet.pt`` (state dict + metadata).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "napari_stem_defects" / "models" / "column_unet.pt"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, evaluate on held-out twins and save the weights."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--size", type=int, default=128, help="crop size in canonical pixels")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="weights file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, crops and training twins")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam)")
    parser.add_argument("--val", type=int, default=48, help="validation twins")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between validations")
    parser.add_argument("--test-per-dose", type=int, default=12, help="held-out twins per dose (0: skip)")
    parser.add_argument("--metrics-json", type=Path, default=None, help="also write the metrics here")
    parser.add_argument("--eval-only", action="store_true",
                        help="do not train: evaluate the weights in --out on the held-out twins")
    args = parser.parse_args(argv)

    import torch

    from napari_stem_defects.columns.unet import CANONICAL_NN_PX, DEFAULT_ARCH, load_column_model
    from napari_stem_defects.training.column_unet import (
        SIGMA_FRACTION, heldout_metrics, save_weights, train,
    )

    if args.eval_only:
        torch.set_num_threads(1)
        table = heldout_metrics(load_column_model(args.out), n_per_dose=args.test_per_dose)
        report = {"heldout": _heldout_table(table)}
        if args.metrics_json is not None:
            args.metrics_json.write_text(json.dumps(report, indent=1, default=float))
        return 0
    command = "python scripts/train_column_unet.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    model, history = train(
        args.steps, args.batch, args.size, args.seed, lr=args.lr, n_val=args.val,
        eval_every=args.eval_every, log=lambda s: print(s, flush=True),
    )
    best = history["best"]
    print(f"best validation (step {best['step']}): P {best['precision']:.4f} R {best['recall']:.4f} "
          f"F1 {best['f1']:.4f}; training took {history['train_seconds'] / 60:.1f} min", flush=True)
    metadata = {
        "arch": {"in_channels": DEFAULT_ARCH["in_channels"], "channels": list(DEFAULT_ARCH["channels"])},
        "canonical_nn_px": float(CANONICAL_NN_PX),
        "target_sigma_nn": float(SIGMA_FRACTION),
        "output": "logits; sigmoid gives the detection map",
        "training_command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": float(history["train_seconds"]),
        "torch_version": str(torch.__version__),
        "validation": {k: float(v) for k, v in best.items()},
    }
    save_weights(model, args.out, metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)", flush=True)
    report = {"history": history}
    if args.test_per_dose > 0:
        report["heldout"] = _heldout_table(heldout_metrics(model, n_per_dose=args.test_per_dose))
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(report, indent=1, default=float))
    return 0


def _heldout_table(table: dict) -> dict:
    """Print the held-out metrics as a markdown table; return them with string keys."""
    print("| dose (e/Å²) | scored sites | precision | recall | F1 | empty sites with a peak |")
    print("|---|---|---|---|---|---|")
    for dose, m in table.items():
        print(f"| {dose:.0e} | {m['n_sites']} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
              f"{m['empty_with_peak']:.4f} |", flush=True)
    return {f"{k:.0e}": v for k, v in table.items()}


if __name__ == "__main__":
    sys.exit(main())
