"""The one fine-tuning loop, for every model that is fine-tuned from exported training sets.

A model's fine-tuning is a small task object (:class:`FinetuneTask`): its
data, batches and loss, its held-out measurement, its metadata and model card
(:class:`~napari_stem_defects.training.finetune.CellTask`,
:class:`~napari_stem_defects.training.finetune_columns.ColumnTask`).
:func:`run_finetune` does the rest the same way for all of them:

- check the output path before any work
  (:func:`~napari_stem_defects.training.model_files.check_out`);
- start from a fresh copy of the SHIPPED weights, inside a seeded torch
  session (:func:`torch_session`), never from an earlier fine-tuned model;
- measure the held-out part before the first step (step 0), every
  ``eval_every`` steps and after the last one;
- Adam with warm-up and cosine decay
  (:func:`~napari_stem_defects.training.schedule.warmup_cosine`), a training
  record every few steps, a ``progress`` callback for every record and a
  ``cancel`` event checked before every step (nothing is written when set);
- keep the last weights (not the best on the held-out part, which would make
  the held-out numbers optimistic) and write them with their model card
  (:func:`~napari_stem_defects.training.model_files.write_model`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .model_files import base_provenance, check_out, plain, write_model

#: First seed of the digital twins mixed into fine-tuning batches; no training, validation or test
#: seed of the shipped networks falls in 60_000_000-60_999_999.
FINETUNE_SEED_BASE = 60_000_000

#: The parameters every fine-tuning function shares, documented once (numpydoc); a function's
#: docstring takes them in with :func:`shared_parameters`.
SHARED_PARAMETERS = """\
datasets : sequence of str or Path
    Training set folders (:func:`~napari_stem_defects.annotations.training_set_export.export_training_set`).
out : str or Path
    Weights file to write (``.pt`` added if missing); the model card goes
    beside it (``.md``). Never the packaged models folder.
steps, batch : int
    Optimiser steps and examples (cells or crops) per batch.
twin_fraction : float
    Share of each batch drawn from fresh digital twins (the shipped model's
    training distribution), in [0, 1).
val_fraction : float
    Share of the datasets held out to measure the shipped and the fine-tuned
    model on, in [0, 1).
lr : float
    Peak learning rate (Adam, warm-up then cosine decay).
seed : int
    Seed of the split, the twins, the batches and torch.
threads : int, optional
    torch threads while training (restored afterwards).
