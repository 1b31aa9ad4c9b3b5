"""Parts several docks build the same way: the Microscope row, CSV export of a result table, and a
Shapes layer of results replaced in place.

The image / material / run rows and the result labels are in :mod:`._dock`; the model row is
:class:`._model_choice.ModelChoice`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import FloatSpinBox

from ..layer_calibration import microscope_settings, set_microscope_settings
from ..simulate.microscope import ENERGY_RANGE_KV, MAX_DETECTOR_MRAD, MicroscopeSettings, typed_settings
from ._dock import Section

if TYPE_CHECKING:
    import pandas as pd

#: What an empty microscope field shows.
NOT_GIVEN = "not given"
#: Convergence and detector angles (mrad) the settings take when only the beam energy is typed
#: (those of ``analyze --kv``).
DEFAULT_CONVERGENCE_MRAD, DEFAULT_DETECTOR_MRAD = 30.0, (70.0, 200.0)
#: Layer metadata key set when a person typed microscope settings in the row (not only the file's).
TYPED_KEY = "microscope_typed"


class MicroscopeRow(Section):
    """Beam energy, detector angles and convergence of the selected image: each optional (empty by default).

    The fields show the image layer's microscope settings (from its file, or typed here or in
    another dock) and a typed value is kept in the layer's metadata
    (:func:`~napari_stem_defects.layer_calibration.set_microscope_settings`), so every dock that
    shows the row agrees. :meth:`settings` gives the
    :class:`~napari_stem_defects.simulate.microscope.MicroscopeSettings` an algorithm takes.

    Parameters
    ----------
    layer : magicgui ComboBox, optional
        The dock's image dropdown: the row follows it (shows and stores the chosen layer's settings).
    say : callable, optional
        Shows a message (a refused value) in the dock.
    stored : callable, optional
        Called after a typed value was kept in the layer's metadata.
    kv_max, angle_max : float
        Largest values the fields take (the calibration dock stores any file's values).
    expanded : bool
        The section is open at first.
    tooltip : str
        The section header's tooltip.
    """

    def __init__(self, layer: Any = None, say: Callable[[str], None] | None = None, *,
                 kv_max: float = ENERGY_RANGE_KV[1], angle_max: float = MAX_DETECTOR_MRAD, expanded: bool = False,
                 stored: Callable[[], None] | None = None, tooltip: str = "") -> None:
        lo, hi = ENERGY_RANGE_KV
        self.kv = FloatSpinBox(label="beam energy (kV)", value=0.0, min=0.0, max=kv_max, step=10.0,
                               tooltip=f"accelerating voltage in kV ({lo:g}-{hi:g} kV for the multislice table; "
                                       "read from the file when it stores it); empty = not given")
        self.inner = FloatSpinBox(label="detector inner (mrad)", value=0.0, min=0.0, max=angle_max, step=1.0,
                                  tooltip="inner collection semi-angle of the HAADF detector in mrad; empty = not "
                                          f"given ({DEFAULT_DETECTOR_MRAD[0]:g} with a typed beam energy)")
        self.outer = FloatSpinBox(label="detector outer (mrad)", value=0.0, min=0.0, max=angle_max, step=1.0,
                                  tooltip="outer collection semi-angle of the HAADF detector in mrad; empty = not "
                                          f"given ({DEFAULT_DETECTOR_MRAD[1]:g} with a typed beam energy)")
        self.convergence = FloatSpinBox(label="convergence (mrad)", value=0.0, min=0.0, max=200.0, step=0.5,
                                        tooltip="probe convergence semi-angle in mrad; empty = not given "
                                                f"({DEFAULT_CONVERGENCE_MRAD:g} with a typed beam energy)")
        for spin in self.fields:
            spin.native.setSpecialValueText(NOT_GIVEN)  # shown at 0: the field is empty
        super().__init__("Microscope", self.fields, expanded=expanded, tooltip=tooltip or (
            "beam energy, detector and convergence angles of the image (kept in its layer's metadata); with a "
            "beam energy, which sublattice holds the metals follows the multislice-calibrated table instead "
            "of Z^1.7"))
        self._layer, self._say, self._stored = layer, say, stored
        if layer is not None:
            layer.changed.connect(lambda *_: self.show_layer())
            for spin in self.fields:
                spin.changed.connect(lambda *_: self.store())
            self.show_layer()

    @property
    def fields(self) -> tuple[FloatSpinBox, ...]:
        """The four fields: beam energy, detector inner and outer, convergence."""
        return (self.kv, self.inner, self.outer, self.convergence)

    def show_layer(self, layer: Any = None) -> None:
        """Show the settings ``layer`` (default: the chosen image) records; empty fields where it gives none."""
        layer = layer if layer is not None else getattr(self._layer, "value", None)
        settings = {} if layer is None else microscope_settings(layer)
        if layer is not None and settings.get("convergence_angle_mrad") is None:
            settings["convergence_angle_mrad"] = layer.metadata.get("convergence_mrad")  # a reader's name for it
        angles = settings.get("collection_angles_mrad") or (0.0, 0.0)
        values = {self.kv: settings.get("beam_energy_keV"), self.inner: angles[0], self.outer: angles[1],
                  self.convergence: settings.get("convergence_angle_mrad")}
        for spin, value in values.items():
            with spin.changed.blocked():
                spin.value = float(value or 0.0)

    def store(self, layer: Any = None) -> bool:
        """Keep the typed settings in ``layer``'s metadata (default: the chosen image); False (said) when refused."""
        layer = layer if layer is not None else getattr(self._layer, "value", None)
        if layer is None:
            return False
        inner, outer = float(self.inner.value), float(self.outer.value)
        try:
            set_microscope_settings(layer, beam_energy_keV=float(self.kv.value) or None,
                                    collection_angles_mrad=(inner, outer) if outer > 0 else None,
                                    convergence_angle_mrad=float(self.convergence.value) or None)
        except ValueError as err:
            if self._say is not None:
                self._say(f"Microscope settings not stored ({err}).")
            return False
        layer.metadata[TYPED_KEY] = True
        if self._stored is not None:
            self._stored()
        return True

    def settings(self) -> tuple[MicroscopeSettings | None, str]:
        """The typed settings (a real, vibrating lattice, as ``analyze --kv``), and why none when refused.

        Returns
        -------
        settings : MicroscopeSettings or None
            None without a beam energy, when the values are outside the multislice table, or when the
            beam energy is the file's and no detector angles are known (not guessed, as ``analyze``
            does not guess them; :meth:`energy_kV` still gives it to the column classifier).
        note : str
            "" when the settings were taken or none were given; otherwise why they are not used.

        Examples
        --------
        >>> row = MicroscopeRow()
        >>> row.kv.value, row.inner.value, row.outer.value = 60.0, 50.0, 200.0
        >>> row.settings()[0].describe()
        '60 kV, 30 mrad, ADF 50-200 mrad, 8 frozen phonons (0.07 Å)'
        >>> row.kv.value = 40.0
        >>> row.settings()
        (None, 'microscope settings not used: beam energy 40 kV is outside 60-300 kV')
        """
        kv = float(self.kv.value)
        if kv <= 0:
            return None, ""
        layer = getattr(self._layer, "value", None)
        if layer is not None and not layer.metadata.get(TYPED_KEY) and not (self.inner.value or self.outer.value):
            # the file's beam energy without its detector: not guessed, as `analyze` does not guess it
            return None, (f"the file records {kv:g} kV but not its detector angles, which decide how bright an "
                          "X2 column is against a metal: the column classifier is told the beam energy, and the "
                          "multislice table is not used; type the detector angles (or the beam energy) to use it")
        detector = (float(self.inner.value) or DEFAULT_DETECTOR_MRAD[0],
                    float(self.outer.value) or DEFAULT_DETECTOR_MRAD[1])
        try:
            return typed_settings(kv, float(self.convergence.value) or DEFAULT_CONVERGENCE_MRAD, detector), ""
        except ValueError as err:
            return None, f"microscope settings not used: {err}"

    def energy_kV(self) -> float | None:
        """The beam energy in the row (typed or the file's), or None when empty."""
        return float(self.kv.value) or None


class CsvExport:
    """The "Export ... CSV" button of a dock (a :class:`~._dock.StemDock`).

    The dock gives ``_csv_export()``: the table of its last run, the default file name and the
    message once written (``{path}`` in it is the file), or why there is nothing to export; and
    ``_ask_csv_path(default)``: the file dialog ("" when cancelled).
    """

    def export_csv(self, path: str | None = None) -> Path | None:
        """Write the table of the last run to a CSV file (atomically, without the index).

        Parameters
        ----------
        path : str, optional
            Target file; asked with a file dialog when not given.

        Returns
        -------
        Path or None
            The file written; None when nothing was written (the reason is shown).
        """
        export = self._csv_export()
        if isinstance(export, str):
            self.say(export)
            return None
        table, default, done = export
        if path is None:
            path = self._ask_csv_path(default)
        if not path:
            return None
        written = write_csv(table, path, self.say)
        if written is not None:
            self.say(done.format(path=path))
        return written


def ask_csv_path(parent: Any, title: str, default: str) -> str:
    """Ask for a CSV file to write ("" when cancelled)."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, title, default, "CSV files (*.csv)")
    return str(path or "")


def write_csv(table: pd.DataFrame, path: str | Path, say: Callable[[str], None]) -> Path | None:
    """Write ``table`` to ``path`` as CSV (atomically, without the index); None when it failed (said)."""
    from ..io.atomic import atomic_write

    try:
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    except OSError as err:
        say(f"Cannot write {path} ({err}).")
        return None
    return Path(path)


def put_shapes(viewer: Any, data: Any, kwargs: dict[str, Any]) -> Any:
    """Show result shapes in the layer ``kwargs['name']``: replaced in place when it is a 2D Shapes layer
    (it keeps its place, visibility and colour map), added otherwise.

    ``kwargs`` are ``add_shapes`` keywords (``edge_width``, ``edge_color``, ``face_color``, ``features``,
    ``scale``, ``units``, ``translate``, ``metadata`` and optionally ``shape_type`` and ``text``; a
    ``text`` of None means no labels).
    """
    from napari.layers import Shapes

    name = kwargs["name"]
    existing = viewer.layers[name] if name in viewer.layers else None
    if isinstance(existing, Shapes) and existing.ndim == 2:
        no_text = {"string": {"constant": ""}}
        existing.selected_data = set()
        if "text" in kwargs:
            existing.text = no_text  # the labels follow the features, which are set after the shapes
        existing.data = []
        if len(data):
            width = kwargs["edge_width"]
            existing.add(list(data), shape_type=kwargs.get("shape_type", "polygon"),
                         edge_width=width if np.ndim(width) == 0 else list(width),
                         edge_color=kwargs["edge_color"], face_color=kwargs["face_color"])
        existing.features = kwargs["features"]
        if "text" in kwargs:
            existing.text = kwargs["text"] if kwargs["text"] is not None else no_text
        for attr in ("scale", "units", "translate"):
            setattr(existing, attr, kwargs[attr])
        existing.metadata.update(kwargs["metadata"])
        existing.refresh()
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    if "text" in kwargs and kwargs["text"] is None:
        kwargs = {k: v for k, v in kwargs.items() if k != "text"}
    return viewer.add_shapes(list(data), **kwargs)


__all__ = ["CsvExport", "MicroscopeRow", "ask_csv_path", "put_shapes", "write_csv"]
