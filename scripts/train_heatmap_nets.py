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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "napari_stem_defects" / "models"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, evaluate on held-out twins and save the weights."""
    from napari_stem_defects.training import script_args as sa

    parser = sa.training_parser(
        __doc__.splitlines()[0], steps=6000, batch=128, batch_help="examples per step", twins=2000, val=100,
        eval_every=500, out=None, out_help="weights file (default: the packaged one)", long_runs=True)
    parser.add_argument("--engine", required=True, choices=("sliding-window", "attention-unet"))
    parser.add_argument("--crops", type=int, default=3, help="U-Net crops per training twin")
    parser.add_argument("--channels", type=int, nargs="+", default=None,
                        help="channels per level of a new network (default: the engine's architecture)")
    parser.add_argument("--test-per", type=int, default=3, help="held-out twins per material and dose (0: skip)")
    parser.add_argument("--family-weight", action="append", default=[], metavar="FAMILY=W",
                        help="scale one family's share of the loss (repeatable), e.g. substitution=2")
    args = parser.parse_args(argv)

    import torch

    from napari_stem_defects.heatmaps.classes import HEATMAP_CLASSES
    from napari_stem_defects.heatmaps.engines import WEIGHTS
    from napari_stem_defects.training.heatmap_heldout import heldout_scores
    from napari_stem_defects.heatmaps.networks import PATCH_ARCH, UNET_ARCH
    from napari_stem_defects.network_io import read_weights
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
    deadline = sa.deadline(args)
    out = args.out or MODELS / WEIGHTS[args.engine]
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
        "training_command": sa.command_line("train_heatmap_nets.py", argv),
        "torch_version": str(torch.__version__),
    }
    if init_meta is not None:
        metadata["init_from"] = sa.init_record(init_meta)
    model, history = train(args.engine, args.steps, args.batch, args.seed, n_twins=args.twins, n_val=args.val,
                           lr=args.lr, eval_every=args.eval_every, max_minutes=args.max_minutes,
                           workers=args.workers, threads=args.threads, init_state=init_state,
                           family_weights=family_weights, crops=args.crops,
                           arch={k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()},
                           device=args.device, on_best=sa.checkpointer(out, metadata), deadline=deadline,
                           log=lambda s: print(s, flush=True))
    sa.save_trained(model, out, metadata, history, note=f"; best validation {history['best']}")
    report = {"history": history}
    if args.test_per:
        table = heldout_scores(args.engine, model, n_per=args.test_per)
        for dose, df in table.items():
            print(f"\nheld-out, dose {dose:.0e}:\n{df.round(3).to_string()}", flush=True)
        report["heldout"] = {str(d): df.to_dict() for d, df in table.items()}
    sa.write_metrics(args, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
