#!/usr/bin/env python
"""Train the context-encoder column classifier on multislice-calibrated twins and write its packaged weights.

Example
-------
    python scripts/train_context_classifier.py --twins 2500 --epochs 25
    python scripts/train_context_classifier.py --cache /tmp/ctx.npz --exclude MoTe2 --out /tmp/ctx_no_MoTe2.pt
    python scripts/train_context_classifier.py --cache /tmp/ctx.npz --ablation zernike --out /tmp/ctx_zernike.pt

Twins: :mod:`napari_stem_defects.training.context_classifier` (materials, defects, calibrated
microscopes 60-300 kV, doses 5e3-1e7 e/Å^2). ``--cache`` keeps the examples in an ``.npz`` file
(built once, reused by later runs: the ablations and leave-one-material-out models train on the
same examples). ``--exclude`` leaves materials out of training: a host formula leaves out its
doped variants too ('WSe2' also drops 'WSe2+V'), a doped name only itself ('WSe2+Co'). Prints per-type scores on held-out twins (other seeds), and
writes ``src/napari_stem_defects/models/context_classifier.pt`` with its card beside it unless
``--out`` says otherwise. The multislice figures of the card come from
``benchmarks/bench_context_classifier.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "napari_stem_defects" / "models"
HELD_OUT_SEED = 9_000_000


def _dataset(path: Path | None, n_twins: int, seed: int) -> dict[str, np.ndarray]:
    from napari_stem_defects.training.context_classifier import build_dataset

    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
        if int(data.pop("n_twins")) == n_twins and int(data.pop("seed")) == seed:
            return data
        print(f"{path} holds another dataset; rebuilding it", flush=True)
    data = build_dataset(n_twins, seed)
    if path is not None:
        np.savez(path, n_twins=n_twins, seed=seed, **data)
    return data


def host_of(name: str) -> str:
    """The host formula of a training material name ('WSe2+V' -> 'WSe2')."""
    return name.split("+")[0]


def main(argv: list[str] | None = None) -> int:
    """Build (or load) the examples, train, score held-out twins and save the weights."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--twins", type=int, default=2500, help="training twins")
    p.add_argument("--val-twins", type=int, default=150, help="held-out twins for the printed scores")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", type=Path, default=None, help=".npz file keeping the training examples")
    p.add_argument("--exclude", nargs="*", default=[],
                   help="materials left out of training: a host (every twin of it, doped ones too) or a doped name")
    p.add_argument("--ablation", choices=("both", "zernike", "context"), default="both",
                   help="inputs: both, Zernike contrast only, context only")
    p.add_argument("--out", type=Path, default=None, help="weights file (default: the packaged one)")
    args = p.parse_args(argv)

    import torch

    from napari_stem_defects.network_io import save_weights
    from napari_stem_defects.training import context_classifier as tc
    from napari_stem_defects.training.model_files import plain
    from napari_stem_defects.training.script_args import command_line, utc_now

    torch.set_num_threads(args.threads)
    data = _dataset(args.cache, args.twins, args.seed)
    hosts = np.array([host_of(m) for m in data["material"]])
    if args.exclude:
        data = tc.subset(data, ~(np.isin(hosts, args.exclude) | np.isin(data["material"], args.exclude)))
    print(f"{len(data['labels'])} training columns; types {np.bincount(data['labels'], minlength=5).tolist()}",
          flush=True)
    model = tc.train(data, epochs=args.epochs, seed=args.seed, hidden=args.hidden,
                     use_contrast=args.ablation != "context", use_context=args.ablation != "zernike",
                     log=lambda s: print(s, flush=True))
    val = tc.build_dataset(args.val_twins, HELD_OUT_SEED)
    pred = tc.predict(model, val).argmax(1)
    rows = []
    for name in sorted(set(val["material"])) + ["all"]:
        keep = np.ones(len(pred), bool) if name == "all" else val["material"] == name
        r = tc.type_metrics(val["labels"][keep], pred[keep])
        rows.append((name, r))
        recalls = "  ".join(f"{k} {v:.3f}" for k, v in r["recall"].items())
        print(f"{name:14s} n {r['n']:6d}  acc {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.3f}  {recalls}")
    metadata = {"arch": model.metadata["arch"], "types": list(tc.COLUMN_TYPES), "epochs": args.epochs,
                "seed": args.seed, "n_twins": args.twins, "n_examples": len(data["labels"]),
                "excluded": list(args.exclude), "ablation": args.ablation, "trained_at": utc_now(),
                "training_command": command_line("train_context_classifier.py", argv),
                "torch_version": str(torch.__version__),
                "heldout_twins": {n: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for n, r in rows}}
    out = args.out or MODELS / "context_classifier.pt"
    save_weights(model, out, plain(metadata))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
