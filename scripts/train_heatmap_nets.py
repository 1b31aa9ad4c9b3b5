#!/usr/bin/env python
"""Train one of the heatmap networks on digital twins and write its packaged weights.

Example
-------
    python scripts/train_heatmap_nets.py --engine sliding-window --steps 6000 --batch 128 --twins 2500
    python scripts/train_heatmap_nets.py --engine attention-unet --steps 2500 --batch 12 --twins 1500
    python scripts/train_heatmap_nets.py --engine attention-unet --init old.pt --seed 1 --lr 1e-3

``--init`` continues from an earlier weights file of the same engine (with
``--seed`` choosing new training twins); its training record is kept in the
new file's metadata under ``init_from``. Prints validation F1 per family
while training, then region- and pixel-level
scores on held-out twins (``--test-per``), and writes
``src/napari_stem_defects/models/heatmap_patch.pt`` or ``heatmap_unet.pt``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "napari_stem_defects" / "models"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, evaluate on held-out twins and save the weights."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True, choices=("sliding-window", "attention-unet"))
    parser.add_argument("--steps", type=int, default=6000, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=128, help="examples per step")
    parser.add_argument("--twins", type=int, default=2000, help="training twins")
    parser.add_argument("--val", type=int, default=100, help="validation twins")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--max-minutes", type=float, default=1e9, help="stop the loop after this long")
    parser.add_argument("--deadline-minutes", type=float, default=None,
                        help="stop the loop this long after the start, simulation included")
    parser.add_argument("--workers", type=int, default=1, help="processes that simulate the twins")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu", help="where the network trains: cpu, cuda, cuda:1, ...")
    parser.add_argument("--crops", type=int, default=3, help="U-Net crops per training twin")
    parser.add_argument("--channels", type=int, nargs="+", default=None,
                        help="channels per level of a new network (default: the engine's architecture)")
    parser.add_argument("--test-per", type=int, default=3, help="held-out twins per material and dose (0: skip)")
    parser.add_argument("--family-weight", action="append", default=[], metavar="FAMILY=W",
                        help="scale one family's share of the loss (repeatable), e.g. substitution=2")
    parser.add_argument("--init", type=Path, default=None, help="weights file to continue training from")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the packaged one)")
    parser.add_argument("--metrics-json", type=Path, default=None)
    args = parser.parse_args(argv)

    import time

    import torch

    from napari_stem_defects.heatmaps.classes import HEATMAP_CLASSES
    from napari_stem_defects.heatmaps.engines import WEIGHTS
    from napari_stem_defects.training.heatmap_heldout import heldout_scores
    from napari_stem_defects.heatmaps.networks import PATCH_ARCH, UNET_ARCH
    from napari_stem_defects.network_io import read_weights, save_weights
    from napari_stem_defects.training.heatmap_nets import family_weight_vector, train

    family_weights = {}
    for item in args.family_weight:
        name, _, value = item.partition("=")
        try:
            family_weights[name] = float(value)
        except ValueError:
            parser.error(f"--family-weight {item!r}: expected FAMILY=NUMBER")
    try:
        family_weight_vector(family_weights)  # refused now, not after the twins are simulated
    except ValueError as err:
        parser.error(f"--family-weight: {err}")
    torch.set_num_threads(args.threads)
    deadline = None if args.deadline_minutes is None else time.time() + 60 * args.deadline_minutes
    out = args.out or MODELS / WEIGHTS[args.engine]
    command = "python scripts/train_heatmap_nets.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    init_state, init_meta = None, None
    if args.init is not None:
        init_state, init_meta = read_weights(args.init, f"{args.engine} heatmap network",
                                             "scripts/train_heatmap_nets.py")
        if init_meta.get("engine") != args.engine:
            parser.error(f"--init {args.init} holds a {init_meta.get('engine')!r} network, not {args.engine!r}")
    arch = dict(PATCH_ARCH if args.engine == "sliding-window" else UNET_ARCH)
    if init_meta is not None:
        arch.update(init_meta.get("arch", {}))
    if args.channels:
        if init_meta is not None and list(args.channels) != list(arch["channels"]):
            parser.error(f"--channels {args.channels}: --init {args.init} has {arch['channels']}")
        arch["channels"] = tuple(args.channels)
    arch = {k: (list(v) if isinstance(v, tuple) else v) for k, v in arch.items()}
    metadata = {
        "engine": args.engine,
        "arch": arch,
        "classes": list(HEATMAP_CLASSES),
        "context": "mean Z M / 74, std Z M / 20, mean Z X / 52, std Z X / 20, janus, log(nn_px / 11)",
        "training_command": command,
        "torch_version": str(torch.__version__),
    }
    if init_meta is not None:
        metadata["init_from"] = {k: init_meta.get(k) for k in
                                 ("training_command", "date", "train_seconds", "validation", "init_from")}

    def checkpoint(net: object, hist: dict) -> None:  # the best weights so far survive an interrupted run
        save_weights(net, out, {**metadata, "validation": hist["best"], "checkpoint": True,
                                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})

    model, history = train(args.engine, args.steps, args.batch, args.seed, n_twins=args.twins, n_val=args.val,
                           lr=args.lr, eval_every=args.eval_every, max_minutes=args.max_minutes,
                           workers=args.workers, threads=args.threads, init_state=init_state,
                           family_weights=family_weights, crops=args.crops,
                           arch={k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()},
                           device=args.device, on_best=checkpoint, deadline=deadline,
                           log=lambda s: print(s, flush=True))
    metadata.update({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": history["train_seconds"],
        "validation": history["best"],
    })
    save_weights(model, out, metadata)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); best validation {history['best']}", flush=True)
    report = {"history": history}
    if args.test_per:
        table = heldout_scores(args.engine, model, n_per=args.test_per)
        for dose, df in table.items():
            print(f"\nheld-out, dose {dose:.0e}:\n{df.round(3).to_string()}", flush=True)
        report["heldout"] = {str(d): df.to_dict() for d, df in table.items()}
    if args.metrics_json:
        args.metrics_json.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
