"""What the training scripts (``scripts/train_*.py``) share: their common options, the command line,
the metadata of a continued run, checkpoints and the final weights file, the metrics file.

Each script adds its own options to :func:`training_parser`'s and passes its
network's metadata to :func:`checkpointer` and :func:`save_trained`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Entries of an ``--init`` file's metadata kept under ``init_from`` in the new file's.
INIT_KEYS = ("training_command", "date", "train_seconds", "validation", "init_from")


def training_parser(description: str, *, steps: int, batch: int, batch_help: str, val: int, eval_every: int,
                    out: Path | None, out_help: str = "weights file to write", seed_help: str | None = None,
                    twins: int | None = None, long_runs: bool = False,
                    eval_only: bool = False) -> argparse.ArgumentParser:
    """A parser with the options every training script has, at the script's defaults.

    Parameters
    ----------
    description : str
        The script's one-line description.
    steps, batch, val, eval_every : int
        Defaults of ``--steps``, ``--batch`` (described by ``batch_help``),
        ``--val`` (validation twins) and ``--eval-every``.
    out : Path or None
        Default of ``--out`` (described by ``out_help``).
    seed_help : str, optional
        What ``--seed`` seeds.
    twins : int, optional
        Default of ``--twins`` (training twins); no such option when None.
    long_runs : bool
        Add the options of a long run: ``--max-minutes``, ``--deadline-minutes``,
        ``--workers``, ``--threads``, ``--device`` and ``--init``.
    eval_only : bool
        Add ``--eval-only`` (evaluate the weights in ``--out``, no training).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=batch, help=batch_help)
    if twins is not None:
        parser.add_argument("--twins", type=int, default=twins, help="training twins")
    parser.add_argument("--out", type=Path, default=out, help=out_help)
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam)")
    parser.add_argument("--val", type=int, default=val, help="validation twins")
    parser.add_argument("--eval-every", type=int, default=eval_every, help="steps between validations")
    if long_runs:
        parser.add_argument("--max-minutes", type=float, default=1e9, help="stop the loop after this long")
        parser.add_argument("--deadline-minutes", type=float, default=None,
                            help="stop the loop this long after the start, simulation included")
        parser.add_argument("--workers", type=int, default=1, help="processes that simulate the twins")
        parser.add_argument("--threads", type=int, default=1, help="torch threads of the training loop")
        parser.add_argument("--device", default="cpu", help="where the network trains: cpu, cuda, cuda:1, ...")
        parser.add_argument("--init", type=Path, default=None, help="weights file to continue training from")
    parser.add_argument("--metrics-json", type=Path, default=None, help="also write the metrics here")
    if eval_only:
        parser.add_argument("--eval-only", action="store_true",
                            help="do not train: evaluate the weights in --out on the held-out twins")
    return parser


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that started a script (``python scripts/NAME.py ARGS``), for the metadata."""
    return f"python scripts/{script} " + shlex.join(sys.argv[1:] if argv is None else list(argv))


def deadline(args: argparse.Namespace) -> float | None:
    """The ``time.time()`` by which ``--deadline-minutes`` ends the run (None without it)."""
    return None if args.deadline_minutes is None else time.time() + 60 * args.deadline_minutes


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def init_record(init_meta: dict[str, Any]) -> dict[str, Any]:
    """What a new weights file records of the ``--init`` file it continued from."""
    return {k: init_meta.get(k) for k in INIT_KEYS}


def floats(record: dict[str, Any]) -> dict[str, float]:
    """A validation record with every value a float (for the metadata)."""
    return {k: float(v) for k, v in record.items()}


def checkpointer(out: Path, metadata: dict[str, Any],
                 validation: Callable[[dict[str, Any]], Any] = dict) -> Callable[[Any, dict[str, Any]], None]:
    """An ``on_best(model, history)`` that saves the best weights so far to ``out`` (they survive an
    interrupted run), with ``validation(history["best"])`` and ``checkpoint: True`` in the metadata."""
    from ..network_io import save_weights

    def checkpoint(net: Any, hist: dict[str, Any]) -> None:
        save_weights(net, out, {**metadata, "validation": validation(hist["best"]), "checkpoint": True,
                                "date": utc_now()})

    return checkpoint


def save_trained(model: Any, out: Path, metadata: dict[str, Any], history: dict[str, Any],
                 validation: Any = None, note: str = "") -> None:
    """Write the trained weights with ``metadata`` plus the date, the training time and
    ``validation`` (default ``history["best"]``), and say so (``note`` ends the line)."""
    from ..network_io import save_weights

    metadata["date"] = utc_now()
    metadata["train_seconds"] = float(history["train_seconds"])
    metadata["validation"] = history["best"] if validation is None else validation
    save_weights(model, out, metadata)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB){note}", flush=True)


def write_metrics(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``--metrics-json`` when given."""
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(report, indent=1, default=float))
