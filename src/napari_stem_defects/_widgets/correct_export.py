"""Export in the "Correct labels" dock: the verified cells of this image (and of other annotation files)
written as a training set for the "Train a model" dock
(:func:`napari_stem_defects.annotations.training_set_export.export_training_set`, in a worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..annotations.store import load_annotations
from .correct_save import EXPECTED_ERRORS

log = logging.getLogger(__name__)


class CorrectExport:
    """The "Export training set..." button: the export part of the "Correct labels" dock.

    Uses the dock's ``image`` and ``cells`` controls, the ``export_others`` and ``export_all``
    boxes, its ``exporter`` (:class:`~._jobs.JobRunner`), ``_annotations`` and ``_image_file``
    (:mod:`.correct_save`), ``_say``, and the dialogs ``_ask_export_folder`` and ``_ask_other_files``.
    """

    def export_training_set(self, out_dir: str | Path | None = None, others: Sequence[str | Path] | None = None,
                            *, blocking: bool = False) -> Path | Any | None:
        """Export the verified cells of this image (and of other annotation files) as a training set.

        Parameters
        ----------
        out_dir : str or Path, optional
            Dataset folder (new, empty, or a training set to replace); asked with a dialog when not given.
        others : sequence of str or Path, optional
            Annotation files of other images to export too; asked with a dialog when not
            given and "export other annotated images too" is ticked.
        blocking : bool
            Work on the calling thread and return the manifest path; otherwise start a worker.

        Returns
        -------
        Path, worker or None
            The manifest (blocking), the started worker, or None when nothing was exported.
        """
        if self.exporter.busy:
            return self.exporter.worker
        image = self.image.value
        if image is None or self.cells.value is None:
            self._say("Classify cells (and verify some) before exporting a training set.")
            return None
        if out_dir is None:
            out_dir = self._ask_export_folder(str(Path.home()))
        if not out_dir:
            return None
        if others is None:
            others = self._ask_other_files(str(Path.home())) if self.export_others.value else []
        try:
            sources = [(np.asarray(image.data), self._annotations(self._image_file(image)))]
            sources += [_annotated_image(path) for path in others]
        except EXPECTED_ERRORS as err:
            self._say(f"Cannot export ({err}).")
            return None
        job = {"sources": sources, "out": Path(out_dir), "verified_only": not self.export_all.value}
        self._say(f"Exporting {len(sources)} image(s) to {out_dir}...")
        return self.exporter.start(_export_work, job, self._export_done, blocking=blocking, what="The export")

    def _export_done(self, job: dict[str, Any], result: Any) -> Path | None:
        if isinstance(result, str):
            self._say(result)
            return None
        self._say(f"Training set written to {Path(result).parent} ({len(job['sources'])} image(s)); "
                  "train with the 'Train a model' dock.")
        return Path(result)


def _export_work(job: dict[str, Any], report: Callable[[float], None]) -> Generator[float, None, Any]:
    """Write the training set; returns the manifest path or a message."""
    from ..annotations.training_set_export import export_training_set

    yield 0.0
    try:
        manifest = export_training_set(job["sources"], job["out"], verified_only=job["verified_only"],
                                       progress=lambda done, n: report(done / max(n, 1)))
    except EXPECTED_ERRORS as err:
        return f"Cannot export the training set ({err})."
    except Exception as err:  # a bug, not bad input: log it, never a traceback dialog
        log.exception("training set export failed")
        return f"The export failed unexpectedly ({type(err).__name__}: {err}); details in the log."
    yield 1.0
    return manifest


def _annotated_image(path: str | Path) -> tuple[np.ndarray, Any]:
    """An annotation file and the image it refers to (read with the plugin's reader).

    Raises
    ------
    FileNotFoundError
        The image file is missing (the message names it).
    AnnotationFileError
        The annotation file cannot be read.
    """
    from ..io.rsciio_reader import read_stem_file

    ann = load_annotations(path)
    if not ann.image.file:
        raise FileNotFoundError(f"{path} names no image file")
    file = Path(ann.image.file)
    if not file.is_file():
        raise FileNotFoundError(f"the image of {path} is missing ({file})")
    images = read_stem_file(file)
    shape = tuple(ann.image.shape)
    match = next((im for im in images if tuple(np.shape(im.data)) == shape), None)
    if match is None:
        raise ValueError(f"{file} holds no image of shape {shape} (the one {path} was made on)")
    return np.asarray(match.data), ann
