"""Dock widget: check an Image layer's pixel size against its lattice, and adopt the measured one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton

from ..calibration import DEFAULT_TOLERANCE, CalibrationReport, LatticeNotFoundError, check_calibration
from ..materials import KNOWN_MATERIALS

if TYPE_CHECKING:
    import napari


class CalibrationWidget(Container):
    """Measure the lattice spacing in the FFT of the selected image and compare it with the file.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose Image layers are offered.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._report: CalibrationReport | None = None
        self.layer = ComboBox(label="image", choices=self._image_layers)
        self.material = ComboBox(label="material", choices=list(KNOWN_MATERIALS), value="MoS2")
        self.tolerance = FloatSpinBox(label="tolerance (%)", value=100 * DEFAULT_TOLERANCE, min=0.1, max=50, step=0.5)
        self.measure = PushButton(text="Measure lattice")
        self.result = Label(value="")
        self.adopt = PushButton(text="Adopt measured pixel size", enabled=False)
        self.extend([self.layer, self.material, self.tolerance, self.measure, self.result, self.adopt])
        self.measure.changed.connect(self._on_measure)
        self.adopt.changed.connect(self._on_adopt)
        self.layer.changed.connect(self._clear)
        viewer.layers.events.inserted.connect(self.layer.reset_choices)
        viewer.layers.events.removed.connect(self.layer.reset_choices)
        self.layer.reset_choices()

    def _image_layers(self, *_):
        from napari.layers import Image

        return [layer for layer in self._viewer.layers if isinstance(layer, Image) and not layer.rgb]

    def _clear(self, *_) -> None:
        self._report = None
        self.result.value = ""
        self.adopt.enabled = False

    def _on_measure(self, *_) -> CalibrationReport | None:
        """Measure the selected layer; the message goes to the dock label and the status bar."""
        self._clear()
        layer = self.layer.value
        if layer is None:
            self.result.value = "Open or select an image first."
            return None
        pixel = layer.metadata.get("pixel_size_A")
        if pixel is None and layer.metadata.get("calibrated", False):
            pixel = tuple(layer.scale[-2:])
        data = layer.data
        if data.ndim == 3:
            step = self._viewer.dims.current_step[0] if self._viewer.dims.ndim == 3 else 0
            data = data[min(step, data.shape[0] - 1)]
        try:
            report = check_calibration(data, self.material.value, pixel, tolerance=self.tolerance.value / 100)
        except (LatticeNotFoundError, ValueError) as err:
            self.result.value = f"Could not measure: {err}"
            return None
        self._report = report
        self.result.value = _wrap(report.message)
        self.adopt.enabled = not report.ok
        self._viewer.status = report.message
        return report

    def _on_adopt(self, *_) -> None:
        """Set the selected layer's scale (y, x) to the measured pixel size, in Å."""
        layer, report = self.layer.value, self._report
        if layer is None or report is None:
            return
        py, px = report.measured_pixel_size
        layer.scale = (*layer.scale[:-2], py, px)
        layer.units = (*layer.units[:-2], "angstrom", "angstrom")
        layer.metadata["pixel_size_A"] = (py, px)
        layer.metadata["calibrated"] = True
        layer.metadata["calibration_source"] = f"lattice of {report.material} (FFT)"
        layer.metadata["file_pixel_size_A"] = report.file_pixel_size
        self.result.value = _wrap(f"Adopted {100 * py:.2f} x {100 * px:.2f} pm/px from the {report.material} lattice.")
        self.adopt.enabled = False
        self._viewer.reset_view()


def _wrap(text: str, width: int = 48) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)
