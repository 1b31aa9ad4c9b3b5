"""Dock widget "Train a model": fine-tune the cell classifier or the column U-Net on exported training sets.

A thin front end to :func:`napari_stem_defects.training.finetune.finetune_cell_cnn` and
:func:`napari_stem_defects.training.finetune_columns.finetune_column_unet`: pick
dataset folders written by "Export training set" (Correct labels dock or
``napari-stem-defects export-training``), name the new model version, and train
in a child process (see :mod:`._training_process`) watched by a worker thread,
with progress, a live loss/accuracy plot and cancel. Training
always starts from the shipped weights; the result is saved as a new version in
the user's models folder (:func:`napari_stem_defects.model_registry.new_model_path`)
with its model card, and the "Classify unit cells" (or "Detect atom columns") docks list it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from magicgui.widgets import ComboBox, Container, FloatSpinBox, LineEdit, PushButton, Select, SpinBox
from qtpy.QtCore import QObject, Signal

from ..model_registry import MODEL_KINDS, new_model_path
from ._dock import Section, StemDock, plot_canvas, plot_style, row, run_controls, text_label
from ._jobs import JobRunner
from ._training_process import message_of, run_in_child

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
#: Default number of optimisation steps offered in the dock.
DEFAULT_STEPS = 400
#: Default number of digital twins generated to mix into the batches.
DEFAULT_TWINS = 24
#: Seconds per optimisation step, per twin simulated (with the evaluations), and to start (spawning the
#: process, loading torch and the data), measured on a busy 2-core laptop CPU
#: (benchmarks/bench_training_time.py: cells 0.21 s per step, 20 s fixed; columns 5.6 s per step, 12 s).
SECONDS_PER_STEP: dict[str, float] = {"cells": 0.21, "columns": 5.6}
SECONDS_PER_TWIN: dict[str, float] = {"cells": 0.8, "columns": 0.5}
START_SECONDS = 15.0
#: What the empty list of training sets says.
EMPTY_HINT = ("No training sets yet. Make one in 'Correct labels': correct some cells (they become verified), "
              "then 'Export training set...' writes a folder; add it here with 'Add training set folder...'.")


def ask_directory(parent: Any, default: str) -> str:
    """Ask for a training-set folder ("" when cancelled); tests replace this function."""
    from qtpy.QtWidgets import QFileDialog

    return str(QFileDialog.getExistingDirectory(parent, "Add a training set folder", default) or "")


def trainable_kinds() -> list[str]:
    """What can be fine-tuned: the cell classifier ('cells') and the column U-Net ('columns')."""
    return list(MODEL_KINDS)


class _Relay(QObject):
    """Carries the trainer's progress dicts from the worker thread to the GUI thread (queued)."""
    record = Signal(object)