progress : callable, optional
    Called with a training record (``step``, ``steps``, ``loss`` and the
    model's batch score, the means since the last call) every few steps and
    with an evaluation record (``step``, ``steps`` and ``val_...`` scores) at
    each evaluation of the held-out part (step 0 is the shipped model).
cancel : threading.Event, optional
    When set, training stops and nothing is written.
n_twins : int
    Twins in the pool mixed into batches (ignored when ``twin_fraction`` is 0).
eval_every : int, optional
    Steps between evaluations (default ``steps // 5``).
name : str, optional
    Model version name for the card (default the file's stem).
command : str, optional
    The command line or action that started the run, recorded in the card.
overwrite : bool
    Replace an existing file at ``out`` (default: refuse, before any training)."""


#: The errors every fine-tuning function raises (numpydoc ``Raises`` entries).
SHARED_RAISES = """\
ValueError
    Bad settings, unreadable datasets (or images too small to train on), the
    packaged folder as ``out``, or weights that came out NaN (nothing is written).
FileExistsError
    ``out`` exists and ``overwrite`` is False."""


def shared_parameters(func: Callable) -> Callable:
    """Put :data:`SHARED_PARAMETERS` and :data:`SHARED_RAISES` where ``func``'s docstring says
    ``{shared_parameters}`` and ``{shared_raises}``."""
    shared = {"{shared_parameters}": SHARED_PARAMETERS, "{shared_raises}": SHARED_RAISES}
    lines = []
    for line in (func.__doc__ or "").splitlines():
        if line.strip() in shared:
            indent = line[: len(line) - len(line.lstrip())]
            lines += [indent + p if p else p for p in shared[line.strip()].splitlines()]
        else:
            lines.append(line)
    func.__doc__ = "\n".join(lines)
    return func


@dataclass
class FinetuneResult:
    """What a fine-tuning function wrote and measured.

    Attributes
    ----------
    path : Path
        The weights file.
    card : Path
        The model card (``.md``) beside it.
    history : list of dict
        Training and evaluation records (those passed to ``progress``), in order.
    before, after : dict
        Metrics on the held-out part of the shipped and of the fine-tuned
        model; empty when nothing is held out.
    n_train, n_val : int
        Examples (cells, occupied sites) trained on and held out.
    metadata : dict
        The metadata stored in the weights file.
    """

    path: Path
    card: Path
    history: list[dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]
    n_train: int
    n_val: int
    metadata: dict[str, Any] = field(default_factory=dict)


class FinetuneTask:
    """What one model's fine-tuning gives :func:`run_finetune`; subclasses fill in the methods.

    Attributes
    ----------
    kind : str
        The ``kind`` entry of the metadata (``"cells"``, ``"columns"``).
    rng_stream : int
        Second word of the seed of the batches' random generator.
    weight_decay : float
        Adam's weight decay.
    base_keys : tuple of str
        Entries of the shipped model's metadata the new model keeps.
    n_train, n_val : int
        Examples trained on and held out (set by :meth:`prepare`).
    """

    kind = ""
    rng_stream = 0
    weight_decay = 0.0
    base_keys: tuple[str, ...] = ()
    n_train = 0
    n_val = 0

    def prepare(self, cancel: threading.Event | None) -> bool:
        """Read the datasets, split them and simulate the twins; False when cancelled."""
        raise NotImplementedError

    def load_model(self) -> tuple[Any, dict[str, Any], Path]:
        """A fresh trainable copy of the shipped model, its metadata and its path."""
        raise NotImplementedError

    def evaluate(self, model: Any) -> dict[str, Any]:
        """Metrics on the held-out part (empty when nothing is held out)."""
        raise NotImplementedError

    def eval_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The ``val_...`` entries of an evaluation record."""
        raise NotImplementedError

    def begin(self, model: Any) -> None:
        """Called after the step-0 evaluation, before the first step."""

    def batch_loss(self, model: Any, rng: np.random.Generator) -> Any:
        """Draw a batch, run the model (in training mode) and return the loss tensor."""
        raise NotImplementedError

    def tally(self) -> dict[str, Any]:
        """The batch score of a training record since the last call (and start a new tally)."""
        raise NotImplementedError

    def end(self, model: Any) -> None:
        """Called after the last evaluation."""

    def metadata(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """The task's own metadata entries (settings, datasets, held-out results...)."""
        raise NotImplementedError

    def card(self, meta: dict[str, Any]) -> str:
        """The markdown model card, from the metadata."""
        raise NotImplementedError


def check_settings(steps: int, batch: int, twin_fraction: float, min_batch: int = 1) -> None:
    """Refuse fewer than 1 step or ``min_batch`` examples a batch, or a twin fraction outside [0, 1)."""
    if steps < 1 or batch < min_batch:
        raise ValueError("steps and batch must be at least 1" if min_batch == 1 else
                         f"steps must be at least 1 and batch at least {min_batch}")
    if not 0.0 <= float(twin_fraction) < 1.0:
        raise ValueError(f"twin_fraction must be in [0, 1), not {twin_fraction}")


def twin_share(batch: int, twin_fraction: float, n_twins: int) -> int:
    """Twin examples in each batch: ``batch * twin_fraction`` rounded (0 without twins)."""
    return int(round(batch * float(twin_fraction))) if n_twins > 0 else 0


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


@contextmanager
def torch_session(threads: int | None, seed: int) -> Iterator[None]:
    """torch's thread count set (restored afterwards) and its RNG seeded, without touching the caller's RNG."""
    import torch

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            yield
    finally:
        torch.set_num_threads(old_threads)


def run_finetune(task: FinetuneTask, out: str | Path, *, steps: int, lr: float, seed: int, threads: int | None,
                 progress: Callable[[dict[str, Any]], None] | None, cancel: threading.Event | None,
                 eval_every: int | None, name: str | None, command: str | None,
                 overwrite: bool) -> FinetuneResult | None:
    """Fine-tune ``task``'s shipped model and write the new version (see the module docstring).

    The other parameters are those of :data:`SHARED_PARAMETERS`.

    Returns
    -------
    FinetuneResult or None
        None when cancelled.
    """
    target = check_out(Path(out), overwrite)
    t0 = time.time()
    if not task.prepare(cancel):
        return None
    eval_every = max(1, int(eval_every) if eval_every else max(1, steps // 5))
    report_every = max(1, min(10, steps // 20))
    with torch_session(threads, seed):
        run = _train(task, steps=steps, lr=lr, seed=seed, eval_every=eval_every, report_every=report_every,
                     progress=progress, cancel=cancel)
    if run is None or _cancelled(cancel):
        return None
    model, history, before, after, base_meta, base_path = run
    meta = plain({
        **{k: base_meta[k] for k in task.base_keys if k in base_meta},
        "arch": base_meta.get("arch", {}),
        **base_provenance(task.kind, name, target, base_meta, base_path, command),
        **task.metadata(before, after),
        "history": history,
        "train_seconds": time.time() - t0,
    })
    card = write_model(model, target, meta, task.card(meta))
    return FinetuneResult(target, card, history, before, after, int(task.n_train), int(task.n_val), meta)


def _train(task: FinetuneTask, *, steps: int, lr: float, seed: int, eval_every: int, report_every: int,
           progress: Callable[[dict[str, Any]], None] | None, cancel: threading.Event | None) -> tuple | None:
    """The training loop of :func:`run_finetune` (torch's RNG already seeded); None when cancelled."""
    import torch

    from .schedule import warmup_cosine

    rng = np.random.default_rng([int(seed), task.rng_stream])
    model, base_meta, base_path = task.load_model()
    history: list[dict[str, Any]] = []

    def record(rec: dict[str, Any]) -> None:
        history.append(rec)
        if progress is not None:
            progress(dict(rec))

    def evaluate(step: int) -> dict[str, Any]:
        m = task.evaluate(model)
        if m:
            record({"step": step, "steps": steps, **task.eval_record(m)})
        return m

    before = evaluate(0)
    task.begin(model)
    if _cancelled(cancel):
        return None
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=task.weight_decay)
    sched = warmup_cosine(opt, steps)
    losses = []
    for step in range(1, steps + 1):
        if _cancelled(cancel):
            return None
        model.train()
        loss = task.batch_loss(model, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
        if step % report_every == 0 or step == steps:
            record({"step": step, "steps": steps, "loss": float(np.mean(losses)), **task.tally()})
            losses = []
        if step % eval_every == 0 and step != steps:
            evaluate(step)
    if _cancelled(cancel):
        return None
    model.eval()
    after = evaluate(steps)
    task.end(model)
    return model, history, before, after, base_meta, base_path
