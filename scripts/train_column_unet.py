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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "napari_stem_defects" / "models" / "column_unet.pt"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, evaluate on held-out twins and save the weights."""
    from napari_stem_defects.training import script_args as sa

    parser = sa.training_parser(
        __doc__.splitlines()[0], steps=3000, batch=8, batch_help="crops per step", val=48, eval_every=250,
        out=DEFAULT_OUT, seed_help="seed of initialisation, crops and training twins", eval_only=True)
    parser.add_argument("--size", type=int, default=128, help="crop size in canonical pixels")
    parser.add_argument("--test-per-dose", type=int, default=12, help="held-out twins per dose (0: skip)")
    args = parser.parse_args(argv)

    import torch

    from napari_stem_defects.columns.unet import CANONICAL_NN_PX, DEFAULT_ARCH, load_column_model
    from napari_stem_defects.training.column_unet import SIGMA_FRACTION, heldout_metrics, train

    if args.eval_only:
        torch.set_num_threads(1)
        table = heldout_metrics(load_column_model(args.out), n_per_dose=args.test_per_dose)
        sa.write_metrics(args, {"heldout": _heldout_table(table)})
        return 0
    command = sa.command_line("train_column_unet.py", argv)
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
        "torch_version": str(torch.__version__),
    }
    sa.save_trained(model, args.out, metadata, history, sa.floats(best))
    report = {"history": history}
    if args.test_per_dose > 0:
        report["heldout"] = _heldout_table(heldout_metrics(model, n_per_dose=args.test_per_dose))
    sa.write_metrics(args, report)
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
