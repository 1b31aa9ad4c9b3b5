"""Dock widget: whole-image defect probability heatmaps and the regions above a threshold.

Runs :func:`napari_stem_defects.heatmaps.engines.compute_heatmaps` (sliding-window
patch classifier or attention U-Net) on the selected image (for a stack, on the
current frame only) in a napari ``thread_worker``, and shows one probability
layer per defect family plus the uncertainty, in the image's physical scale,
with the regions above the threshold as the Shapes layer ``<image> defect regions``.
The last maps are cached: moving the threshold or changing the outline only
redraws the regions (no network call). Regions smaller than the "min region"
area (in squared atom spacings, nn^2) are dropped as specks. The region table exports to CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, PushButton
from qtpy.QtCore import QTimer

from ..calibration import LatticeNotFoundError
from ..columns import ColumnDetectionError
from ..heatmaps import engines
from ..heatmaps.engines import ENGINES
from ..heatmaps.from_cells import ENGINE as CELLS_ENGINE
from ..heatmaps.from_cells import cell_heatmaps
from ..heatmaps.layers import heatmap_layers, legend_html, region_description, region_shapes
from ..heatmaps.regions import MIN_AREA_NN2, REGION_COLUMNS, Regions, find_regions, min_region_px
from ._dock import (
    Section, StemDock, adopt_material, current_frame, is_grey_image, layer_choice, material_choice, pixel_size,
    row, text_label,
)
from ._jobs import JobRunner
from ._parts import CsvExport, ask_csv_path, put_shapes
from .heatmaps_run import HeatmapsRun, region_counts, summary
from .cells_widget import column_layers, points_sites

if TYPE_CHECKING:
    import napari
    import pandas as pd

log = logging.getLogger(__name__)
#: Errors that mean "this image cannot be analysed", shown as a message.
EXPECTED_ERRORS = (ColumnDetectionError, LatticeNotFoundError, ValueError, ImportError, FileNotFoundError)
#: Choices of the output and outline boxes.
OUTPUTS: tuple[str, ...] = ("separate layers", "channel stack")
OUTLINES: tuple[str, ...] = ("contours", "boxes")
UNITS: tuple[str, ...] = ("px", "Å")


def ask_save_path(parent: Any, default: str) -> str:
    """Ask for a CSV file to write ("" when cancelled); tests replace this function."""
    return ask_csv_path(parent, "Export defect regions", default)


class HeatmapsWidget(CsvExport, StemDock):
    """Compute defect probability heatmaps of an image and outline the regions above a threshold.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose greyscale images are offered (a stack is mapped at the frame shown).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.last_run = None
        self._watched_shapes = None
        self.layer = layer_choice(viewer, self._accepts, tooltip="the HAADF image to map (for a stack, the frame "
                                  "shown); the dock's own maps are not offered")
        self.material = material_choice()
        self.engine = ComboBox(label="engine", choices=[*ENGINES, CELLS_ENGINE], value=ENGINES[0],
                               tooltip="sliding-window: the patch classifier on every window (fast, default); "
                                       "attention-unet: per-pixel segmentation (more accurate, about 8x slower); "
                                       "cells: drawn from the image's classified cells (Classify unit cells "
                                       "first), so the maps never contradict them")
        self.window = FloatSpinBox(label="window", min=0.0, max=100000.0, step=1.0, value=0.0,
                                   tooltip="side of the sliding window, in the window unit; 0 = automatic "
                                           "(64 px when the lattice suits it). Default 0")
        self.stride = FloatSpinBox(label="stride", min=0.0, max=100000.0, step=1.0, value=0.0,
                                   tooltip="step between windows, in the window unit, rounded to a multiple of "
                                           "window / 8; 0 = finest. Default 0")
        self.unit = ComboBox(label="window unit", choices=list(UNITS), value="px",
                             tooltip="unit of window and stride: image pixels (default) or Å (needs a calibration)")
        self.output = ComboBox(label="output", choices=list(OUTPUTS), value=OUTPUTS[0],
                               tooltip="one Image layer per defect family (default), or one layer with a channel "
                                       "axis; switching re-lays the last maps without recomputing")
        self.outline = ComboBox(label="outline", choices=list(OUTLINES), value=OUTLINES[0],
                                tooltip="draw each region as its contour (default) or as its bounding box")
        self.threshold = FloatSlider(label="threshold", min=0.05, max=0.95, step=0.01, value=0.5,
                                     tooltip="probability (0-1) a pixel needs to belong to a region; moving it "
                                             "redraws the regions from the cached maps. Default 0.50")
        self.min_area = FloatSpinBox(label="min region (nn²)", min=0.0, max=50.0, step=0.1, value=MIN_AREA_NN2,
                                     tooltip="regions smaller than this, in squared metal-to-chalcogen distances, "
                                             "are dropped as specks (a point defect lights up about 0.8 nn²); "
                                             f"0 keeps every region. Default {MIN_AREA_NN2}")
        self.label_regions = CheckBox(text="label regions", value=False,
                               tooltip="write each region's family and peak probability beside it (off by "
                                       "default: hundreds of labels hide the image; hover over a region or "
                                       "select it to read them)")
        buttons = self.run_area("Compute heatmaps", "compute the defect probability maps of the image",
                                what="the computation",
                                result_tip="engine, window and the regions found")
        self.legend = text_label(tooltip="map colours and region edges of each defect family")
        self.selection = text_label("Hover over a region (status bar) or select it to read its family and "
                                    "probability.", tooltip="the selected region(s)")
        self.export_button = PushButton(text="Export regions CSV", enabled=False,
                                        tooltip="write the region table (class, centroid, area, probabilities, box) "
                                                "to a CSV file")
        form = Container(labels=True, widgets=[self.layer, self.material, self.engine, self.window, self.stride,
                                               self.unit])
        display = Section("Regions and display", [self.output, self.outline, self.threshold, self.min_area,
                                                  self.label_regions], expanded=True,
                          tooltip="how the maps are laid out and which regions are outlined (no recomputation)")
        self.extend([form, buttons, self.progress, self.result, display,
                     Section("Legend", [self.legend], expanded=True, labels=False,
                             tooltip="map colours and region edges of each defect family"),
                     self.selection, row(self.export_button)])
        self.finish()
        self._unit = self.unit.value
        self.runner = JobRunner(self.native, self.run_button, self.cancel_button, self.progress, self._say)
        self._debounce = QTimer(self.native, singleShot=True, interval=120)
        self._debounce.timeout.connect(self.update_regions)
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(lambda *_: self.export_csv())
        self.layer.changed.connect(self._on_layer)
        self.engine.changed.connect(self._on_engine)
        self.unit.changed.connect(self._on_unit)
        self.threshold.changed.connect(lambda *_: self._debounce.start())
        self.min_area.changed.connect(lambda *_: self._debounce.start())
        self.outline.changed.connect(lambda *_: self.update_regions())
        self.output.changed.connect(lambda *_: self._on_output())
        self.label_regions.changed.connect(self._on_labels)
        self._on_layer()
        self._on_engine()

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _accepts(layer) -> bool:
        """Grey 2D images and 3D stacks (not RGB, not this widget's own maps)."""
        return is_grey_image(layer) and not {"engine", "classes", "image_layer"} <= set(layer.metadata)

    def _on_layer(self, *_) -> None:
        """Take the material from the image's metadata when it names one."""
        layer = self.layer.value
        adopt_material(self.material, None if layer is None else layer.metadata.get("material"))

    def _on_engine(self, *_) -> None:
        windowed = self.engine.value == "sliding-window"
        for widget in (self.window, self.stride, self.unit):
            widget.enabled = windowed

    def _on_unit(self, unit: str) -> None:
        """Convert the window and stride to the new unit when the pixel size is known."""
        old, self._unit = self._unit, unit
        layer = self.layer.value
        size = None if layer is None else pixel_size(layer)
        if old == unit or size is None:
            return
        factor = float(np.mean(size)) if unit == "Å" else 1.0 / float(np.mean(size))
        for widget in (self.window, self.stride):
            widget.value = round(widget.value * factor, 2)

    def _say(self, message: str) -> None:
        self.say(message)

    def _current_frame(self, layer) -> int:
        """The stack frame the viewer shows (dims position mapped through the layer's scale)."""
        return current_frame(self._viewer, layer)

    def _columns_nn(self, image, frame: int | None) -> tuple[float | None, str]:
        """nn distance (px) from the image's column Points layer, and where it came from."""
        layers = column_layers(self._viewer, image)
        if not layers:
            return None, "measured from the image"
        points = layers[0]
        name = points.name
        params = points.metadata.get("parameters", {}) or {}
        per_frame = params.get("frames", {}) or {}
        nn = (per_frame.get(frame) or per_frame.get(str(frame)) or {}).get("nn_px") if frame is not None else None
        nn = params.get("nn_px") if nn is None else nn
        try:
            nn = float(nn)
        except (TypeError, ValueError):
            return None, "measured from the image"
        return (nn, f"from '{name}'") if np.isfinite(nn) and nn > 0 else (None, "measured from the image")

    def _to_px(self, value: float, pixel_size: tuple[float, float] | None) -> float | None:
        """A window or stride in pixels (None for 0 = automatic)."""
        if value <= 0:
            return None
        return float(value) / float(np.mean(pixel_size)) if self.unit.value == "Å" else float(value)

    def _make_job(self) -> dict[str, Any] | None:
        """Everything the worker needs, read on the GUI thread; None (with a message) on bad input."""
        from napari.layers import Image

        image = self.layer.value
        if image is None:
            rgb = [layer.name for layer in self._viewer.layers if isinstance(layer, Image) and layer.rgb]
            self._say(f"'{rgb[0]}' is an RGB image: heatmaps need a greyscale HAADF image (convert it first)."
                      if rgb else "Open or select a greyscale image first.")
            return None
        if image.rgb:
            self._say(f"'{image.name}' is an RGB image: heatmaps need a greyscale HAADF image (convert it first).")
            return None
        data = image.data[0] if image.multiscale else image.data
        frame = self._current_frame(image) if image.ndim == 3 else None
        size = pixel_size(image)
        windowed = self.engine.value == "sliding-window"
        in_angstrom = self.unit.value == "Å" and (self.window.value > 0 or self.stride.value > 0)
        if windowed and in_angstrom and size is None:
            self._say(f"The pixel size of '{image.name}' is unknown: give the window and stride in px, "
                      "or calibrate the image first.")
            return None
        nn_px, nn_source = self._columns_nn(image, frame)
        tables = None
        if self.engine.value == CELLS_ENGINE:
            tables = self._cell_tables(image, frame)
            if tables is None:
                return None
            if nn_px is None:
                self._say(f"The column layer of '{image.name}' records no atom spacing: detect the columns again.")
                return None
        placement = {"scale": tuple(float(s) for s in image.scale)[-2:],
                     "units": tuple(str(u) for u in image.units)[-2:],
                     "translate": tuple(float(t) for t in image.translate)[-2:]}
        return {"image": image, "data": data, "frame": frame, "pixel_size": size, "placement": placement,
                "material": self.material.value, "engine": self.engine.value, "nn_px": nn_px, "nn_source": nn_source,
                "window_px": self._to_px(self.window.value, size) if windowed else None,
                "stride_px": self._to_px(self.stride.value, size) if windowed else None,
                "threshold": float(self.threshold.value), "min_area_nn2": float(self.min_area.value),
                "tables": tables}

    def _cell_tables(self, image, frame: int | None) -> tuple[Any, Any] | None:
        """The sites (the column layer's features at its point positions) and the cells (the cells layer's
        features) of the image's frame, for the cells engine; None, with a message, where there are none."""
        name = f"{image.name} cells"
        shapes = self._viewer.layers[name] if name in self._viewer.layers else None
        needed = {"class", "m_site_id", "x_site_id", "p_perfect"}
        if shapes is None or not needed <= set(shapes.features.columns):
            self._say(f"No classified cells for '{image.name}': classify them first (Classify unit cells dock); "
                      "the cells engine draws its maps from them.")
            return None
        points = column_layers(self._viewer, image)
        if not points:
            self._say(f"No atom columns for '{image.name}': detect columns first (Detect atom columns dock).")
            return None
        sites = points_sites(points[0], frame)[0]
        cells = shapes.features
        if frame is not None and "frame" in cells:
            cells = cells[cells["frame"].astype(int) == frame]
        return sites, cells.drop(columns="frame", errors="ignore").reset_index(drop=True)

    # ------------------------------------------------------------------ running
    def run(self, blocking: bool = False) -> HeatmapsRun | Any | None:
        """Compute the heatmaps of the selected image (current frame of a stack) with the current settings.

        Parameters
        ----------
        blocking : bool
            Work on the calling thread and return the :class:`HeatmapsRun`
            (tests, scripts); otherwise start a ``thread_worker`` and return it.
        """
        if self.runner.busy:
            return self.runner.worker
        job = self._make_job()
        if job is None:
            return None
        if not blocking:
            self._say(f"Computing {job['engine']} heatmaps of '{job['image'].name}'...")
        return self.runner.start(self._work, job, self._apply, blocking=blocking, what="Heatmaps")

    def cancel(self, *_) -> None:
        """Stop the running computation at its next checkpoint."""
        self.runner.cancel()

    def _work(self, job: dict[str, Any], report: Callable[[float], None]) -> Generator[float, None, HeatmapsRun]:
        """Maps, then regions; yields the fraction done (``report`` carries the fraction during inference)."""
        run = HeatmapsRun(image=job["image"], frame=job["frame"], placement=job["placement"],
                          pixel_size=job["pixel_size"],
                          params={k: job[k] for k in ("material", "engine", "nn_px", "nn_source")})
        try:
            image = np.asarray(job["data"][job["frame"]] if job["frame"] is not None else job["data"])
            yield 0.02
            if job["engine"] == CELLS_ENGINE:
                run.result = cell_heatmaps(*job["tables"], image.shape[-2:], job["nn_px"])
            else:
                run.result = engines.compute_heatmaps(
                    image, job["material"], job["engine"], nn_px=job["nn_px"], pixel_size=job["pixel_size"],
                    window_px=job["window_px"], stride_px=job["stride_px"],
                    progress=lambda f: report(0.02 + 0.9 * f), cancel=job["cancel"].is_set)
            yield 0.92
            if job["cancel"].is_set():
                raise InterruptedError("cancelled")
            run.regions = find_regions(run.result.maps, job["threshold"], pixel_size=job["pixel_size"],
                                       classes=run.result.classes,
                                       min_area_px=min_region_px(run.result.nn_px, job["min_area_nn2"]))
        except InterruptedError:
            run.cancelled, run.result = True, None
        except EXPECTED_ERRORS as err:
            run.error, run.result = str(err) or type(err).__name__, None
        except Exception as err:  # a bug, not bad input: log it, never a traceback dialog
            log.exception("heatmap computation failed")
            run.error, run.result = f"unexpected error ({type(err).__name__}: {err}); details in the log", None
        yield 1.0
        return run

    def _apply(self, job: dict[str, Any], run: HeatmapsRun) -> HeatmapsRun:
        """Show a finished run: probability layers, regions, summary and legend."""
        if run.cancelled:
            self._say("Cancelled.")
            return run
        if run.error or run.result is None:
            self._say(f"Cannot compute heatmaps of '{job['image'].name}' ({run.error or 'no result'}).")
            return run
        self.last_run = run
        if run.image in self._viewer.layers:
            run.layers = self._show_maps(run)
        self.update_regions()
        self.export_button.enabled = True
        return run

    # ------------------------------------------------------------------ display
    def _replace_layers(self, names: list[str]) -> None:
        for name in names:
            if name in self._viewer.layers:
                self._viewer.layers.remove(name)

    def _show_maps(self, run: HeatmapsRun) -> list:
        """Add (or replace) the probability and uncertainty layers of a run."""
        stacked = self.output.value == "channel stack"
        out = []
        for data, kwargs, _ in heatmap_layers(run.result, run.image.name, stacked=stacked,
                                              material=run.params.get("material"), **run.placement):
            kwargs = {**kwargs, "metadata": {**kwargs["metadata"], "frame": run.frame}}
            names = kwargs["name"] if isinstance(kwargs["name"], list) else [kwargs["name"]]
            self._replace_layers(names)
            added = self._viewer.add_image(data, **kwargs)
            out.extend(added if isinstance(added, list) else [added])
        regions = f"{run.image.name} defect regions"
        if regions in self._viewer.layers:  # keep the outlines above the maps
            layers = self._viewer.layers
            layers.move(layers.index(regions), len(layers))
        return out

    def _on_output(self) -> None:
        """Re-lay the cached maps as separate layers or a channel stack (no new inference)."""
        run = self.last_run
        if run is not None and run.result is not None and run.image in self._viewer.layers:
            run.layers = self._show_maps(run)

    def update_regions(self, *_) -> Regions | None:
        """Regions of the cached maps at the current threshold, smallest area and outline; no network call.

        Returns
        -------
        Regions or None
            None when nothing has been computed yet.
        """
        self._debounce.stop()
        run = self.last_run
        if run is None or run.result is None:
            return None
        threshold = float(self.threshold.value)
        smallest = min_region_px(run.result.nn_px, float(self.min_area.value))
        if run.regions is None or run.regions.threshold != threshold or run.regions.min_area_px != smallest:
            run.regions = find_regions(run.result.maps, threshold, pixel_size=run.pixel_size,
                                       classes=run.result.classes, min_area_px=smallest)
        if run.image is not None and run.image in self._viewer.layers:
            run.shapes = self._show_regions(run)
        counts = region_counts(run.regions, run.result.classes)
        self.legend.value = legend_html(run.result.classes, counts)
        self._say(summary(run, counts))
        return run.regions

    def _show_regions(self, run: HeatmapsRun):
        """Put the regions in the Shapes layer "<image> defect regions", updating it in place if it exists."""
        data, kwargs = region_shapes(run.regions, run.image.name, boxes=self.outline.value == "boxes",
                                     labels=bool(self.label_regions.value), **run.placement)
        kwargs["metadata"] = {**kwargs["metadata"], "frame": run.frame, "engine": run.result.engine}
        added = put_shapes(self._viewer, data, kwargs)
        self._watch_selection(added)
        return added

    def _on_labels(self, *_) -> None:
        """Show or hide the regions' text labels."""
        run = self.last_run
        shapes = None if run is None else run.shapes
        if shapes is not None and shapes in self._viewer.layers:
            shapes.text.visible = bool(self.label_regions.value)
            shapes.metadata["labels"] = bool(self.label_regions.value)
            shapes.refresh()

    def _watch_selection(self, shapes) -> None:
        """Describe the selected regions in the dock whenever the selection changes."""
        if self._watched_shapes is shapes:
            return
        self._watched_shapes = shapes
        shapes.events.highlight.connect(lambda *_: self.describe_selection(shapes))

    def describe_selection(self, shapes=None) -> str:
        """The selected regions' family, probabilities and area (shown in the dock)."""
        shapes = shapes if shapes is not None else self._watched_shapes
        rows = [] if shapes is None else sorted(int(i) for i in shapes.selected_data if int(i) < len(shapes.features))
        if not rows:
            text = "Hover over a region (status bar) or select it to read its family and probability."
        else:
            text = "<br>".join(region_description(shapes.features.iloc[r]) for r in rows[:5])
            text += f"<br>... and {len(rows) - 5} more" if len(rows) > 5 else ""
        self.selection.value = text
        return text

    # ------------------------------------------------------------------ export
    def _csv_export(self) -> tuple[pd.DataFrame, str, str] | str:
        """The region table (:data:`REGION_COLUMNS`) of the last run, for ``export_csv``."""
        run = self.last_run
        if run is None or run.regions is None:
            return "Compute heatmaps first."
        table = run.regions.table.loc[:, list(REGION_COLUMNS)]
        done = f"{len(table)} regions (threshold {run.regions.threshold:.2f}) written to {{path}}."
        return table, f"{getattr(run.image, 'name', 'image')}_defect_regions.csv", done

    def _ask_csv_path(self, default: str) -> str:
        return ask_save_path(self.native, default)


__all__ = ["HeatmapsRun", "HeatmapsWidget", "ask_save_path", "region_counts", "summary"]
