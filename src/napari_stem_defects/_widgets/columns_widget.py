"""Dock widget: find every atom column of an image (or stack) and show them as a Points layer.

The detection map (the expensive step) is cached per (layer, frame, method, model version); threshold,
refinement and material changes re-run only ``columns_from_map``. Work runs in a napari
``thread_worker``; ``run(blocking=True)`` drains the same generator on the calling thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSlider
from qtpy.QtCore import QObject, QTimer, Signal

from ..calibration import LatticeNotFoundError
from ..columns import pipeline
from ..columns.atomai_engine import TRUST_WARNING, UntrustedModelError
from ..columns.context_classifier import COLUMN_CLASSIFIERS, apply_context_classifier
from ..columns.points_layer import (
    legend_html,
    marker_legend_html,
    result_to_points_data,
    species_colour,
    stack_results_to_points_data,
)
from ..columns.result import ColumnResult
from ..image_check import check_detection
from ..materials import parse_material
from ..model_registry import SHIPPED
from ._dock import (
    Section,
    StemDock,
    adopt_material,
    current_frame,
    is_grey_image,
    layer_choice,
    material_choice,
    pixel_size,
    plot_canvas,
    plot_style,
    text_label,
)
from ._jobs import show_elapsed
from ._model_choice import ModelChoice
from ._parts import MicroscopeRow
from ._structure import is_mask_layer as _is_mask_layer
from ._structure import mask_of as _mask_of
from ._structure import show_structure
from .columns_run import (
    DetectionJob,
    DetectionRun,
    columns_layer_name,
    map_key,
    method_label,
)
from .columns_run import summary as run_summary

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
#: Errors that mean "this image cannot be analysed", shown as a message.
EXPECTED_ERRORS = (pipeline.ColumnDetectionError, LatticeNotFoundError, ValueError, ImportError, FileNotFoundError,
                   UntrustedModelError)
_CACHE_BYTES = 512 * 2**20


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (a queued Qt connection)."""
    progress = Signal(float)


