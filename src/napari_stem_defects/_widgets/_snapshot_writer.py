"""Writing annotation snapshots to disk in order, on the calling thread or in the background.

The correction dock takes a snapshot of its layers on the GUI thread (a copy:
about 30 ms for 15,000 cells) and hands it here; serialising and writing it
(about 0.5 s for 15,000 cells) then runs in a napari ``thread_worker``, so that
an autosave never freezes the viewer. Snapshots are numbered as they are taken,
and one is written only if no later snapshot is on disk already: a slow
background autosave that finishes after an explicit "Save" of newer
corrections cannot overwrite them. When a save had to keep an earlier file
aside (it could not be read, or belonged to another image; see
:mod:`napari_stem_defects.annotations.safekeeping`), the message saying where
is kept for the dock to show (:meth:`SnapshotWriter.take_notes`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..annotations.store import save_annotations


class SnapshotWriter:
    """Writes numbered annotation snapshots, never an older one over a newer one.

    Examples
    --------
    >>> import tempfile
    >>> from napari_stem_defects.annotations.store import Annotations, ImageReference
    >>> folder = Path(tempfile.mkdtemp())
    >>> writer = SnapshotWriter()
    >>> old, new = writer.take(), writer.take()
    >>> image = ImageReference(None, "twin", (8, 8), "float32", "0" * 64, (1.0, 1.0), ("px", "px"), (0.0, 0.0))
    >>> ann = Annotations(image, "MoS2", None, None)
    >>> writer.store(ann, folder / "a.json", new), writer.store(ann, folder / "a.json", old)
    (True, False)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = 0
        self._stored = 0
        self._notes: list[str] = []
        self.worker: Any = None
        #: The annotator's name written as each file's ``saved_by`` (None: the login name).
        self.saved_by: str | None = None

    @property
    def busy(self) -> bool:
        """True while a background write runs."""
        return self.worker is not None

    def take(self) -> int:
        """Number a new snapshot (call when the snapshot is taken, on the GUI thread)."""
        self._taken += 1
        return self._taken

    def store(self, ann: Any, target: Path, number: int) -> bool:
        """Write snapshot ``number`` to ``target`` unless a later one was written already.

        Returns
        -------
        bool
            True when written, False when skipped as out of date.
        """
        with self._lock:
            if number < self._stored:
                return False
            save_annotations(ann, target, on_kept=self._notes.append, saved_by=self.saved_by)
            self._stored = number
            return True

    def take_notes(self) -> list[str]:
        """The messages of earlier files kept aside since the last call (then forgotten)."""
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def start(self, ann: Any, target: Path, number: int, done: Callable[[bool], Any],
              failed: Callable[[Exception], Any]) -> Any:
        """Write in a napari ``thread_worker``; ``done(written)`` or ``failed(error)`` runs on the GUI thread.

        Returns
        -------
        The started worker.
        """
        from napari.qt.threading import thread_worker

        worker = thread_worker(self.store, start_thread=False, ignore_errors=True)(ann, target, number)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()
        return worker

    def _finished(self, *_) -> None:
        self.worker = None
