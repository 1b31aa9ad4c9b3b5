"""Fine-tuning in a child process, for the "Train a model" dock (no Qt, no napari import here).

Training runs in a fresh ``spawn`` process rather than a thread of napari's: a
torch optimiser imports ``torch._dynamo`` and with it triton, whose LLVM clashes
with the one a software OpenGL (Mesa llvmpipe: virtual machines, remote desktops,
Xvfb) has already loaded into napari, and the process dies. A child process also
keeps the viewer responsive and cannot take it down.

The child sends ``("progress", dict)`` messages while it trains and ends with one
``("result", FinetuneResult | None)`` or ``("error", message)``.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import queue as queue_module
import traceback
from collections.abc import Callable, Generator
from typing import Any

log = logging.getLogger(__name__)
#: Errors that mean "this training cannot run" (bad dataset, bad name...): their message is shown.
EXPECTED_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, OSError)
#: Seconds between checks of the child (cancel, still alive).
POLL_S = 0.2


def message_of(err: BaseException) -> str:
    """An exception's message (a KeyError's without its quotes)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else (str(err) or type(err).__name__)


def trainer(what: str) -> Callable[..., Any]:
    """The fine-tuning function of a model kind ('cells' or 'columns')."""
    if what == "cells":
        from ..training.finetune import finetune_cell_cnn

        return finetune_cell_cnn
    if what == "columns":
        from ..training.finetune_columns import finetune_column_unet

        return finetune_column_unet
    raise ValueError(f"cannot fine-tune a {what!r} model")


def train_kwargs(train: Callable[..., Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The settings ``train`` accepts (a column U-Net trainer may take fewer than the cell one)."""
    params = inspect.signature(train).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(settings)
    return {k: v for k, v in settings.items() if k in params}


def child_main(what: str, datasets: list[str], out: str, settings: dict[str, Any], messages: Any,
               cancel: Any) -> None:
    """Body of the child process: train, sending progress, then the result or an error message."""
    try:
        train = trainer(what)
        result = train(datasets, out, progress=lambda record: messages.put(("progress", dict(record))),
                       cancel=cancel, **train_kwargs(train, settings))
        messages.put(("result", result))
    except EXPECTED_ERRORS as err:
        messages.put(("error", f"Cannot train ({message_of(err)})."))
    except Exception as err:  # a bug: the message and where, never a traceback dialog
        messages.put(("error", f"Training failed unexpectedly ({type(err).__name__}: {err}).\n"
                               + traceback.format_exc(limit=6)))


def run_in_child(what: str, datasets: list[str], out: str, settings: dict[str, Any], cancel: Any,
                 on_record: Callable[[dict[str, Any]], None]) -> Generator[float, None, Any]:
    """Train in a spawned process; yield the fraction done; return its result or a message (str).

    Parameters
    ----------
    what : {'cells', 'columns'}
        Which model to fine-tune.
    datasets : list of str
        Training-set folders.
    out : str
        Weights file to write.
    settings : dict
        Keyword settings of the trainer (steps, twin_fraction, val_fraction, n_twins, seed...).
    cancel : threading.Event
        Set by the caller to stop (the child stops at its next step and writes nothing).
    on_record : callable
        Gets every progress dict of the trainer (in the calling thread).
    """
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(target=child_main, args=(what, list(datasets), str(out), dict(settings), messages, stop),
                       daemon=True, name="napari-stem-defects training")
    proc.start()
    result: Any = None
    try:
        while True:
            if cancel.is_set():
                stop.set()
            try:
                kind, payload = messages.get(timeout=POLL_S)
            except queue_module.Empty:
                if not proc.is_alive():
                    try:  # a last message may arrive just after the process ended
                        kind, payload = messages.get(timeout=1.0)
                    except queue_module.Empty:
                        return f"The training process stopped unexpectedly (exit code {proc.exitcode})."
                else:
                    continue
            if kind == "progress":
                on_record(payload)
                if payload.get("steps") and "step" in payload:
                    yield min(float(payload["step"]) / float(payload["steps"]), 1.0)
                continue
            if kind == "error":
                return str(payload)
            result = payload
            break
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        messages.close()
    return "Cancelled: nothing was saved." if result is None else result


__all__ = ["EXPECTED_ERRORS", "child_main", "message_of", "run_in_child", "train_kwargs", "trainer"]
