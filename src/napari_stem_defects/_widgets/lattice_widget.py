"""Dock widget "Lattice analysis": strain and rotation maps, profiles around defects, class-averaged images.

Thin over :mod:`napari_stem_defects.lattice`: takes an image, the sites Points layer of "Detect atom columns"
(positions from the layer, so moved points count) and, when "Classify unit cells" made one, its
``<image> cells`` layer (the classes); runs :func:`~napari_stem_defects.lattice.analysis.analyse_frame` in a
worker thread, adds ``<image> exx (%)``, ``eyy (%)``, ``exy (%)`` and ``rotation (deg)`` Image layers (the
image's scale and units, a diverging colormap centred at zero, colour bar) and shows the profiles and a small
class-average gallery. For a stack only the current frame is analysed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from magicgui.widgets import ComboBox, Container

from ..lattice.analysis import LatticeFrame, analyse_frame
from ..lattice.class_average import relaxation_summary
from ._dock import (
    Section,
    StemDock,
    current_frame,
    is_grey_image,
    layer_choice,
    pixel_size,
    plot_canvas,
    plot_style,
    run_controls,
    text_label,
)
from ._jobs import JobRunner
from ._structure import mask_of
from .cells_widget import column_layers, points_sites

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
#: Map layers: (name suffix, index in the maps, factor to the shown unit).
MAP_LAYERS = (("exx (%)", 0, 100.0), ("eyy (%)", 1, 100.0), ("exy (%)", 2, 100.0), ("rotation (deg)", 3, 1.0))
REFERENCES = ("domain average", "material lattice constant", "region (Shapes layer)")


def _is_shapes(layer: Any) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes) and not layer.name.endswith(" cells")


def _is_points(layer: Any) -> bool:
    from napari.layers import Points

    return isinstance(layer, Points)


class LatticeWidget(StemDock):
    """Strain and rotation maps, radial profiles around each defect class and class-averaged images.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.last_run: LatticeFrame | None = None
        self.layer = layer_choice(viewer, is_grey_image, tooltip="the image to measure (a stack: the frame shown)")
        self.points = layer_choice(viewer, _is_points, label="sites", nullable=True,
                                   tooltip="the atom columns (a Points layer of 'Detect atom columns'); "
                                           "default '<image> columns'")
        self.reference = ComboBox(label="reference", choices=list(REFERENCES), value=REFERENCES[0],
                                  tooltip="the unstrained lattice: each domain's average lattice; its orientation "
                                          "with the material's nominal lattice constant (needs a calibrated "
                                          "image and its material); or each domain's lattice inside the "
                                          "shapes of a Shapes layer you draw")
        self.region = layer_choice(viewer, _is_shapes, label="region", nullable=True,
                                   tooltip="a Shapes layer whose shapes mark the reference region")
        self.run_button, self.cancel_button, self.progress, buttons = run_controls(
            "Measure lattice", "strain, rotation, profiles around defects and class averages", what="the measurement")
        self.result = text_label(tooltip="what the last run found")
        self.profile_figure, self.profile_canvas = plot_canvas(230)
        self.gallery_figure, self.gallery_canvas = plot_canvas(200)
        profiles = Section("Around defects", expanded=True,
                           tooltip="radial displacement and metal-metal distance around each defect class: "
                                   "mean over instances with its 95 % interval")
        profiles.add_native(self.profile_canvas)
        gallery = Section("Class averages", expanded=True,
                          tooltip="every instance of a class aligned on its fitted sites and averaged "
                                  "(n averaged, signal-to-noise)")
        gallery.add_native(self.gallery_canvas)
        form = Container(labels=True, widgets=[self.layer, self.points, self.reference, self.region])
        self.extend([form, buttons, self.progress, self.result, profiles, gallery])
        self.finish()
        self.runner = JobRunner(self.native, self.run_button, self.cancel_button, self.progress, self.say)
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(self.runner.cancel)
        self.layer.changed.connect(self._on_layer)
        viewer.layers.events.inserted.connect(self._on_layer)
        self._on_layer()

    def _on_layer(self, *_) -> None:
        image = self.layer.value
        layers = [] if image is None else column_layers(self._viewer, image)
        if layers and (self.points.value is None or self.points.value not in layers) \
                and layers[0] in self.points.choices:
            self.points.value = layers[0]

    def _reference(self, image: Any, shape: tuple[int, int]) -> str | np.ndarray:
        choice = self.reference.value
        if choice == REFERENCES[1]:
            return "material"
        if choice == REFERENCES[2]:
            shapes = self.region.value
            if shapes is None or shapes.nshapes == 0:
                raise ValueError("draw the reference region in a Shapes layer and choose it under 'region'")
            return mask_of(shapes, shape, None, image=image)
        return "domain"

    def run(self, blocking: bool = False) -> LatticeFrame | Any | None:
        """Measure the lattice of the selected image and sites (``blocking``: on this thread, return the result)."""
        if self.runner.busy:
            return self.runner.worker
        image, points = self.layer.value, self.points.value
        if image is None:
            self.say("Open or select an image first.")
            return None
        if points is None or len(points.data) == 0:
            self.say(f"No atom columns for '{image.name}': detect columns first (Detect atom columns widget).")
            return None
        missing = {"sublattice", "site_id", "i", "j"} - set(points.features.columns)
        if missing:
            self.say(f"'{points.name}' is not a column layer (no {', '.join(sorted(missing))} features).")
            return None
        # the cell dock's reading of a columns layer (the frame shown, moved points, hand-added points)
        frame = current_frame(self._viewer, image) if image.ndim == 3 else None
        sites, params = points_sites(points, frame)
        pixels = np.asarray(image.data[frame] if frame is not None else image.data, float)
        try:
            reference = self._reference(image, pixels.shape)
        except ValueError as err:
            self.say(str(err))
            return None
        cells_name = f"{image.name} cells"
        cells = self._viewer.layers[cells_name].features if cells_name in self._viewer.layers else None
        nn = params.get("nn_px") or _nn_of(sites)
        meta = dict(image.metadata)
        if "lattice_constant_A" not in meta and params.get("material"):
            from ..materials import parse_material

            meta["lattice_constant_A"] = parse_material(params["material"]).a
        job = {"pixels": pixels, "sites": sites, "cells": cells, "nn": float(nn), "pixel_size": pixel_size(image),
               "metadata": meta, "reference": reference, "image": image, "frame": frame}
        if not blocking:
            self.say("Measuring the lattice...")
        return self.runner.start(self._work, job, self._apply, blocking=blocking, what="The measurement")

    def _work(self, job: dict[str, Any], report: Callable[[float], None]) -> Generator[float, None, Any]:
        yield 0.1
        try:
            out = analyse_frame(job["pixels"], job["sites"], job["cells"], job["nn"], job["pixel_size"],
                                job["metadata"], job["reference"])
        except (ValueError, KeyError, IndexError) as err:
            out = str(err) or type(err).__name__
        except Exception as err:  # a bug, not bad input: log it, never a traceback dialog
            log.exception("lattice measurement failed")
            out = f"unexpected error ({type(err).__name__}: {err}); details in the log"
        yield 1.0
        return None if job["cancel"].is_set() else out

    def _apply(self, job: dict[str, Any], run: Any) -> Any:
        if run is None:
            self.say("Cancelled.")
            return None
        if isinstance(run, str):
            self.say(f"Cannot measure the lattice ({run}).")
            return None
        self.last_run = run
        image = job["image"]
        if image in self._viewer.layers:
            self._show_maps(image, run)
        metal = run.site_values["exx"].notna()
        exx, eyy = (100 * run.site_values.loc[metal, c] for c in ("exx", "eyy"))
        rot = run.site_values.loc[metal, "rotation_deg"]
        classes = ", ".join(f"{a.name} {a.n}" for a in run.averages) or "none (classify cells first)"
        notes = "".join(f"<br><i>{m}</i>" for m in run.messages)
        self.result.value = (f"{int(metal.sum())} metal sites: exx {exx.mean():+.2f} ± {exx.std():.2f} %, "
                             f"eyy {eyy.mean():+.2f} ± {eyy.std():.2f} %, rotation {rot.mean():+.2f} ± "
                             f"{rot.std():.2f}°<br>class averages: {classes}{notes}")
        self._viewer.status = "Lattice measured" + ("" if job["frame"] is None else f" (frame {job['frame']})") + "."

        self._draw_profiles(run)
        self._draw_gallery(run)
        return run

    def _show_maps(self, image: Any, run: LatticeFrame) -> None:
        for suffix, k, factor in MAP_LAYERS:
            name = f"{image.name} {suffix}"
            data = run.maps[k] * factor
            finite = data[np.isfinite(data)]
            limit = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
            limit = limit if limit > 0 else 1.0
            kwargs = {"scale": tuple(image.scale)[-2:], "translate": tuple(image.translate)[-2:],
                      "units": tuple(str(u) for u in image.units)[-2:]}
            if name in self._viewer.layers:
                layer = self._viewer.layers[name]
                layer.data = data
                layer.contrast_limits = (-limit, limit)
            else:
                layer = self._viewer.add_image(data, name=name, colormap="coolwarm", contrast_limits=(-limit, limit),
                                               opacity=0.6, blending="translucent", visible=k == 0, **kwargs)
            layer.metadata.update({"lattice_map": suffix, "image_layer": image.name})
            try:
                layer.colorbar.visible = k == 0
            except AttributeError:  # older napari: no colour bar overlay
                pass

    def _draw_profiles(self, run: LatticeFrame) -> None:
        fig = self.profile_figure
        fig.clear()
        style, _fg = plot_style(fig, self._viewer)
        prof = run.profiles
        with matplotlib.rc_context(style):
            axes = fig.subplots(2, 1, sharex=True)
            for ax, quantity, label in zip(axes, ("radial_displacement", "metal_metal_distance"),
                                           ("u_r (pm)", "M-M (pm)")):
                part = prof[prof["quantity"] == quantity] if len(prof) else prof
                for name, group in (part.groupby("class") if len(part) else []):
                    ax.plot(group["r_pm"], group["mean_pm"], marker="o", ms=2, lw=1, label=name)
                    ax.fill_between(group["r_pm"], group["ci95_low_pm"], group["ci95_high_pm"], alpha=0.25)
                ax.set_ylabel(label)
            axes[-1].set_xlabel("distance from the defect (pm)")
            if len(prof):
                axes[0].legend(fontsize=6, ncol=3)
            else:
                axes[0].set_title("no defect classes: classify cells first")
        self.profile_canvas.draw_idle()

    def _draw_gallery(self, run: LatticeFrame) -> None:
        fig = self.gallery_figure
        fig.clear()
        style, _ = plot_style(fig, self._viewer)
        averages = run.averages[:8]
        with matplotlib.rc_context(style):
            cols = max(1, min(4, len(averages)))
            rows = max(1, int(np.ceil(len(averages) / cols)))
            for k, avg in enumerate(averages):
                ax = fig.add_subplot(rows, cols, k + 1)
                ax.imshow(avg.image, cmap="gray")
                ax.set_axis_off()
                shift, err, _ = relaxation_summary(avg)
                rel = f"\nM shell {shift:+.1f}±{err:.1f} pm" if np.isfinite(shift) else ""
                ax.set_title(f"{avg.name} n={avg.n}, SNR {avg.snr:.0f}{rel}", fontsize=6)
            if not averages:
                ax = fig.add_subplot(1, 1, 1)
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no class averages:\nclassify cells first", ha="center", va="center")
        self.gallery_canvas.draw_idle()


def _nn_of(sites) -> float:
    """Median metal-to-nearest-column distance of a site table (when the layer does not record nn_px)."""
    from scipy.spatial import cKDTree

    yx = sites[["y_px", "x_px"]].to_numpy(float)
    d, _ = cKDTree(yx).query(yx, k=2)
    return float(np.median(d[:, 1]))


__all__ = ["MAP_LAYERS", "REFERENCES", "LatticeWidget"]
