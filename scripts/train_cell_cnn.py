#!/usr/bin/env python
"""Train the unit-cell defect classifier on digital twins and write the packaged weights.

Example
-------
    taskset -c 1 python scripts/train_cell_cnn.py --steps 24000 --batch 256 --twins 5000

Prints validation metrics while training, then held-out per-class precision /
recall / F1 per material and dose, and writes
``src/napari_stem_defects/models/cell_cnn.pt`` (state dict + metadata).
``--init FILE`` continues from an earlier weights file; the chain of earlier
runs is kept in the new file's metadata under ``init_from``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "napari_stem_defects" / "models" / "cell_cnn.pt"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, evaluate on held-out twins and save the weights."""
    from napari_stem_defects.training import script_args as sa

    parser = sa.training_parser(
        __doc__.splitlines()[0], steps=24000, batch=256, batch_help="crops per step", twins=5000, val=120,
        eval_every=2000, out=DEFAULT_OUT, seed_help="seed of initialisation, sampling and training twins",
        long_runs=True, eval_only=True)
    parser.add_argument("--test-per", type=int, default=10, help="held-out twins per material and dose (0: skip)")
    parser.add_argument("--mode", default="single", choices=("single", "two-stage"), help="held-out decision rule")
    parser.add_argument("--table-share", type=float, default=None,
                        help="share of training twins imaged through the multislice-calibrated table "
                             "(default training.cell_cnn.TABLE_SHARE; 0: the shipped stage-1 data)")
    parser.add_argument("--imaging", default="clean", choices=("clean", "random"),
                        help="held-out imaging: texture capped at 10^-3.5 (clean) or the full training range")
    args = parser.parse_args(argv)

    import torch

    from napari_stem_defects.cells.cnn import DEFAULT_ARCH, load_cell_model
    from napari_stem_defects.cells.crops import CANONICAL_NN_PX, CROP_SIZE
    from napari_stem_defects.network_io import read_weights
    from napari_stem_defects.simulate import CELL_CLASSES
    from napari_stem_defects.training.cell_cnn import heldout_metrics, train

    torch.set_num_threads(args.threads)
    deadline = sa.deadline(args)
    report: dict = {}
    if args.eval_only:
        model = load_cell_model(args.out)
    else:
        arch = {k: (list(v) if isinstance(v, tuple) else v) for k, v in DEFAULT_ARCH.items()}
        init_state, init_meta = None, None
        if args.init is not None:
            init_state, init_meta = read_weights(args.init, "cell classifier", "scripts/train_cell_cnn.py")
            if init_meta.get("arch") != arch:
                parser.error(f"--init {args.init} holds a cell classifier of another architecture "
                             f"({init_meta.get('arch')})")
        metadata = {
            "arch": arch,
            "classes": list(CELL_CLASSES),
            "canonical_nn_px": float(CANONICAL_NN_PX),
            "crop_size": int(CROP_SIZE),
            "context": "mean Z M / 74, std Z M / 20, mean Z X / 52, std Z X / 20, janus, log(nn_px / 11), "
                       "quartiles of metal then X2 column strengths (cells.crops.strength_context)",
            "output": "logits over classes, then one 'defective' logit (cells.cnn.probabilities)",
            "training_command": sa.command_line("train_cell_cnn.py", argv),
            "torch_version": str(torch.__version__),
        }
        if init_meta is not None:
            metadata["init_from"] = sa.init_record(init_meta)
        model, history = train(
            args.steps, args.batch, args.seed, n_twins=args.twins, n_val=args.val, lr=args.lr,
            eval_every=args.eval_every, max_minutes=args.max_minutes, workers=args.workers,
            threads=args.threads, log=lambda s: print(s, flush=True), init_state=init_state,
            device=args.device, on_best=sa.checkpointer(args.out, metadata, sa.floats), deadline=deadline,
            **({} if args.table_share is None else {"table_share": args.table_share}),
        )
        best = history["best"]
        print(f"best validation (step {best['step']}): macro-F1 {best['macro_f1']:.4f}; "
              f"training took {history['train_seconds'] / 60:.1f} min", flush=True)
        sa.save_trained(model, args.out, metadata, history, sa.floats(best))
        report["history"] = history
    if args.test_per > 0:
        report["heldout"] = _heldout_tables(heldout_metrics(model, n_per=args.test_per, mode=args.mode,
                                                             imaging=args.imaging))
    sa.write_metrics(args, report)
    return 0


def _heldout_tables(table: dict) -> dict:
    """Print held-out metrics as markdown tables (summary, then per class); return them with string keys."""
    print("\n| material | dose (e/Å²) | cells | accuracy | macro-F1 | lowest class F1 |")
    print("|---|---|---|---|---|---|")
    for mat, per_dose in table.items():
        for dose, m in per_dose.items():
            present = {c: v for c, v in m["per_class"].items() if v["support"] > 0}
            low = min(present, key=lambda c: present[c]["f1"])
            print(f"| {mat} | {dose:.0e} | {m['n_cells']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                  f"{low} {present[low]['f1']:.3f} |")
    for mat, per_dose in table.items():
        doses = list(per_dose)
        print(f"\n**{mat}** (precision / recall / F1, support at the last dose)\n")
        print("| class | " + " | ".join(f"{d:.0e}" for d in doses) + " | n |")
        print("|---|" + "---|" * (len(doses) + 1))
        for c in next(iter(per_dose.values()))["per_class"]:
            cols = []
            for d in doses:
                v = per_dose[d]["per_class"][c]
                cols.append(f"{v['precision']:.3f} / {v['recall']:.3f} / {v['f1']:.3f}" if v["support"] else "-")
            print(f"| {c} | " + " | ".join(cols) + f" | {per_dose[doses[-1]]['per_class'][c]['support']} |")
    sys.stdout.flush()
    return {mat: {f"{d:.0e}": v for d, v in per_dose.items()} for mat, per_dose in table.items()}


if __name__ == "__main__":
    sys.exit(main())
