"""Saving in the "Correct labels" dock: "Save annotations", the autosave after each edit, and the save on close.

"Save annotations" writes the layers next to the image file
(:func:`~napari_stem_defects.annotations.store.sidecar_path`, atomically); an image without a
file is first written as ``<name>.npy`` where the person says. Every edit is autosaved after
:data:`AUTOSAVE_MS` (to the same file, or to the ``autosave`` folder beside the user models
folder), and when the layers are removed or the viewer closes (:class:`WindowCloseFilter`), so
no correction is lost. The writing itself runs in :class:`._snapshot_writer.SnapshotWriter`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject

from ..annotations.store import AnnotationFileError, sidecar_path
from ..annotations.training_set_export import safe_name

log = logging.getLogger(__name__)
#: Errors that mean "this cannot be saved / exported / read", shown as a message in the dock.
EXPECTED_ERRORS = (ValueError, AnnotationFileError, FileNotFoundError, KeyError, IndexError, OSError)
#: Pause after the last edit before the autosave, in milliseconds.
AUTOSAVE_MS = 2000


class WindowCloseFilter(QObject):
    """Calls ``callback`` when the watched window is about to close (owned by the dock, gone with it)."""

    def __init__(self, owner: Any, window: Any, callback: Callable[[], None]) -> None:
        super().__init__(owner)
        self._callback = callback
        window.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close:
            try:
                self._callback()
            except Exception:  # closing must never fail
                log.exception("saving the annotations on close failed")
        return False


class CorrectSaving:
    """Saving and autosaving: the writing half of the "Correct labels" dock.

    Uses the dock's ``image``, ``sites``, ``cells`` and ``material`` controls, its ``writer``
    (:class:`~._snapshot_writer.SnapshotWriter`), ``history``, autosave ``_timer``, ``_say``,
    ``_show_status`` and ``_ask_image_file`` (the file dialog).
    """

    _files: dict[str, Path]
    _kept: list[str]
    _edits: int
    unsaved: bool
    saved_to: Path | None

    def _image_file(self, image) -> Path | None:
        """The image's file: where it was read from, or the .npy written for it here."""
        from ..annotations.layers import image_path_of

        if image is None:
            return None
        path = image_path_of(image)
        return Path(path) if path is not None else self._files.get(image.unique_id)

    def _target(self, autosave: bool = False) -> Path | None:
        """The annotation file: beside the image file, or (autosave only) in the autosave folder."""
        image = self.image.value
        if image is None:
            return None
        try:
            file = self._image_file(image)
        except (ImportError, AttributeError):
            file = None
        if file is not None:
            return sidecar_path(file)
        if not autosave:
            return None
        return sidecar_path(_autosave_image(image))

    def _annotations(self, image_file: Path | None):
        from ..annotations.layers import annotations_from_layers

        return annotations_from_layers(self.image.value, self.sites.value, self.cells.value,
                                       material=self.material.value, image_file=image_file)

    def save(self, image_file: str | Path | None = None) -> Path | None:
        """Write the annotations beside the image file (atomically).

        Parameters
        ----------
        image_file : str or Path, optional
            Only for an image without a file (sample data, a computed image): the
            ``.npy`` file to write the image to first (asked with a dialog when not
            given). The annotations go beside it.

        Returns
        -------
        Path or None
            The annotation file written, None when nothing was written (the reason is shown).
        """
        image = self.image.value
        if image is None:
            self._say("Open or select an image first.")
            return None
        if self.sites.value is None and self.cells.value is None:
            self._say("Nothing to save: detect columns or classify cells first.")
            return None
        file = self._image_file(image)
        if file is None:
            if image_file is None:
                image_file = self._ask_image_file(str(Path.home() / f"{safe_name(image.name, max_length=None)}.npy"))
            if not image_file:
                return None
            file = Path(image_file)
            if file.suffix.lower() != ".npy":
                file = file.with_name(file.name + ".npy")
            if not self._write_image(image, file, f"Cannot write the image to {file}"):
                return None
        target = self._write(sidecar_path(file), file)
        if target is not None:
            self._say(" ".join([f"Annotations saved to {target}.", *self._kept]))
        return target

    def _write_image(self, image, file: Path, failure: str) -> bool:
        """Write an image that has no file as ``file`` (.npy, atomically) and remember it; False (said) on failure."""
        from ..io.atomic import atomic_save_npy

        try:
            atomic_save_npy(file, np.asarray(image.data))
        except OSError as err:
            self._say(f"{failure} ({err}).")
            return False
        self._files[image.unique_id] = file
        return True

    def _write(self, target: Path, image_file: Path | None, blocking: bool = True) -> Path | Any | None:
        """Snapshot the layers here and write them to ``target``: now, or in the background.

        Returns
        -------
        Path, worker or None
            ``target`` once written (blocking), the started worker, or None on failure (shown).
        """
        def failed(err: Exception) -> None:
            self._say(f"Cannot save the annotations to {target} ({err}).")

        try:
            ann = self._annotations(image_file)
        except EXPECTED_ERRORS as err:
            return failed(err)
        number, edits = self.writer.take(), self._edits
        if not blocking:
            return self.writer.start(ann, target, number, lambda _: self._written(target, edits), failed)
        try:
            self.writer.store(ann, target, number)
        except EXPECTED_ERRORS as err:
            return failed(err)
        return self._written(target, edits)

    def _written(self, target: Path, edits: int) -> Path:
        """A snapshot taken after ``edits`` corrections is on disk: saved, unless more came since."""
        self._kept = self.writer.take_notes()
        if self._kept:  # an earlier file that could not be read was kept aside: say where, where it stays seen
            from napari.utils.notifications import show_warning

            self._say(" ".join(self._kept))
            show_warning(" ".join(self._kept))
        self.saved_to = target
        if edits == self._edits:
            self.unsaved = False
            self.history.mark_saved()
            self._timer.stop()
        self._show_status()
        return target

    def autosave(self, blocking: bool = True) -> Path | Any | None:
        """Write the corrections now, to the image's annotation file or the autosave folder.

        An image without a file is written once as ``<name>.npy`` in the autosave
        folder, so opening that file with the plugin restores the corrections.

        Parameters
        ----------
        blocking : bool
            Write on the calling thread and return the file (closing, scripts,
            tests). Otherwise (the autosave timer) only the snapshot of the
            layers is taken here and the writing runs in a background worker,
            which is returned; corrections made meanwhile stay "unsaved" and go
            with the next autosave.
        """
        self._timer.stop()
        image = self.image.value
        if not self.unsaved or image is None or (self.sites.value is None and self.cells.value is None):
            return None
        if not blocking and self.writer.busy:  # one background write at a time: try again after the pause
            self._timer.start()
            return self.writer.worker
        try:
            file = self._image_file(image)
        except (ImportError, AttributeError):
            file = None
        if file is None:
            file = _autosave_image(image)
            if not self._write_image(image, file, f"Cannot autosave to {file.parent}"):
                return None
        target = self._write(sidecar_path(file), file, blocking)
        if isinstance(target, Path):
            self._viewer.status = f"Corrections autosaved to {target}."
        return target

    def flush(self) -> None:
        """Autosave now if corrections are waiting (closing the viewer, removing the layers)."""
        if self.unsaved:
            self.autosave()


def _autosave_folder() -> Path:
    """``autosave`` beside the user models folder."""
    from ..model_registry import user_models_dir

    return user_models_dir().parent / "autosave"


def _autosave_image(image: Any) -> Path:
    """Where the autosave writes an image that has no file: ``<autosave folder>/<name>.npy``."""
    return _autosave_folder() / f"{safe_name(image.name, max_length=None)}.npy"
