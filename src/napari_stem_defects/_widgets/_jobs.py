"""Running a dock widget's long job off the GUI thread, with progress and cancel.

A job is a generator function ``work(job, report)`` that yields the fraction done
(and may call ``report(fraction)`` from deep inside a computation) and returns its
result; ``apply(job, result)`` shows that result on the GUI thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import ProgressBar, PushButton
from qtpy.QtCore import QObject, QTimer, Signal


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (a queued Qt connection)."""
    progress = Signal(float)


class JobRunner:
    """Starts jobs in a napari ``thread_worker`` (or on the calling thread) and wires the controls.

    Parameters
    ----------
    parent : QWidget
        Owner of the Qt relay object.
    run_button : PushButton
        Disabled while a job runs.
    cancel_button : PushButton or None
        Enabled while a job runs; None for jobs that cannot be cancelled.
    progress : ProgressBar
        Shows the fraction done (0-100).
    say : callable
        Shows a message to the person (used for unexpected failures and "Cancelling...").
    """

    def __init__(self, parent: Any, run_button: PushButton, cancel_button: PushButton | None, progress: ProgressBar,
                 say: Callable[[str], None]) -> None:
        self.run_button, self.cancel_button, self.progress_bar, self.say = run_button, cancel_button, progress, say
        self.worker: Any = None
        self.cancel_event = threading.Event()
        self._relay = _Relay(parent)
        self._relay.progress.connect(self.set_progress)
        self._began = 0.0
        self._ticker = QTimer(parent, interval=1000)  # the bar's text counts the seconds: it moves while work runs
        self._ticker.timeout.connect(self._tick)

    @property
    def busy(self) -> bool:
        """True while a job runs in the background."""
        return self.worker is not None

    def set_progress(self, fraction: float) -> None:
        """Show ``fraction`` (clipped to 0-1) on the progress bar."""
        self.progress_bar.value = int(round(100 * min(max(float(fraction), 0.0), 1.0)))

    def start(
        self,
        work: Callable[[dict[str, Any], Callable[[float], None]], Generator[float, None, Any]],
        job: dict[str, Any],
        apply: Callable[[dict[str, Any], Any], Any],
        *,
        blocking: bool = False,
        what: str = "The job",
    ) -> Any:
        """Run ``work(job, report)``; then ``apply(job, result)`` on the GUI thread.

        ``job['cancel']`` is set to this runner's cancel event (a fresh one per job).

        Returns
        -------
        The value of ``apply`` when ``blocking``; otherwise the started worker.
        """
        if self.worker is not None:
            return self.worker
        self.cancel_event = threading.Event()
        job["cancel"] = self.cancel_event
        self.set_progress(0.0)
        if blocking:
            gen = work(job, self.set_progress)
            try:
                while True:
                    self.set_progress(next(gen))
            except StopIteration as stop:
                return apply(job, stop.value)
        from napari.qt.threading import thread_worker

        worker = thread_worker(work, start_thread=False, ignore_errors=True)(job, self._relay.progress.emit)
        worker.yielded.connect(self.set_progress)
        worker.returned.connect(lambda result: apply(job, result))
        worker.errored.connect(lambda err: self.say(f"{what} failed unexpectedly ({err})."))
        worker.finished.connect(self._finished)
        self.worker = worker
        self._set_running(True)
        worker.start()
        return worker

    def cancel(self, *_) -> None:
        """Ask the running job to stop at its next checkpoint (its partial work is discarded)."""
        self.cancel_event.set()
        if self.worker is not None:
            self.say("Cancelling...")

    def _finished(self, *_) -> None:
        self.worker = None
        self._set_running(False)

    def _tick(self) -> None:
        show_elapsed(self.progress_bar, time.monotonic() - self._began)

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        if self.cancel_button is not None:
            self.cancel_button.enabled = running
        if running:
            self._began = time.monotonic()
            self._ticker.start()
        else:
            self._ticker.stop()
        show_elapsed(self.progress_bar, None)


def show_elapsed(progress: ProgressBar, seconds: float | None) -> None:
    """Write the seconds a job has run into its progress bar's text (None: the plain percentage)."""
    native = getattr(progress, "native", None)
    if native is not None and hasattr(native, "setFormat"):
        native.setFormat("%p%" if seconds is None else f"%p%  ({int(seconds)} s)")
