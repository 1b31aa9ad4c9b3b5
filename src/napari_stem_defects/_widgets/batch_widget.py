"""Dock widget "Batch": analyse folders of files as ``napari-stem-defects batch`` does, from the viewer.

A thin front end to :func:`napari_stem_defects.batch.runner.run_batch`: pick
files, folders or patterns and an output folder, take the settings from the
other docks' layers (or set them here), and run in a background thread with
per-file status, an overall bar with the time to go, and cancel. A finished
file's results open as layers; the report opens in the browser. The dock is
one scroll area, so it fits a 1366 x 768 screen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from qtpy.QtCore import QObject, Signal

from ..analysis_heatmaps import HEATMAP_CHOICES
from ..cells.classify import CLASSIFIERS
from ..columns.context_classifier import COLUMN_CLASSIFIERS
from ..materials import KNOWN_MATERIALS
from ._dock import DockScroll, TabWithSiblings, fit_to_width, row
from ._jobs import JobRunner
from ._parts import MicroscopeRow

if TYPE_CHECKING:
    import napari

#: Rows of the per-file table shown (the rest scroll).
_TABLE_ROWS = 8
_NO_MATERIAL = "(none: columns only)"


def ask_paths(parent: Any, folder: bool) -> list[str]:
    """Ask for input files, or one folder; tests replace this function."""
    from qtpy.QtWidgets import QFileDialog

    if folder:
        chosen = QFileDialog.getExistingDirectory(parent, "Add a folder of images")
        return [chosen] if chosen else []
    chosen, _ = QFileDialog.getOpenFileNames(parent, "Add image files")
    return list(chosen)


def open_url(path: str | Path) -> None:
    """Open a local file in the system's browser; tests replace this function."""
    from qtpy.QtCore import QUrl
    from qtpy.QtGui import QDesktopServices

    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


class _Relay(QObject):
    """Carries the batch's progress events from the worker thread to the GUI thread (queued)."""
    event = Signal(object)


