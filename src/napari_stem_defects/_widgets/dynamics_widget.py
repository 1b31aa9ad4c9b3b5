"""Dock widget "Dynamics": drift, column tracks, events and an instability map of an image series.

Runs :func:`napari_stem_defects.dynamics.pipeline.analyze_stack` on a (t, y, x) Image
layer in a napari ``thread_worker`` and shows the registered stack, a Tracks layer,
the events (sites emptied, filled, moved, species changes) as Points over time, the
instability map, the sites coloured by instability and the clusters of unstable
sites; the dock plots the drift and the events and defect counts per frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, SpinBox

from ..calibration import LatticeNotFoundError
from ..columns import ColumnDetectionError
from ..dynamics.layers import EVENT_COLOURS, dynamics_layers, legend_html
from ._dock import (
    Section, StemDock, adopt_material, is_grey_image, layer_choice, material_choice, pixel_size, plot_canvas,
    plot_style, row, run_controls, text_label,
)
from ._jobs import JobRunner

if TYPE_CHECKING:
    import napari

    from ..dynamics.pipeline import DynamicsResult

log = logging.getLogger(__name__)
#: Errors that mean "this series cannot be analysed", shown as a message.
EXPECTED_ERRORS = (ColumnDetectionError, LatticeNotFoundError, ValueError, ImportError)
#: Cell classifiers offered for the per-frame defect counts ('none' skips them).
CLASSIFIERS: tuple[str, ...] = ("physics", "cnn", "cnn-two-stage", "none")


def ask_directory(parent: Any, default: str) -> str:
    """Ask for a folder to write the results into ("" when cancelled); tests replace this function."""
    from qtpy.QtWidgets import QFileDialog

    return str(QFileDialog.getExistingDirectory(parent, "Save dynamics results into", default) or "")


class DynamicsWidget(StemDock):
    """Register an image series, track its atom columns and map the unstable sites.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose (t, y, x) image layers are offered.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.last_result: DynamicsResult | None = None
        self.layer = layer_choice(viewer, self._accepts, label="image series",
                                  tooltip="a (t, y, x) image series: a multi-frame file, frames stacked with "
                                          "Layers > Stack > Images to stack, or the sample series")
        self.material = material_choice()
        self.nonrigid = CheckBox(text="non-rigid drift correction", value=True,
                                 tooltip="besides the rigid shift, correct the smooth distortion of each frame "
                                         "(scan drift) on a coarse grid. Default on")
        self.classifier = ComboBox(label="defect counts", choices=list(CLASSIFIERS), value="physics",
                                   tooltip="cell classifier for the per-frame defect counts: physics (default, "
                                           "fast), cnn, cnn-two-stage, or none (skips them)")
        self.encoder = ComboBox(label="instability", choices=["intensity", "autoencoder", "rvae"], value="intensity",
                                tooltip="how unstable sites are found: intensity (default, no network: each "
                                        "column's intensity change less the change its neighbours share, which "
                                        "ranks real events best on simulated series), autoencoder (our "
                                        "autoencoder's code change fused with it) or rvae (atomai's rotationally "
                                        "invariant VAE instead, fused the same way; slower)")
        self.max_gap = SpinBox(label="max gap", min=0, max=10, value=2,
                               tooltip="frames a site may go unseen and keep its track. Default 2")
        self.persistence = SpinBox(label="min persistence", min=1, max=10, value=1,
                                   tooltip="frames a new state must last to count as an event (filters one-frame "
                                           "flicker). Default 1")
        self.run_button, self.cancel_button, self.progress, buttons = run_controls(
            "Analyse series", "register the frames, track the columns, find events and unstable sites",
            what="the analysis")
        self.result = text_label(tooltip="what the last analysis found")
        self.legend = text_label(legend_html(), tooltip="colours of the event markers")
        self.save_button = PushButton(text="Save results...", enabled=False,
                                      tooltip="write drift, tracks, events, instability and clusters (the files of "
                                              "'napari-stem-defects dynamics') into a folder")
        self.figure, self.canvas = plot_canvas(400)
        plot = Section("Drift and events per frame", expanded=True,
                       tooltip="rigid drift against frame 0, and the events and defects per frame")
        plot.add_native(self.canvas)
        form = Container(labels=True, widgets=[self.layer, self.material, self.nonrigid, self.classifier,
                                               self.encoder, self.max_gap, self.persistence])
        self.extend([form, buttons, self.progress, self.result,
                     Section("Event colours", [self.legend], expanded=False, labels=False,
                             tooltip="colours of the event markers"),
                     row(self.save_button), plot])
        self.finish()
        self.runner = JobRunner(self.native, self.run_button, self.cancel_button, self.progress, self._say)
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(self.runner.cancel)
        self.save_button.changed.connect(lambda *_: self.save())
        self.layer.changed.connect(self._on_layer)
        self._on_layer()

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _accepts(layer) -> bool:
        """Grey (t, y, x) image layers that are not this widget's own output."""
        return is_grey_image(layer, (3,)) and not layer.metadata.get("dynamics")

    def _on_layer(self, *_) -> None:
        """Take the material from the series' metadata when it names one."""
        layer = self.layer.value
        adopt_material(self.material, None if layer is None else layer.metadata.get("material"))

    def _say(self, message: str) -> None:
        self.say(message)

    def _make_job(self) -> dict[str, Any] | None:
        """What the worker needs, read on the GUI thread; None (with a message) on bad input."""
        from napari.layers import Image

        layer = self.layer.value
        if layer is None:
            flat = [x.name for x in self._viewer.layers if isinstance(x, Image) and x.ndim == 2 and not x.rgb]
            self._say("Dynamics needs an image series (t, y, x). "
                      + (f"'{flat[0]}' is a single image: stack frames first (Layers > Stack > Images to stack)."
                         if flat else "Open a multi-frame file or the sample series first."))
            return None
        size = pixel_size(layer)
        return {"layer": layer, "data": layer.data[0] if layer.multiscale else layer.data,
                "material": self.material.value, "pixel_size": None if size is None else float(np.mean(size)),
                "nonrigid": bool(self.nonrigid.value), "classifier": self.classifier.value,
                "max_gap": int(self.max_gap.value), "min_persistence": int(self.persistence.value),
                "encoder": self.encoder.value,
                "placement": {"scale": tuple(float(s) for s in layer.scale)[-2:],
                              "units": tuple(str(u) for u in layer.units)[-2:],
                              "translate": tuple(float(t) for t in layer.translate)[-2:]}}

    # ------------------------------------------------------------------ running
    def run(self, blocking: bool = False) -> DynamicsResult | Any | None:
        """Analyse the selected series with the current settings.

        Parameters
        ----------
        blocking : bool
            Work on the calling thread and return the :class:`DynamicsResult` (None when it
            failed or was cancelled); otherwise start a ``thread_worker`` and return it.
        """
        if self.runner.busy:
            return self.runner.worker
        job = self._make_job()
        if job is None:
            return None
        self._say(f"Analysing '{job['layer'].name}' ({np.shape(job['data'])[0]} frames)...")
        return self.runner.start(self._work, job, self._apply, blocking=blocking, what="The dynamics analysis")

    def _work(self, job: dict[str, Any], report: Callable[[float], None]) -> Generator[float, None, Any]:
        """The whole analysis; returns a DynamicsResult, or a message string when it could not finish."""
        from ..dynamics.pipeline import analyze_stack

        yield 0.0
        try:
            classifier = None if job["classifier"] == "none" else job["classifier"]
            result = analyze_stack(np.asarray(job["data"]), job["material"], job["pixel_size"],
                                   nonrigid=job["nonrigid"], classifier=classifier, max_gap=job["max_gap"],
                                   min_persistence=job["min_persistence"], encoder=job["encoder"], progress=report,
                                   cancel=job["cancel"].is_set)
        except InterruptedError:
            result = "Cancelled."
        except EXPECTED_ERRORS as err:
            result = f"Cannot analyse '{job['layer'].name}' ({err})."
        except Exception as err:  # a bug, not bad input: log it, never a traceback dialog
            log.exception("dynamics analysis failed")
            result = f"Unexpected error ({type(err).__name__}: {err}); details in the log."
        if not isinstance(result, str):
            yield 1.0  # a cancelled or failed run leaves the bar where it stopped
        return result

    def _apply(self, job: dict[str, Any], result: Any) -> DynamicsResult | None:
        """Show a finished analysis: layers, summary and plots."""
        if isinstance(result, str):
            self._say(result)
            return None
        self.last_result = result
        self._job = job
        name = job["layer"].name
        for old in [x for x in self._viewer.layers  # a previous run's layers (clusters it found may be gone)
                    if x.metadata.get("dynamics") and x.metadata.get("image_layer") == name]:
            self._viewer.layers.remove(old)
        for data, kwargs, kind in dynamics_layers(result, name, **job["placement"]):
            if kwargs["name"] in self._viewer.layers:
                self._viewer.layers.remove(kwargs["name"])
            getattr(self._viewer, f"add_{kind}")(data, **kwargs)
        self._draw(result)
        self._say(summary(result, name))
        self.save_button.enabled = True
        return result

    def _draw(self, result: DynamicsResult) -> None:
        """Drift per frame; events (and vacancy counts) per frame."""
        self.figure.clear()
        style, fg = plot_style(self.figure, self._viewer)
        shifts = result.registration.shifts
        frames = np.arange(len(shifts))
        with matplotlib.rc_context(style):
            ax = self.figure.add_subplot(2, 1, 1)
            ax.plot(frames, shifts[:, 0], label="y")
            ax.plot(frames, shifts[:, 1], label="x")
            ax.set(ylabel="drift (px)", title="rigid drift against frame 0")
            ax.legend()
            ax2 = self.figure.add_subplot(2, 1, 2, sharex=ax)
            events = result.events
            for kind, colour in EVENT_COLOURS.items():
                per_frame = np.bincount(events.loc[events["kind"] == kind, "frame"].astype(int),
                                        minlength=len(frames))[: len(frames)]
                if per_frame.any():
                    ax2.plot(frames, per_frame, color=colour[:3], label=kind.replace("_", " "))
            if len(result.defect_counts):
                ax2.plot(result.defect_counts["frame"], result.defect_counts["vacancies"], color=fg,
                         linestyle="--", label="cells with vacancies")
            ax2.set(xlabel="frame", ylabel="count", title="events and defects per frame")
            ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncols=2)  # below: the curves stay seen
        self.canvas.draw_idle()

    # ------------------------------------------------------------------ saving
    def save(self, folder: str | None = None) -> dict[str, Path] | None:
        """Write every result file (as ``napari-stem-defects dynamics`` does) into a folder.

        Parameters
        ----------
        folder : str, optional
            Target folder; asked with a dialog when not given.
        """
        from ..dynamics.files import write_dynamics

        if self.last_result is None:
            self._say("Analyse a series first.")
            return None
        folder = folder or ask_directory(self.native, str(Path.home()))
        if not folder:
            return None
        try:
            paths = write_dynamics(self.last_result, folder, source=self._job["layer"].name)
        except OSError as err:
            self._say(f"Cannot write into {folder} ({err}).")
            return None
        self._say(f"{len(paths)} files written to {folder}.")
        return paths


def summary(result: DynamicsResult, name: str) -> str:
    """A few lines for the dock: drift, tracks, events, clusters, messages."""
    shifts = result.registration.shifts
    drift = float(np.hypot(shifts[:, 0], shifts[:, 1]).max())
    kinds = result.events["kind"].value_counts().to_dict() if len(result.events) else {}
    events = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kinds.items()) or "none"
    n_clusters = 0 if result.clusters is None else len(result.clusters.table)
    lines = [f"'{name}': {len(shifts)} frames, drift up to {drift:.1f} px; {len(result.track_features)} tracks.",
             f"Events: {events}.",
             f"{int(result.site_table['instability'].notna().sum())} sites scored for instability; "
             f"{n_clusters} clusters of unstable sites.",
             *result.messages]
    return "\n".join(lines)


__all__ = ["CLASSIFIERS", "DynamicsWidget", "ask_directory", "summary"]