class TrainWidget(StemDock):
    """Fine-tune the cell classifier (or column segmenter) from exported training sets.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (for status messages and the plot theme).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.history: list[dict[str, Any]] = []
        self.last_result: Any = None
        self._datasets: list[str] = []
        self._started: tuple[float, float] | None = None  # (time, step) of the first progress record
        self.datasets = Select(label="training sets", choices=self._dataset_choices,
                               tooltip="folders written by 'Export training set' (Correct labels dock); "
                                       "select some to remove them")
        self.datasets.native.setMaximumHeight(90)
        self.hint = text_label(EMPTY_HINT, tooltip="how to get a training set")
        self.add_button = PushButton(text="Add training set folder...",
                                     tooltip="choose a folder written by 'Export training set'")
        self.remove_button = PushButton(text="Remove selected", tooltip="drop the selected folders from the list")
        self.what = ComboBox(label="model", choices=trainable_kinds(), value="cells",
                             tooltip="cells: the cell classifier CNN (default); columns: the column-finding U-Net")
        self.name = LineEdit(label="new version", value="",
                             tooltip="name of the new model version (letters, digits, - _ .); it appears in the "
                                     "'model' lists of the other docks")
        self.steps = SpinBox(label="steps", min=1, max=100_000, step=50, value=DEFAULT_STEPS,
                             tooltip=f"optimisation steps; more learns more and takes longer. Default {DEFAULT_STEPS} "
                                     f"(cells), {DEFAULT_STEPS // 2} (columns)")
        self.twin_fraction = FloatSpinBox(label="twin fraction", min=0.0, max=0.95, step=0.05, value=0.5,
                                          tooltip="share of each batch made of fresh digital-twin cells, so the "
                                                  "model keeps what it knew. Default 0.5")
        self.n_twins = SpinBox(label="twins", min=1, max=500, value=DEFAULT_TWINS,
                               tooltip="digital twins simulated at the start, whose cells are mixed into batches. "
                                       f"Default {DEFAULT_TWINS}")
        self.val_fraction = FloatSpinBox(label="held-out fraction", min=0.05, max=0.5, step=0.05, value=0.2,
                                         tooltip="share of the labelled cells kept aside to measure the model "
                                                 "before and after training. Default 0.2")
        self.estimate = text_label(tooltip="how long the training will take on this computer (a rough guide)")
        self.train_button, self.cancel_button, self.progress, buttons = run_controls(
            "Train", "fine-tune the shipped model on the training sets into a new version", what="the training")
        self.result = text_label(tooltip="the outcome of the last training")
        self.figure, self.canvas = plot_canvas(220)
        plot = Section("Training curves", expanded=True,
                       tooltip="loss and accuracy per step, held-out score at the evaluations")
        plot.add_native(self.canvas)
        title = text_label("<b>Training sets</b> (folders from 'Export training set')",
                           tooltip="the training sets the new version learns from")
        sets = Container(labels=False, widgets=[title, self.datasets, self.hint,
                                                row(self.add_button, self.remove_button)])
        sets.margins = (0, 0, 0, 0)
        form = Container(labels=True, widgets=[self.what, self.name, self.steps, self.twin_fraction, self.n_twins,
                                               self.val_fraction])
        self.extend([sets, form, self.estimate, buttons, self.progress, self.result, plot])
        self.finish()
        self.runner = JobRunner(self.native, self.train_button, self.cancel_button, self.progress, self._say)
        self._relay = _Relay(self.native)
        self._relay.record.connect(self._on_record)
        self.add_button.changed.connect(lambda *_: self.add_dataset())
        self.remove_button.changed.connect(lambda *_: self.remove_selected())
        self.what.changed.connect(self._on_what)
        for widget in (self.steps, self.n_twins):
            widget.changed.connect(self._show_estimate)
        self.train_button.changed.connect(lambda *_: self.train())
        self.cancel_button.changed.connect(self.runner.cancel)
        self._draw()
        self._show_estimate()

    def _show_estimate(self, *_) -> None:
        """The time estimate for the current settings."""
        seconds = estimate_seconds(self.what.value, int(self.steps.value), int(self.n_twins.value))
        self.estimate.value = (f"Estimated time: {_duration(seconds)} on a 2-core laptop CPU "
                               f"({self.steps.value} steps); the bar shows the time left once it runs.")

    def _on_what(self, *_) -> None:
        """The usual number of steps of the model kind (cells: 400; the column U-Net: 200)."""
        self.steps.value = DEFAULT_STEPS if self.what.value == "cells" else DEFAULT_STEPS // 2
        self._show_estimate()

    # ------------------------------------------------------------------ datasets
    def _dataset_choices(self, *_) -> list[str]:
        return list(self._datasets)

    def add_dataset(self, path: str | Path | None = None) -> bool:
        """Add a training-set folder (asked with a dialog when not given).

        Returns
        -------
        bool
            True when the folder holds a training set and was added.
        """
        if path is None:
            path = ask_directory(self.native, str(Path.home()))
        if not path:
            return False
        folder = Path(path)
        if not (folder / "manifest.json").is_file():
            self._say(f"{folder} is not a training set (no manifest.json): export one with 'Export training set'.")
            return False
        if str(folder) not in self._datasets:
            self._datasets.append(str(folder))
            self.datasets.reset_choices()
        self.hint.visible = not self._datasets
        self._say(f"{len(self._datasets)} training set(s).")
        return True

    def remove_selected(self) -> None:
        """Drop the selected folders from the list."""
        chosen = set(self.datasets.value or ())
        self._datasets = [d for d in self._datasets if d not in chosen]
        self.datasets.reset_choices()
        self.hint.visible = not self._datasets

    # ------------------------------------------------------------------ training
    def _say(self, message: str) -> None:
        self.say(message)

    def train(self, blocking: bool = False) -> Any:
        """Fine-tune with the current settings into a new model version.

        Parameters
        ----------
        blocking : bool
            Train on the calling thread and return the ``FinetuneResult`` (None when it
            failed or was cancelled); otherwise start a worker and return it.
        """
        if self.runner.busy:
            return self.runner.worker
        if not self._datasets:
            self._say("Add at least one training set folder first. " + EMPTY_HINT)
            return None
        name = str(self.name.value).strip()
        if not name:
            self._say("Give the new model version a name.")
            return None
        what = self.what.value
        try:
            out = new_model_path(what, name)
        except (ValueError, FileExistsError, KeyError) as err:
            self._say(f"Cannot use the name '{name}' ({message_of(err)}).")
            return None
        job = {"what": what, "datasets": list(self._datasets), "out": out, "name": out.stem,
               "n_twins": int(self.n_twins.value),
               "steps": int(self.steps.value), "twin_fraction": float(self.twin_fraction.value),
               "val_fraction": float(self.val_fraction.value)}
        self.history = []
        self._started = None
        self._draw()
        self._say(f"Training '{out.stem}' ({what}) on {len(job['datasets'])} training set(s), {job['steps']} steps...")
        return self.runner.start(self._work, job, self._apply, blocking=blocking, what="The training")

    def _work(self, job: dict[str, Any], report: Callable[[float], None]) -> Generator[float, None, Any]:
        """The fine-tuning, in a child process; returns a FinetuneResult, or a message when it did not finish."""
        yield 0.0
        settings = {"steps": job["steps"], "twin_fraction": job["twin_fraction"],
                    "val_fraction": job["val_fraction"], "n_twins": job["n_twins"],
                    "command": f"napari dock 'Train a model' ({job['what']}, version {job['name']})"}
        try:
            result = yield from run_in_child(job["what"], job["datasets"], str(job["out"]), settings,
                                             job["cancel"], self._relay.record.emit)
        except Exception as err:  # the process could not start: log it, never a traceback dialog
            log.exception("fine-tuning failed")
            return f"Training failed unexpectedly ({type(err).__name__}: {err}); details in the log."
        if not isinstance(result, str):
            yield 1.0
        return result

    def _on_record(self, record: dict[str, Any]) -> None:
        """A progress dict from the trainer: keep it, redraw the curves, tell the time left."""
        self.history.append(record)
        self._draw()
        step, steps = record.get("step"), record.get("steps")
        if step is None or not steps:
            return
        now = time.monotonic()
        if self._started is None:
            self._started = (now, float(step))
        began, first = self._started
        if step > first and now > began:
            left = (float(steps) - float(step)) * (now - began) / (float(step) - first)
            self.estimate.value = f"Step {step} of {steps}: about {_duration(left)} left."

    def _apply(self, job: dict[str, Any], result: Any) -> Any:
        """Show the finished training and tell the classify docks about the new version."""
        if isinstance(result, str):
            self._say(result)
            return None
        self.last_result = result
        if getattr(result, "history", None):
            self.history = [dict(r) for r in result.history]
            self._draw()
        if job["what"] == "cells":
            from ._model_choice import notify_models_changed

            notify_models_changed()
        self._say(result_summary(job["name"], result))
        return result

    def _draw(self) -> None:
        """Training loss and accuracy per step; held-out accuracy at the evaluations."""
        self.figure.clear()
        style, fg = plot_style(self.figure, self._viewer)
        steps = [r for r in self.history if "step" in r and "loss" in r]
        # cells: batch accuracy and held-out accuracy; columns: soft Dice and held-out detection F1
        train_key = next((k for k in ("accuracy", "dice") if any(k in r for r in steps)), None)
        val_key = next((k for k in ("val_accuracy", "val_f1") if any(k in r for r in self.history)), None)
        evals = [r for r in self.history if val_key is not None and val_key in r]
        with matplotlib.rc_context(style):
            ax = self.figure.add_subplot(1, 1, 1)
            ax.set(xlabel="step", ylabel="loss", title="training")
            if steps:
                x = [r["step"] for r in steps]
                ax.plot(x, [r["loss"] for r in steps], color="#EE7733", lw=1.2, label="loss")
                ax2 = ax.twinx()
                ax2.set_ylim(0, 1)
                ax2.set_ylabel("accuracy" if val_key != "val_f1" else "Dice / F1")
                if train_key is not None:
                    ax2.plot(x, [r.get(train_key, float("nan")) for r in steps], color="#33BBEE", lw=1.0,
                             label=f"train {train_key}")
                if evals:
                    xe = [r.get("step", x[-1]) for r in evals]
                    ax2.plot(xe, [r[val_key] for r in evals], "o-", color=fg, ms=3, lw=0.8,
                             label=f"held-out {val_key[4:].replace('f1', 'F1')}")
                lines = ax.get_legend_handles_labels()
                more = ax2.get_legend_handles_labels()
                ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
        self.canvas.draw_idle()


def estimate_seconds(what: str, steps: int, n_twins: int) -> float:
    """A rough training time in seconds on a 2-core laptop CPU (see :data:`SECONDS_PER_STEP`).

    Examples
    --------
    >>> estimate_seconds("cells", 400, 24) > estimate_seconds("cells", 100, 24)
    True
    """
    return (START_SECONDS + SECONDS_PER_STEP.get(what, 1.0) * int(steps)
            + SECONDS_PER_TWIN.get(what, 0.5) * int(n_twins))


def _duration(seconds: float) -> str:
    """'about 40 s', '3 min', '1 h 20 min'."""
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{max(5, int(round(seconds / 5) * 5))} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _metric(metrics: dict[str, Any] | None, key: str) -> str:
    value = (metrics or {}).get(key)
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def result_summary(name: str, result: Any) -> str:
    """A few lines for the dock: held-out accuracy and macro-F1 before and after, and where it was saved.

    Parameters
    ----------
    name : str
        The new model version.
    result : FinetuneResult
        What the trainer returned.
    """
    before, after = getattr(result, "before", None) or {}, getattr(result, "after", None) or {}
    lines = [f"Saved model version '{name}' to {result.path}.",
             f"{result.n_train} training and {result.n_val} held-out examples."]
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("precision", "precision"),
                       ("recall", "recall"), ("f1", "F1")):
        if key in before or key in after:
            lines.append(f"Held-out {label}: {_metric(before, key)} (shipped) -> {_metric(after, key)} (new).")
    if getattr(result, "card", None):
        lines.append(f"Model card: {result.card}.")
    return "\n".join(lines)


__all__ = ["TrainWidget", "ask_directory", "estimate_seconds", "result_summary", "trainable_kinds"]