class BatchWidget(Container):
    """Analyse many files with one set of settings; resumable, parallel, with a dataset report.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        # napari docks a Container's inner widget, so magicgui's own scroll area would be lost: the controls
        # live in ``body``, inside a QScrollArea of this container.
        super().__init__(labels=False)
        from ..batch.executors import default_workers
        from ..batch.settings import BatchSettings
        from ..batch.worker import available_cores

        self._viewer = viewer
        self._inputs: list[str] = []
        self._rows: dict[str, str] = {}
        self._notes: dict[str, str] = {}
        self._from_docks: dict[str, Any] = {}
        self.result: Any = None
        defaults = BatchSettings(material="MoS2")  # the material box's first choice
        self.inputs = Select(label="inputs", choices=lambda *_: list(self._inputs),
                             tooltip="files, folders (searched recursively) or glob patterns; select some to remove")
        self.inputs.native.setMaximumHeight(90)
        self.add_files = PushButton(text="Add files...")
        self.add_folder = PushButton(text="Add folder...")
        self.pattern = LineEdit(label="or a path/pattern", tooltip="e.g. /data/day1/**/*.dm4, then Enter")
        self.remove = PushButton(text="Remove", tooltip="remove the selected inputs")
        self.out = FileEdit(label="output folder", mode="d", tooltip="results, dataset.csv, batch.json, report.html")
        self.from_docks = PushButton(text="Use the docks' settings",
                                     tooltip="material, method, threshold, classifier, model and heatmaps of the "
                                             "layers the other docks made")
        self.material = ComboBox(label="material", choices=[_NO_MATERIAL, *KNOWN_MATERIALS], value="MoS2")
        self.method = ComboBox(label="method", choices=["classical", "deep"], value=defaults.method)
        self.classifier = ComboBox(label="classifier", choices=list(CLASSIFIERS), value=defaults.classifier)
        self.species_by = ComboBox(label="species by", choices=list(COLUMN_CLASSIFIERS),
                                   value=defaults.column_classifier,
                                   tooltip="what decides each column's species before the cells: context (the "
                                           "context-encoder classifier, default) or intensity (the Z-contrast "
                                           "mixture); without a material always intensity")
        self.heatmaps = ComboBox(label="heatmaps", choices=list(HEATMAP_CHOICES), value="none",
                                 tooltip="per-family defect maps of every file: a network's, or 'cells' (drawn "
                                         "from the cells' class probabilities, so they never contradict them)")
        self.pixel_size = FloatSpinBox(label="pixel size (Å)", min=0.0, max=100.0, step=0.001, value=0.0,
                                       tooltip="0: each file's own calibration")
        self.microscope = MicroscopeRow(tooltip="beam energy, detector and convergence angles of every file; empty: "
                                                "each file's own (when it records them), else Z^1.7 decides which "
                                                "sublattice holds the metals")
        self.workers = SpinBox(label="workers", min=1, max=max(1, available_cores()), value=default_workers(),
                               tooltip="processes analysing files at once (1: in napari's process)")
        self.retry = CheckBox(text="retry failed files", value=False)
        self.redo = CheckBox(text="redo all files", value=False)
        self.run_button = PushButton(text="Run batch")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.status = Label(value="Add files or folders, choose an output folder, then Run.")
        self.status.native.setWordWrap(True)
        self.files = Select(label="files", choices=lambda *_: self._file_rows(),
                            tooltip="status of each file; select finished ones and open their results")
        self.files.native.setMinimumHeight(60)
        self.open_results = PushButton(text="Open results as layers", enabled=False)
        self.open_report = PushButton(text="Open report", enabled=False)
        labelled = lambda *widgets: Container(labels=True, widgets=list(widgets))  # noqa: E731
        self.body = Container(labels=False)
        self.body.extend([labelled(self.inputs), row(self.add_files, self.add_folder, self.remove),
                          labelled(self.pattern, self.out), self.from_docks,
                          labelled(self.material, self.method, self.classifier, self.species_by, self.heatmaps,
                                   self.pixel_size),
                          self.microscope, labelled(self.workers), self.retry, self.redo, self.run_button,
                          self.cancel_button, self.progress, self.status, labelled(self.files), self.open_results,
                          self.open_report])
        fit_to_width(self.body.native)
        # the docks' scroll area (a laptop's height, a fixed width), tabbed onto the plugin's other docks
        self.scroll = DockScroll(self.body.native)
        self._tabs = TabWithSiblings(self.native)
        self.native.layout().addWidget(self.scroll)
        self.native.layout().setContentsMargins(0, 0, 0, 0)
        self._relay = _Relay(self.native)
        self._relay.event.connect(self._on_event)
        self.jobs = JobRunner(self.native, self.run_button, self.cancel_button, self.progress, self._say)
        self.add_files.changed.connect(lambda *_: self._add(ask_paths(self.native, folder=False)))
        self.add_folder.changed.connect(lambda *_: self._add(ask_paths(self.native, folder=True)))
        self.pattern.native.returnPressed.connect(lambda: self._add([self.pattern.value]))
        self.remove.changed.connect(self._remove)
        self.from_docks.changed.connect(lambda *_: self.take_dock_settings())
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(self.jobs.cancel)
        self.files.changed.connect(lambda *_: self._update_buttons())
        self.open_results.changed.connect(lambda *_: self.open_selected())
        self.open_report.changed.connect(lambda *_: self._open_report())

    # ------------------------------------------------------------------ inputs and settings

    def _add(self, paths: list[str]) -> None:
        for path in paths:
            if path and path not in self._inputs:
                self._inputs.append(str(path))
        self.inputs.reset_choices()
        self.pattern.value = ""

    def _remove(self, *_) -> None:
        chosen = set(self.inputs.value or [])
        self._inputs = [p for p in self._inputs if p not in chosen]
        self.inputs.reset_choices()

    def take_dock_settings(self) -> dict[str, Any]:
        """Set the dock's choices from the layers the other docks made (the most recent first)."""
        from ..batch.layers import settings_from_layers

        found = settings_from_layers(self._viewer.layers)
        for key, widget in (("material", self.material), ("method", self.method),
                            ("classifier", self.classifier), ("column_classifier", self.species_by),
                            ("heatmaps", self.heatmaps)):
            value = found.get(key)
            if value is not None:
                if value not in widget.choices:
                    widget.choices = [*widget.choices, value]
                widget.value = value
        self._from_docks = {k: v for k, v in found.items() if k in ("threshold", "refine", "cell_model",
                                                                    "column_model", "heatmap_window")}
        said = ", ".join(f"{k} {v}" for k, v in found.items()) or "nothing (run the other docks first)"
        self._say(f"From the docks: {said}.")
        return found

    def settings(self) -> Any:
        """The :class:`~napari_stem_defects.batch.settings.BatchSettings` the dock's choices make."""
        from ..batch.settings import BatchSettings

        extra = dict(self._from_docks)
        if self.method.value != "deep":
            extra.pop("column_model", None)
        if self.heatmaps.value != "sliding-window":
            extra.pop("heatmap_window", None)
        for key in ("cell_model", "column_model"):
            if extra.get(key) == "shipped":
                extra.pop(key)
        material = None if self.material.value == _NO_MATERIAL else self.material.value
        microscope, note = self.microscope.settings()
        if note:
            raise ValueError(note)
        return BatchSettings(material=material, method=self.method.value, classifier=self.classifier.value,
                             column_classifier=self.species_by.value if material else None,
                             heatmaps=self.heatmaps.value, pixel_size=self.pixel_size.value or None,
                             microscope=None if microscope is None else microscope.as_dict(), **extra)

    # ------------------------------------------------------------------ running

    def run(self, blocking: bool = False) -> Any:
        """Start the batch (in a background thread unless ``blocking``)."""
        if not self._inputs:
            self._say("Add files or folders first.")
            return None
        if not str(self.out.value) or str(self.out.value) in (".", ""):
            self._say("Choose an output folder first.")
            return None
        try:
            settings = self.settings()
            settings.check()
        except ValueError as err:
            self._say(f"Cannot run: {err}")
            return None
        self._rows, self._notes = {}, {}
        self.files.reset_choices()
        job = {"inputs": list(self._inputs), "out": str(self.out.value), "settings": settings,
               "workers": int(self.workers.value), "retry": bool(self.retry.value), "redo": bool(self.redo.value)}
        self._say("Looking for files and for results of earlier runs...")
        return self.jobs.start(self._work, job, self._apply, blocking=blocking, what="The batch")

    def _work(self, job: dict[str, Any], report: Any):
        from ..batch.runner import run_batch

        yield 0.0

        def progress(event: Any) -> None:
            self._relay.event.emit(event)
            if event.to_do:
                report(event.done / event.to_do)

        try:
            return run_batch(job["inputs"], job["out"], job["settings"], workers=job["workers"],
                             retry_failed=job["retry"], redo=job["redo"], progress=progress,
                             cancel=job["cancel"].is_set)
        except (ValueError, OSError) as err:
            return err

    def _on_event(self, event: Any) -> None:
        """One batch event, on the GUI thread: the file's row, the status line."""
        if event.kind == "planned":
            self._total = event.total
            self._say(f"{event.total} files: {event.total - event.to_do} done before with these settings, "
                      f"{event.to_do} to analyse.")
        elif event.kind == "started" and event.rel:
            self._rows[event.rel] = "running"
        elif event.kind == "finished" and event.rel:
            record = event.record or {}
            self._rows[event.rel] = record.get("status", "failed")
            self._notes[event.rel] = record_note(record)
            eta = "" if not math.isfinite(event.eta_s) or event.done == event.to_do \
                else f", about {_duration(event.eta_s)} to go"
            failed = f", {event.failed} failed" if event.failed else ""
            self.status.value = f"{event.done}/{event.to_do} files{failed}{eta}."
        self.files.reset_choices()

    def _apply(self, job: dict[str, Any], result: Any) -> Any:
        if isinstance(result, Exception):
            self._say(f"Cannot run: {result}")
            return result
        self.result = result
        for record in result.records:
            self._rows[record["file"]] = record.get("status", "failed")
            self._notes[record["file"]] = record_note(record)
        self.files.reset_choices()
        ok = len(result.records) - result.failed
        what = "Cancelled: " if result.cancelled else ""
        self._say(f"{what}{len(result.records)} files: {ok} ok, {result.failed} failed; {result.analysed} analysed "
                  f"now, {result.skipped} kept, in {_duration(result.elapsed_s)}. Results in {result.out_dir}.")
        self.jobs.set_progress(1.0 if not result.cancelled else self.progress.value / 100)
        self._update_buttons()
        return result

    # ------------------------------------------------------------------ results

    def _file_rows(self) -> list[str]:
        return [f"{status:8s} {rel}{self._notes.get(rel, '')}" for rel, status in sorted(self._rows.items())]

    def _selected_files(self) -> list[str]:
        rows = {f"{status:8s} {rel}{self._notes.get(rel, '')}": rel for rel, status in self._rows.items()}
        return [rows[row] for row in (self.files.value or []) if row in rows and self._rows[rows[row]] == "ok"]

    def _update_buttons(self) -> None:
        done = self.result is not None
        self.open_report.enabled = done and self.result.report is not None
        self.open_results.enabled = done and bool(self._selected_files())

    def open_selected(self) -> list[Any]:
        """Add the selected finished files' results to the viewer (image, columns, cells, defect map)."""
        from ..batch.layers import result_layers

        if self.result is None:
            return []
        records = {r["file"]: r for r in self.result.records}
        added = []
        for rel in self._selected_files():
            record = records.get(rel)
            if record is None:
                continue
            try:
                tuples = result_layers(record["path"], self.result.out_dir / rel)
            except (ValueError, OSError, KeyError) as err:
                self._say(f"Cannot open {rel}: {err}")
                continue
            for data, kwargs, kind in tuples:
                added.append(getattr(self._viewer, f"add_{kind}")(data, **kwargs))
        return added

    def _open_report(self) -> None:
        if self.result is not None and self.result.report is not None:
            open_url(self.result.report)

    def _say(self, message: str) -> None:
        self.status.value = message


