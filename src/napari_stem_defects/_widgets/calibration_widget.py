"""Dock widget: an image's pixel size (typed, from the file, or from its lattice) and microscope settings.

The pixel size is set through :mod:`napari_stem_defects.layer_calibration`, so the
layer's scale, units and metadata agree and every other dock and the statistics use it.
"Measure lattice" finds the lattice in the power spectrum (shown with the spots it
fitted) and compares the pixel size it implies with the file's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, PushButton

from ..calibration import (
    DEFAULT_TOLERANCE, CalibrationReport, LatticeNotFoundError, check_calibration, lattice_spots,
)
from ..lattice_spectrum import power_spectrum
from ..layer_calibration import calibration_note, file_pixel_size, layer_pixel_size, set_pixel_size
from ._parts import MicroscopeRow
from ._dock import (
    Section, StemDock, adopt_material, current_frame, is_grey_image, layer_choice, material_choice, plot_canvas,
    plot_style, text_label,
)

if TYPE_CHECKING:
    import napari

#: ``calibration_source`` of a pixel size typed in the dock.
TYPED = "typed in the calibration dock"
#: Colour of each order's spot markers in the power spectrum.
_SPOT_COLOURS = {1: "#33BBEE", 2: "#EE7733"}


def _value_and_button(value_tip: str, text: str, tip: str) -> tuple[Any, PushButton]:
    """A pixel size shown (a label) and the button that adopts it (disabled until there is one)."""
    return text_label(tooltip=value_tip), PushButton(text=text, enabled=False, tooltip=tip)


class CalibrationWidget(StemDock):
    """Set an image's pixel size and microscope settings; check the pixel size against the lattice.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose Image layers are offered.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self._report: CalibrationReport | None = None
        self._watched = None
        self.layer = layer_choice(viewer, is_grey_image, tooltip="the image whose calibration to check or set")
        self.material = material_choice()
        self.tolerance = FloatSpinBox(label="tolerance (%)", value=100 * DEFAULT_TOLERANCE, min=0.1, max=50, step=0.5,
                                      tooltip="largest difference (%) between the file's and the lattice's pixel "
                                              f"size that counts as agreeing. Default {100 * DEFAULT_TOLERANCE:.0f} %")
        self.current = text_label(tooltip="the pixel size every dock and the statistics use now, and where it "
                                          "came from")
        self.size_y = FloatSpinBox(label="pixel y (Å/px)", value=0.0, min=0.0, max=10000.0, step=0.0001,
                                   tooltip="pixel size along y (rows) in Å per pixel; 0 = unknown")
        self.size_x = FloatSpinBox(label="pixel x (Å/px)", value=0.0, min=0.0, max=10000.0, step=0.0001,
                                   tooltip="pixel size along x (columns) in Å per pixel; 0 = unknown", enabled=False)
        self.square = CheckBox(text="square pixels (x = y)", value=True,
                               tooltip="one pixel size for both axes (default); untick for non-square pixels")
        self.apply = PushButton(text="Set typed size",
                                tooltip="use the typed pixel size for this image (layer scale, every dock, the "
                                        "statistics)")
        self.file_value, self.use_file = _value_and_button("the pixel size stored in the image file", "Use file value",
                                                           "go back to the pixel size the image file stores")
        self.measure = PushButton(text="Measure lattice",
                                  tooltip="find the lattice in the power spectrum and compute the pixel size the "
                                          "material implies (for a stack: the frame shown)")
        self.lattice_value, self.adopt = _value_and_button(
            "the pixel size the material's lattice implies", "Use lattice value",
            "use the pixel size measured from the lattice (y and x separately)")
        self.result = text_label(tooltip="what the last measurement found")
        self.figure, self.canvas = plot_canvas(300)
        spectrum = Section("Power spectrum", expanded=True,
                           tooltip="the log power spectrum of the image with the lattice spots the measurement "
                                   "fitted (first order blue, second orange)")
        spectrum.add_native(self.canvas)
        form = Container(labels=True, widgets=[self.layer, self.material])
        size = Section("Pixel size", [self.current, Container(labels=True, widgets=[self.size_y, self.size_x]),
                                      self.square, self.apply, self.file_value, self.use_file], expanded=True,
                       labels=False, tooltip="the image's pixel size: typed, from the file, or from the lattice")
        check = Section("Check against the lattice", [Container(labels=True, widgets=[self.tolerance]), self.measure,
                                                      self.lattice_value, self.adopt, self.result],
                        expanded=True, labels=False,
                        tooltip="measure the lattice and compare the pixel size it implies with the file's")
        scope = MicroscopeRow(self.layer, self.say, kv_max=2000.0, angle_max=1000.0, expanded=False,
                              stored=lambda: setattr(self._viewer, "status",
                                                     "Microscope settings stored in the layer's metadata."),
                              tooltip="microscope settings, kept in the image layer's metadata")
        self.microscope = scope
        self.kv, self.inner, self.outer, self.convergence = scope.fields
        self.extend([form, size, check, spectrum, scope])
        self.finish()
        self.measure.changed.connect(self._on_measure)
        self.adopt.changed.connect(self._on_adopt)
        self.apply.changed.connect(lambda *_: self.set_typed())
        self.use_file.changed.connect(lambda *_: self.use_file_value())
        self.square.changed.connect(self._on_square)
        self.size_y.changed.connect(self._on_square)
        self.layer.changed.connect(self._on_layer)
        self._on_layer()
        self._draw(None)

    # ------------------------------------------------------------------ showing the layer's values
    def _on_layer(self, *_) -> None:
        self._clear()
        layer = self.layer.value
        if self._watched is not None:
            try:
                self._watched.events.scale.disconnect(self._show_calibration)
            except (RuntimeError, ValueError, TypeError):
                pass
        self._watched = layer
        if layer is not None:
            layer.events.scale.connect(self._show_calibration)  # a scale set in the console shows here
            adopt_material(self.material, layer.metadata.get("material"))
        self._show_calibration()

    def _show_calibration(self, *_) -> None:
        """Fill the pixel size fields and lines from the layer."""
        layer = self.layer.value
        size = None if layer is None else layer_pixel_size(layer)
        self.current.value = "" if layer is None else f"Now: {calibration_note(layer)}."
        with self.size_y.changed.blocked(), self.size_x.changed.blocked(), self.square.changed.blocked():
            self.size_y.value = 0.0 if size is None else round(size[0], 4)
            self.size_x.value = 0.0 if size is None else round(size[1], 4)
            if size is not None:
                self.square.value = bool(np.isclose(size[0], size[1], rtol=1e-4))
        self.size_x.enabled = not self.square.value
        file = None if layer is None else file_pixel_size(layer)
        self.file_value.value = ("" if layer is None else "The file stores no pixel size." if file is None
                                 else f"File: {_size_text(file)}.")
        self.use_file.enabled = file is not None and (size is None or not np.allclose(file, size, rtol=1e-6))

    def _clear(self, *_) -> None:
        self._report = None
        self.result.value = self.lattice_value.value = ""
        self.adopt.enabled = False
        self._draw(None)

    def _on_square(self, *_) -> None:
        self.size_x.enabled = not self.square.value
        if self.square.value:
            with self.size_x.changed.blocked():
                self.size_x.value = self.size_y.value

    # ------------------------------------------------------------------ setting the pixel size
    def _set(self, size: tuple[float, float], source: str) -> bool:
        layer = self.layer.value
        if layer is None:
            self.say("Open or select an image first.")
            return False
        try:
            set_pixel_size(layer, size, source)
        except ValueError as err:
            self.say(f"Cannot set the pixel size ({err}).")
            return False
        _follow_image(self._viewer, layer)
        self._show_calibration()
        self._viewer.reset_view()
        return True

    def set_typed(self) -> bool:
        """Use the typed pixel size (y, x in Å; x = y for square pixels)."""
        y = float(self.size_y.value)
        x = y if self.square.value else float(self.size_x.value)
        if y <= 0 or x <= 0:
            self.say("Type the pixel size in Å per pixel first (it is 0: unknown).")
            return False
        if self._set((y, x), TYPED):
            self.say(f"Pixel size set to {_size_text((y, x))} (typed).")
            return True
        return False

    def use_file_value(self) -> bool:
        """Go back to the pixel size the file stores."""
        layer = self.layer.value
        file = None if layer is None else file_pixel_size(layer)
        if file is None:
            self.say("The file stores no pixel size.")
            return False
        if self._set(file, "file"):
            self.say(f"Pixel size set to the file's {_size_text(file)}.")
            return True
        return False

    # ------------------------------------------------------------------ the lattice
    def _on_measure(self, *_) -> CalibrationReport | None:
        """Measure the selected layer; the message goes to the dock and the status bar."""
        self._clear()
        layer = self.layer.value
        if layer is None:
            self.result.value = "Open or select an image first."
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        if data.ndim == 3:
            data = data[current_frame(self._viewer, layer)]
        data = np.asarray(data)
        try:
            report = check_calibration(data, self.material.value, layer_pixel_size(layer),
                                       tolerance=self.tolerance.value / 100)
        except (LatticeNotFoundError, ValueError) as err:
            self.result.value = f"Could not measure: {err}"
            return None
        self._report = report
        self.result.value = report.message
        self.lattice_value.value = f"Lattice: {_size_text(report.measured_pixel_size)}."
        size = layer_pixel_size(layer)
        self.adopt.enabled = size is None or not np.allclose(size, report.measured_pixel_size, rtol=1e-4)
        self._viewer.status = report.message
        self._draw(data, report)
        return report

    def _on_adopt(self, *_) -> None:
        """Set the selected layer's pixel size (y, x) to the one measured from the lattice, in Å."""
        report = self._report
        if report is None:
            return
        if self._set(report.measured_pixel_size, f"lattice of {report.material} (FFT)"):
            py, px = report.measured_pixel_size
            self.result.value = (f"Adopted {100 * py:.2f} x {100 * px:.2f} pm/px from the {report.material} "
                                 "lattice.")
            self.adopt.enabled = False

    def _draw(self, image: np.ndarray | None, report: CalibrationReport | None = None) -> None:
        """The log power spectrum near the lattice's spots, with the fitted spots ringed."""
        self.figure.clear()
        if image is None or report is None:
            self.canvas.draw_idle()
            return
        style, fg = plot_style(self.figure, self._viewer)
        power = power_spectrum(image)
        spots = lattice_spots(report.lattice, 2)
        n_y, n_x = power.shape
        reach = min(0.5, 1.25 * float(np.abs(spots[:, :2]).max())) if len(spots) else 0.5
        hy, hx = max(4, int(reach * n_y)), max(4, int(reach * n_x))
        crop = np.log10(power[n_y // 2 - hy:n_y // 2 + hy, n_x // 2 - hx:n_x // 2 + hx] + 1e-12)
        low, high = np.percentile(crop, [5, 99.8])
        extent = (-hx / n_x, hx / n_x, hy / n_y, -hy / n_y)
        with matplotlib.rc_context(style):
            ax = self.figure.add_subplot(1, 1, 1)
            ax.imshow(crop, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="nearest")
            for order, colour in _SPOT_COLOURS.items():
                at = spots[spots[:, 2] == order]
                ax.scatter(at[:, 1], at[:, 0], s=90, facecolors="none", edgecolors=colour, linewidths=1.2,
                           label=f"order {order}")
            ax.set(xlabel="k$_x$ (1/px)", ylabel="k$_y$ (1/px)",
                   title=f"{report.material}: {report.lattice.n_spots} spots fitted")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, borderaxespad=0.0)
        self.canvas.draw_idle()


def _size_text(size: tuple[float, float]) -> str:
    py, px = size
    return f"{py:.4f} Å/px" if np.isclose(py, px, rtol=1e-4) else f"{py:.4f} x {px:.4f} Å/px (y x)"


def _follow_image(viewer: Any, image: Any) -> None:
    """Layers made from ``image`` by the docks (columns, cells, maps, regions) take its new scale."""
    scale2, units2 = tuple(image.scale)[-2:], tuple(str(u) for u in image.units)[-2:]
    prefix = f"{image.name} "
    for layer in viewer.layers:
        meta = layer.metadata
        made_from = (meta.get("image_layer") or (meta.get("parameters") or {}).get("image_layer"))
        if layer is image or not (made_from == image.name or layer.name.startswith(prefix)):
            continue
        layer.scale = (*tuple(layer.scale)[:-2], *scale2)
        layer.units = (*tuple(str(u) for u in layer.units)[:-2], *units2)
        features = getattr(layer, "features", None)
        if features is not None and {"y", "x", "y_px", "x_px"} <= set(features.columns):
            features = features.copy()
            features["y"], features["x"] = features["y_px"] * scale2[0], features["x_px"] * scale2[1]
            layer.features = features


__all__ = ["TYPED", "CalibrationWidget"]
