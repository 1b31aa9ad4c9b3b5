"""The loop that trains a shipped network on digital twins and keeps its best weights.

Used by :func:`napari_stem_defects.training.cell_cnn.train` and
:func:`napari_stem_defects.training.heatmap_nets.train` (the fine-tuning of
shipped models from corrections has its own loop,
:mod:`napari_stem_defects.training.loop`, which keeps the last weights).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..network_io import state_snapshot
from .schedule import TimeBudget, warmup_cosine


def train_keeping_best(
    model: Any,
    history: dict[str, Any],
    *,
    steps: int,
    lr: float,
    eval_every: int,
    batch_loss: Callable[[], Any],
    evaluate: Callable[[bool], tuple[dict[str, Any], str]],
    score: str,
    initial: bool = False,
    max_minutes: float = 1e9,
    deadline: float | None = None,
    on_best: Callable[[Any, dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
    t0: float | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` and keep the weights with the best validation ``score``.

    Adam (weight decay 1e-5) with warm-up and cosine decay
    (:func:`~napari_stem_defects.training.schedule.warmup_cosine`); when a time
    budget is given, the schedule is fitted to end within it
    (:class:`~napari_stem_defects.training.schedule.TimeBudget`, refitted at step 200
    and at every evaluation).

    Parameters
    ----------
    model : torch.nn.Module
        The network, on its training device.
    history : dict
        The run's record; ``val`` (a list) gets every evaluation, ``best`` the
        best one, and ``steps_run`` and ``train_seconds`` are set at the end.
    steps, lr, eval_every : int, float, int
        Optimiser steps (fewer when the time budget ends the run), peak
        learning rate, steps between evaluations (the last step is evaluated too).
    batch_loss : callable
        Draws a batch, runs the model (in training mode) and returns the loss tensor.
    evaluate : callable
        ``evaluate(initial)`` scores the model on the validation set (``initial``:
        before the first step) and returns the scores and a text saying them.
        Each evaluation's record is ``step``, ``train_loss`` (the mean since the
        previous one; not at step 0), the scores and ``elapsed_s``, and its log
        line ``step N: loss L TEXT (E s)`` (``step 0 (initial weights): TEXT``).
    score : str
        The score to maximise.
    initial : bool
        Score the model before the first step (step 0: weights it started from)
        and keep them if no later step beats them.
    max_minutes, deadline : float
        The loop's time budget and a ``time.time()`` value it must end by.
    on_best : callable, optional
        ``on_best(model, history)`` whenever the score improves (e.g. to save a checkpoint).
    log : callable
        Receiver of progress lines.
    t0 : float, optional
        ``time.time()`` at the start of the run (default now), for ``train_seconds``.

    Returns
    -------
    model, history
        The model with its best weights, on the CPU, in eval mode.
    """
    import torch

    t0 = time.time() if t0 is None else t0
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    sched = warmup_cosine(opt, steps)
    best, best_state, losses = -1.0, None, []
    budget = TimeBudget(sched, max_minutes, deadline)
    if initial:
        scores, text = evaluate(True)
        rec = {"step": 0, **scores, "elapsed_s": time.time() - t0}
        log(f"step 0 (initial weights): {text}")
        best, best_state = rec[score], state_snapshot(model)
        history["best"] = rec
        history["val"].append(rec)
    step = 0
    while step < sched.plan["steps"]:
        step += 1
        model.train()
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        out_of_time = budget.spent(step, refit=step == 200 or step % eval_every == 0)
        if step % eval_every == 0 or step == sched.plan["steps"] or out_of_time:
            scores, text = evaluate(False)
            rec = {"step": step, "train_loss": float(np.mean(losses)), **scores, "elapsed_s": time.time() - t0}
            losses = []
            log(f"step {step}: loss {rec['train_loss']:.4f} {text} ({rec['elapsed_s']:.0f} s)")
            history["val"].append(rec)
            if rec[score] > best:
                best, history["best"] = rec[score], rec
                best_state = state_snapshot(model)
                if on_best is not None:
                    on_best(model, history)
        if out_of_time:
            log(f"stopping at step {step}: time budget of {budget.seconds / 60:.1f} min spent")
            break
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    history["steps_run"] = step
    history["train_seconds"] = time.time() - t0
    return model, history
