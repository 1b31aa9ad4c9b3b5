"""The learning-rate schedule all training loops share, and fitting it to a time budget."""

from __future__ import annotations

import math
import time
from typing import Any


def warmup_cosine(optimizer: Any, steps: int) -> Any:
    """Linear warm-up over the first 1/30 of ``steps``, then cosine decay to 0 at ``steps``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    steps : int
        Total optimiser steps. The returned scheduler keeps it in
        ``scheduler.plan["steps"]``; :func:`fit_to_budget` may shorten it.

    Returns
    -------
    torch.optim.lr_scheduler.LambdaLR
        Call ``step()`` after each optimiser step.
    """
    import torch

    plan = {"steps": int(steps), "requested": int(steps), "warm": max(1, int(steps) // 30)}

    def factor(s: int) -> float:
        n = plan["steps"]
        return min(1.0, (s + 1) / plan["warm"]) * 0.5 * (1 + math.cos(math.pi * min(s, n) / n))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scheduler.plan = plan
    return scheduler


def fit_to_budget(scheduler: Any, step: int, elapsed_s: float, budget_s: float, rate: float | None = None) -> int:
    """Fit the length of a :func:`warmup_cosine` schedule to a time budget.

    At ``rate`` steps per second (by default the mean so far, ``step /
    elapsed_s``), the total becomes the steps that end within ``budget_s``,
    so that the learning rate still decays to 0 when a run is limited by time
    rather than by steps. It never exceeds the steps the schedule was made
    for, nor falls below ``step + 1`` (the step about to run). Called again
    with the rate of the latest steps, it corrects an estimate spoiled by a
    slow start (GPU warm-up, a validation pass).

    Returns
    -------
    int
        The schedule's total steps now.

    Examples
    --------
    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = warmup_cosine(opt, 10_000)
    >>> fit_to_budget(sched, 100, 10.0, 60.0)
    600
    >>> fit_to_budget(sched, 600, 40.0, 60.0, rate=50.0)
    1600
    >>> fit_to_budget(sched, 1000, 10.0, 1e9)
    10000
    """
    if rate is None:
        rate = step / elapsed_s if elapsed_s > 0 else math.inf
    if step > 0 and math.isfinite(budget_s) and math.isfinite(rate):
        fits = step + int(rate * max(0.0, budget_s - elapsed_s))
        scheduler.plan["steps"] = min(scheduler.plan["requested"], max(step + 1, fits))
    return int(scheduler.plan["steps"])


class TimeBudget:
    """The time a training loop may run, and the fitting of its schedule to it.

    Parameters
    ----------
    scheduler : LambdaLR
        Made by :func:`warmup_cosine`.
    max_minutes : float
        The loop's own budget, counted from now.
    deadline : float, optional
        A ``time.time()`` value the loop must end by (e.g. set before the
        training data were simulated), whichever comes first.

    Examples
    --------
    >>> import time, torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> budget = TimeBudget(warmup_cosine(opt, 100), 1e9, deadline=time.time() - 1)
    >>> budget.spent(1, refit=True), budget.scheduler.plan["steps"]
    (True, 2)
    """

    def __init__(self, scheduler: Any, max_minutes: float, deadline: float | None = None) -> None:
        self.scheduler = scheduler
        self.start = time.time()
        self.seconds = min(60.0 * max_minutes, (math.inf if deadline is None else deadline) - self.start)
        self._mark = (0, 0.0)  # step and elapsed time of the last refit

    def spent(self, step: int, refit: bool = False) -> bool:
        """Whether the budget is spent after ``step`` steps; with ``refit``, first fit the
        schedule to the time left at the rate since the previous refit (which leaves a slow
        start out of later estimates)."""
        elapsed = time.time() - self.start
        if refit:
            rate = (step - self._mark[0]) / max(elapsed - self._mark[1], 1e-9)
            fit_to_budget(self.scheduler, step, elapsed, self.seconds, rate)
            self._mark = (step, elapsed)
        return elapsed > self.seconds