def record_note(record: dict[str, Any]) -> str:
    """What a file's row in the dock adds to its status: the most frequent defect with its 95 % interval,
    or why the file failed.

    Examples
    --------
    >>> record_note({"status": "ok", "row": {"count_V_X1": 4, "count_V_M": 1, "concentration_V_X1_cm2": 2.1e13,
    ...              "concentration_V_X1_lo95_cm2": 7e12, "concentration_V_X1_hi95_cm2": 4.6e13}})
    ' · V_X1 2.1e+13 cm⁻² (7e+12–4.6e+13)'
    >>> record_note({"status": "failed", "message": "Could not read x.tif: truncated"})
    ' · Could not read x.tif: truncated'
    """
    if record.get("status") != "ok":
        return f" · {str(record.get('message', ''))[:90]}"
    row = record.get("row") or {}
    counts = {k[6:]: v for k, v in row.items() if k.startswith("count_") and k != "count_perfect" and v}
    if not counts:
        return " · no defect" if "count_perfect" in row else ""
    cls = max(counts, key=counts.get)
    conc = row.get(f"concentration_{cls}_cm2")
    if conc is None or not math.isfinite(float(conc)):
        return f" · {cls} {counts[cls]} cells"
    lo, hi = row.get(f"concentration_{cls}_lo95_cm2"), row.get(f"concentration_{cls}_hi95_cm2")
    return f" · {cls} {float(conc):.2g} cm⁻² ({float(lo):.2g}–{float(hi):.2g})"


def _duration(seconds: float) -> str:
    from ..batch.runner import format_duration

    return format_duration(seconds)