class ColumnsWidget(StemDock):
    """Detect atom columns in the selected image, label their species and show them as points.

    Each method (and column model version) gets a layer of its own, ``<image> columns`` for
    the classical method and ``<image> columns (deep)`` for the U-Net, so the two can be
    compared side by side.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose 2D images and 3D stacks are offered.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self._cache: OrderedDict[tuple, pipeline.DetectionMap] = OrderedDict()
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], dict[int | None, tuple[ColumnResult, dict]]] = {}
        self._watched: set[str] = set()
        self._worker, self._job, self._pending, self._shown = None, None, False, None
        self.layer = layer_choice(viewer, is_grey_image, tooltip="the HAADF image (2D) or image series (t, y, x) "
                                  "to find the atom columns of")
        self.method = ComboBox(label="method", choices=list(pipeline.METHODS), value="classical",
                               tooltip="classical: smoothing and local background (no network); deep: the column "
                                       "U-Net (shipped or fine-tuned). Each method draws its own layer, so both "
                                       "can be compared. Default classical")
        self.material = material_choice()
        self.species_by = ComboBox(label="species by", choices=list(COLUMN_CLASSIFIERS), value="context",
                                   tooltip="what decides each column's species: context = the context-encoder "
                                           "classifier (default; Zernike contrast of the column + the material, "
                                           "beam energy and detector of the Microscope row); intensity = the "
                                           "image's Z-contrast mixture (always without a material)")
        self.model = ModelChoice("columns", self.native,
                                 "weights of the deep method's U-Net: 'shipped' (packaged) or a version "
                                 "trained with the 'Train a model' dock")
        self.model.enabled = False
        self.atomai_file = FileEdit(label="AtomAI model", mode="r", filter="AtomAI models (*.tar *.pt)", enabled=False,
                                    tooltip="atomai method: the file your trained atomai Segmentor was saved to "
                                            "(e.g. model_metadict_final.tar)")
        self.trust = CheckBox(text="trust this file (runs its code)", value=False, label="",
                              enabled=False, tooltip=TRUST_WARNING + " Default off: the file is not loaded.")
        self.threshold = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01,
                                     value=pipeline.DEFAULT_THRESHOLD["classical"],
                                     tooltip="peaks of the detection map above this (0-1) are columns; moving it "
                                             "re-labels at once from the cached map. Default "
                                             f"{pipeline.DEFAULT_THRESHOLD['classical']:.2f} (classical), "
                                             f"{pipeline.DEFAULT_THRESHOLD['deep']:.2f} (deep)")
        self.refine = ComboBox(label="refinement", choices=list(pipeline.REFINEMENTS), value="gaussian",
                               tooltip="sub-pixel position of each column: gaussian (2D Gaussian fit, default) or "
                                       "com (centre of mass, faster)")
        self.mask = layer_choice(viewer, _is_mask_layer, label="mask", nullable=True,
                                 tooltip="optional: a Labels or Shapes layer (drawn with the image's scale) whose "
                                         "painted or enclosed pixels are not analysed: no sites, no cells, no area "
                                         "(NaN pixels of the image are always left out). Default none")
        self.microscope = MicroscopeRow(self.layer, self._say)
        self.force = CheckBox(text="analyse anyway", value=False,
                              tooltip="show the columns even when the image check finds the image is not a 2H "
                                      "monolayer of the material (another lattice, another material, a wrong "
                                      "pixel size); default off")
        self.all_frames = CheckBox(text="all frames", value=False, enabled=False,
                                   tooltip="for an image series: detect the columns of every frame (default: the "
                                           "frame shown)")
        buttons = self.run_area("Detect columns", "find every atom column of the image with the settings above",
                                what="the detection")
        self.legend = text_label(tooltip="species colours and counts of the columns layer")
        self.markers = text_label(marker_legend_html(), tooltip="what the marker shapes mean")
        self.details = text_label(tooltip="messages and settings of the last run")
        self.figure, self.canvas = plot_canvas(340)
        self.plot = Section("Intensity histograms", expanded=True,
                            tooltip="the integrated intensity of every column per sublattice, with the fitted "
                                    "species mixture: why a column got its label")
        self.plot.add_native(self.canvas)
        form = Container(labels=True, widgets=[self.layer, self.method, self.model, self.atomai_file, self.trust,
                                               self.material, self.species_by, self.threshold, self.refine, self.mask, self.all_frames,
                                               self.force])
        self.extend([form, self.microscope, buttons, self.progress, self.result, self.legend, self.markers,
                     Section("Details", [self.details], expanded=False, labels=False,
                             tooltip="messages of the detection and the settings it used"), self.plot])
        self.finish()
        self._relay = _Relay(self.native)
        self._relay.progress.connect(self._set_progress)
        self._debounce = QTimer(self.native, singleShot=True, interval=250)
        self._debounce.timeout.connect(self.run)
        self._began = 0.0
        self._ticker = QTimer(self.native, interval=1000)  # seconds in the bar's text while a run works
        self._ticker.timeout.connect(lambda: show_elapsed(self.progress, time.monotonic() - self._began))
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.layer.changed.connect(self._on_layer)
        self.method.changed.connect(self._on_method)
        for widget in (self.threshold, self.refine, self.material, self.species_by, self.model, self.atomai_file, self.trust,
                       *self.microscope.fields):
            widget.changed.connect(self._on_parameter)
        viewer.dims.events.current_step.connect(lambda *_: self._draw_histogram(only_if_changed=True))
        self._on_layer()

    def _on_layer(self, *_) -> None:
        layer = self.layer.value
        self.all_frames.enabled = layer is not None and layer.ndim == 3
        self.result.value = self.legend.value = self.details.value = ""
        with self.material.changed.blocked():
            adopt_material(self.material, None if layer is None else layer.metadata.get("material"))
        self._draw_histogram()

    def _on_method(self, *_) -> None:
        self.model.enabled = self.method.value == "deep"
        self.atomai_file.enabled = self.trust.enabled = self.method.value == "atomai"
        with self.threshold.changed.blocked():
            self.threshold.value = pipeline.DEFAULT_THRESHOLD[self.method.value]
        self._on_parameter()

    def _on_parameter(self, *_) -> None:
        """Re-run the cheap steps when every map they need is cached; otherwise wait for Run."""
        job = self._make_job()
        with self._lock:
            cached = job is not None and all(map_key(job, f) in self._cache for f in job.frames)
        if cached:
            self._debounce.start()

    def _set_progress(self, fraction: float) -> None:
        self.progress.value = int(round(100 * min(max(fraction, 0.0), 1.0)))

    def _say(self, message: str) -> None:
        self.say(message)

    def _make_job(self) -> DetectionJob | None:
        layer = self.layer.value
        if layer is None:
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        if layer.ndim == 2:
            frames: tuple[int | None, ...] = (None,)
        else:
            frames = tuple(range(data.shape[0])) if self.all_frames.value else (self._current_frame(layer),)
        params = {"threshold": float(self.threshold.value), "refine": self.refine.value,
                  "material": self.material.value, "method": self.method.value,
                  "species_by": self.species_by.value if self.material.value else "intensity",
                  "model": (self.model.value or SHIPPED) if self.method.value == "deep" else
                  (str(self.atomai_file.value) if self.method.value == "atomai" else None),
                  "trust": bool(self.trust.value),
                  "pixel_size": pixel_size(layer), "image_layer": layer.name, "force": bool(self.force.value),
                  "mask": None if self.mask.value is None else self.mask.value.name}
        mask = _mask_of(self.mask.value, data.shape[-2:], frames[0], image=layer)
        microscope, note = self.microscope.settings()
        return DetectionJob(layer, layer.unique_id, data, frames, params, mask=mask, microscope=microscope, note=note,
                            energy_kV=self.microscope.energy_kV())

    def _current_frame(self, layer) -> int:
        """The stack frame the viewer shows (dims position mapped through the layer's scale)."""
        return current_frame(self._viewer, layer)

    def run(self, blocking: bool = False) -> DetectionRun | Any | None:
        """Detect columns in the selected image with the current settings.

        Parameters
        ----------
        blocking : bool
            Work on the calling thread and return the :class:`DetectionRun`
            (tests, scripts). Otherwise start a ``thread_worker`` and return it.
        """
        self._debounce.stop()
        if self._worker is not None:  # settings changed while running: run again when done
            self._pending = True
            return self._worker
        try:
            job = self._make_job()
        except ValueError as err:  # a mask of another shape
            self._say(f"Cannot use the mask: {err}.")
            return None
        if job is None:
            self._say("Open or select an image first.")
            return None
        self._watch(job.layer)
        self._set_progress(0.0)
        if blocking:
            work = self._work(job, self._set_progress)
            try:
                while True:
                    self._set_progress(next(work))
            except StopIteration as stop:
                return self._apply(job, stop.value)
        from napari.qt.threading import thread_worker

        worker = thread_worker(self._work, start_thread=False, ignore_errors=True)(job, self._relay.progress.emit)
        worker.yielded.connect(self._set_progress)
        worker.returned.connect(lambda run: self._apply(job, run))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker, self._job = worker, job
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self._began = time.monotonic()
        self._ticker.start()
        self._say("Detecting columns...")
        worker.start()
        return worker

    def cancel(self, *_) -> None:
        """Stop the running detection at its next checkpoint, keeping the frames already done."""
        if self._worker is not None and self._job is not None:
            self._pending = False
            self._job.cancel.set()  # a flag, not worker.quit(): quitting would drop the partial result
            self._say("Cancelling...")

    def _work(self, job: DetectionJob, report: Callable[[float], None]) -> Generator[float, None, DetectionRun]:
        """Maps (cached), then columns, frame by frame; yields the fraction done."""
        run, n, p = DetectionRun(), len(job.frames), job.params
        for k, frame in enumerate(job.frames):
            try:
                if job.cancel.is_set():
                    raise InterruptedError("cancelled")
                image = np.asarray(job.data if frame is None else job.data[frame])
                key = map_key(job, frame)
                with self._lock:
                    dmap = self._cache.get(key)
                if dmap is None:
                    model = p["model"] if p["method"] == "atomai" else \
                        None if p["model"] in (None, SHIPPED) else self.model.path(p["model"])
                    dmap = pipeline.compute_detection_map(
                        image, p["method"], material=p["material"], pixel_size=p["pixel_size"], model=model,
                        trust_model_file=p["trust"],
                        cancel=job.cancel.is_set, progress=lambda f, k=k: report((k + 0.7 * f) / n))
                    self._remember(key, dmap)
                yield (k + 0.7) / n
                if job.cancel.is_set():
                    raise InterruptedError("cancelled")
                run.results[frame] = pipeline.columns_from_map(
                    image, dmap, threshold=p["threshold"], refine=p["refine"], material=p["material"],
                    pixel_size=p["pixel_size"], mask=job.mask, microscope=job.microscope)
                if p["species_by"] == "context":
                    apply_context_classifier(run.results[frame], image, parse_material(p["material"]), job.microscope,
                                             energy_kV=job.energy_kV)
                if run.check is None and p["material"]:  # before any layer: is it the material said?
                    run.check = check_detection(image, run.results[frame], dmap.lattice, p["material"],
                                                p["pixel_size"], microscope=job.microscope)
                    run.check.forced = p["force"] and not run.check.ok
                    if not run.check.ok and not p["force"]:
                        run.results.clear()
                        break
            except InterruptedError:
                run.cancelled = True
                break
            except EXPECTED_ERRORS as err:
                run.errors[frame] = str(err) or type(err).__name__
            except Exception as err:  # a bug, not bad input: log it, but never a traceback dialog
                log.exception("column detection failed")
                run.errors[frame] = f"unexpected error ({type(err).__name__}: {err}); details in the log"
            yield (k + 1) / n
        return run

    def _remember(self, key: tuple, dmap: pipeline.DetectionMap) -> None:
        """Cache a map, dropping the oldest beyond _CACHE_BYTES."""
        with self._lock:
            self._cache[key] = dmap
            while len(self._cache) > 1 and sum(d.map.nbytes for d in self._cache.values()) > _CACHE_BYTES:
                self._cache.popitem(last=False)

    def _watch(self, layer) -> None:
        """Forget a layer's maps and results when its data changes."""
        if (key := layer.unique_id) not in self._watched:
            self._watched.add(key)
            layer.events.data.connect(lambda *_: self._forget(key))

    def _forget(self, key: str) -> None:
        with self._lock:
            for k in [k for k in self._cache if k[0] == key]:
                del self._cache[k]
        for run_key in [k for k in self._runs if k[0] == key]:
            del self._runs[run_key]

    def _on_error(self, err: Exception) -> None:
        log.error("column detection failed", exc_info=err)
        self._say(f"Column detection failed unexpectedly ({type(err).__name__}: {err}).")

    def _on_finished(self, *_) -> None:
        self._worker = self._job = None
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self._ticker.stop()
        show_elapsed(self.progress, None)
        if self._pending:
            self._pending = False
            self.run()

    def _apply(self, job: DetectionJob, run: DetectionRun) -> DetectionRun:
        """Show a finished run: Points layer, summary, legend, histogram."""
        if run.check is not None and not run.check.ok and not run.check.forced:
            self._say(f"Not shown: {run.check.message} Tick 'analyse anyway' to see the columns regardless.")
            self.details.value = "\n".join(f.message for f in run.check.findings)
            return run
        stored = self._runs.setdefault((job.key, method_label(job.params)), {})
        params = {k: v for k, v in job.params.items() if k != "pixel_size"}
        stored.update({frame: (result, params) for frame, result in run.results.items()})
        if run.results and job.layer in self._viewer.layers:
            run.layer = self._show(job.layer, stored, params)
            if job.layer.ndim == 2:
                self._show_structure(job.layer, stored[None][0])
                self._viewer.layers.selection.active = run.layer  # the columns stay the layer to correct
        summary, details = run_summary(run, params)
        if job.note and run.results:  # settings outside the multislice table, or a file's energy alone
            summary += f"\n{job.note[0].upper()}{job.note[1:]}."
        if run.check is not None and (run.check.warnings or run.check.forced):
            summary += "\n" + " ".join(run.check.warnings + ([run.check.message] if run.check.forced else []))
        self._say(summary)
        self.details.value = details
        self.legend.value = legend_html([r for r, _ in stored.values()])
        self._draw_histogram()
        return run

    def _show(self, layer, stored: dict[int | None, tuple[ColumnResult, dict]], params: dict[str, Any]):
        """Put the columns in the method's Points layer (:func:`columns_layer_name`), replacing its data."""
        from napari.layers import Points

        name = columns_layer_name(layer.name, params)
        common = {"scale": tuple(layer.scale), "units": tuple(str(u) for u in layer.units),
                  "translate": tuple(layer.translate), "name": name, "parameters": params}
        if layer.ndim == 2:
            data, kwargs, _ = result_to_points_data(stored[None][0], **common)
        else:
            frames = sorted(stored)
            data, kwargs, _ = stack_results_to_points_data(
                [stored[f][0] for f in frames], frames=frames, frame_parameters={f: stored[f][1] for f in frames},
                **common)
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if isinstance(existing, Points) and existing.ndim == data.shape[1]:
            existing.data = data
            for attr in ("features", "face_color", "border_color", "border_width", "symbol", "size",
                         "scale", "units", "translate"):
                setattr(existing, attr, kwargs[attr])
            existing.metadata.update(kwargs["metadata"])
            existing.refresh()
            return existing
        if isinstance(existing, Points):
            self._viewer.layers.remove(existing)
        return self._viewer.add_points(data, **kwargs)

    def _show_structure(self, layer, result: ColumnResult) -> None:
        """The phase map (Labels) and the peaks no site explains (Points) beside the columns layer."""
        show_structure(self._viewer, layer, result)

    def displayed_result(self) -> ColumnResult | None:
        """The result for the selected image (its current frame for a stack), if any."""
        layer = self.layer.value
        chosen = method_label({"method": self.method.value, "model": self.model.value})
        stored = {} if layer is None else self._runs.get((layer.unique_id, chosen), {})
        if layer is not None and not stored:  # another method's result, the latest one
            stored = next((v for k, v in reversed(self._runs.items()) if k[0] == layer.unique_id), {})
        if not stored:
            return None
        frame = self._current_frame(layer) if layer.ndim == 3 else None
        return (stored.get(frame) or next(iter(stored.values())))[0]

    def _draw_histogram(self, *_, only_if_changed: bool = False) -> None:
        """Intensity histogram of each sublattice with every fitted species' weighted density."""
        result = self.displayed_result()
        if only_if_changed and result is self._shown:
            return
        self._shown = result
        self.figure.clear()
        fits = [] if result is None else [result.species_fits[s] for s in ("M", "X") if s in result.species_fits]
        style, fg = plot_style(self.figure, self._viewer)
        with matplotlib.rc_context(style):
            for n, fit in enumerate(fits):
                ax = self.figure.add_subplot(len(fits), 1, n + 1)
                ax.set(title=f"{fit.sublattice} sites", xlabel="integrated intensity")
                values = np.asarray(fit.intensities, float)
                values = values[np.isfinite(values)]
                if values.size:
                    ax.hist(values, bins=min(60, max(10, values.size // 10)), density=True, color="#888888",
                            alpha=0.6)
                    pad = 0.1 * np.ptp(values) + 1e-9
                    xs = np.linspace(values.min() - pad, values.max() + pad, 400)
                    pdf = fit.component_pdf(xs)
                    for label, weight, curve in zip(fit.labels, fit.weights, pdf, strict=False):
                        ax.plot(xs, curve, color=species_colour(label), lw=1.6, label=f"{label} ({weight:.0%})")
                    ax.plot(xs, pdf.sum(axis=0), color=fg, lw=0.8, ls="--", label="_mixture")
                    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), handlelength=1.0, borderaxespad=0.3)
                ax.set_yticks([])  # densities: their scale says nothing
        self.canvas.draw_idle()
