"""The pixel size and microscope settings of an image layer, read and set in one consistent way.

Every dock and the statistics read an image's calibration through :func:`layer_pixel_size`,
and the calibration dock sets it through :func:`set_pixel_size`, so the layer's ``scale``
(what the viewer draws), ``units`` and ``metadata`` (``pixel_size_A``, ``calibrated``,
``calibration_source``, ``file_pixel_size_A``) never disagree. The layer's scale is the
truth: a scale set from the console or by another plugin counts (in its length unit, or
in Å when the layer has no length unit) and the metadata follow it.

Works on any object with napari's ``scale``, ``units`` and ``metadata`` attributes (no
napari or Qt import).

Examples
--------
>>> from types import SimpleNamespace
>>> layer = SimpleNamespace(scale=(1.0, 1.0), units=("pixel", "pixel"), metadata={})
>>> layer_pixel_size(layer) is None
True
>>> set_pixel_size(layer, (0.12, 0.125), "typed")
>>> layer.scale, layer.units, layer.metadata["calibrated"]
((0.12, 0.125), ('angstrom', 'angstrom'), True)
>>> calibration_note(layer)
'pixel size 0.1200 x 0.1250 Å/px (typed)'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .io.units import angstrom_per_unit

#: ``calibration_source`` of a pixel size read from the image file.
FROM_FILE = "file"
#: ``calibration_source`` of a scale found on the layer that nobody set through the plugin.
FROM_SCALE = "layer scale"
#: What the statistics say without a calibration.
UNCALIBRATED_NOTE = "uncalibrated (set the pixel size in 'Check pixel calibration')"
#: Microscope settings kept in the layer metadata, with their units.
MICROSCOPE_KEYS: dict[str, str] = {
    "beam_energy_keV": "keV",
    "collection_angles_mrad": "mrad (inner, outer)",
    "convergence_angle_mrad": "mrad",
}


def _last_two(values: Any, fill: Any) -> tuple:
    vals = list(np.ravel(np.asarray(values, dtype=object))) if values is not None else []
    return tuple(([fill, fill] + vals)[-2:])


def _scale_pixel_size(layer: Any) -> tuple[float, float] | None:
    """Å per pixel from the layer's scale and units (None for scale 1 without a length unit)."""
    sy, sx = (float(s) for s in _last_two(layer.scale, 1.0))
    uy, ux = (str(u) for u in _last_two(getattr(layer, "units", None), "pixel"))
    fy, fx = angstrom_per_unit(uy), angstrom_per_unit(ux)
    if fy is not None and fx is not None:
        return sy * fy, sx * fx
    if not np.allclose((sy, sx), 1.0):
        return sy, sx  # a scale without a length unit is taken as Å (the plugin's convention)
    return None


def layer_pixel_size(layer: Any, sync: bool = True) -> tuple[float, float] | None:
    """Å per pixel (y, x) of an image layer, or None when it is not calibrated.

    Parameters
    ----------
    layer : napari.layers.Layer
        The image (or any layer with ``scale``, ``units`` and ``metadata``).
    sync : bool
        Bring the metadata in line with the scale (see :func:`sync_metadata`).
    """
    if layer is None:
        return None
    size = _scale_pixel_size(layer)
    meta = layer.metadata
    if size is None and meta.get("calibrated") and meta.get("pixel_size_A") is not None:
        size = tuple(float(v) for v in _last_two(meta["pixel_size_A"], meta["pixel_size_A"]))
    if sync and size is not None:
        sync_metadata(layer, size)
    return None if size is None else (float(size[0]), float(size[1]))


def sync_metadata(layer: Any, size: tuple[float, float]) -> None:
    """Record ``size`` (Å per pixel, from the scale) in the metadata when they differ.

    The first calibration the layer had is kept as ``file_pixel_size_A``; a scale set
    outside the plugin gets ``calibration_source`` 'layer scale'.
    """
    meta = layer.metadata
    _remember_file_value(meta)
    old = meta.get("pixel_size_A")
    same = old is not None and np.allclose(_last_two(old, old), size, rtol=1e-6)
    if same and meta.get("calibrated"):
        return
    meta["pixel_size_A"] = (float(size[0]), float(size[1]))
    meta["calibrated"] = True
    if not same:
        meta["calibration_source"] = FROM_SCALE


def _remember_file_value(meta: dict) -> None:
    if "file_pixel_size_A" not in meta:
        value = meta.get("pixel_size_A") if meta.get("calibrated", meta.get("pixel_size_A") is not None) else None
        meta["file_pixel_size_A"] = None if value is None else tuple(float(v) for v in _last_two(value, value))


def file_pixel_size(layer: Any) -> tuple[float, float] | None:
    """The pixel size (y, x) in Å the image file stored, None when it stored none."""
    _remember_file_value(layer.metadata)
    value = layer.metadata.get("file_pixel_size_A")
    return None if value is None else (float(value[0]), float(value[1]))


def calibration_source(layer: Any) -> str:
    """Where the layer's pixel size came from ('file', 'lattice of MoS2 (FFT)', 'typed', ...)."""
    if layer_pixel_size(layer) is None:
        return ""
    return str(layer.metadata.get("calibration_source") or FROM_FILE)


def set_pixel_size(layer: Any, pixel_size: float | Sequence[float], source: str) -> None:
    """Calibrate an image layer: scale and units of its last two axes, and its metadata.

    Parameters
    ----------
    layer : napari.layers.Layer
    pixel_size : float or (float, float)
        Å per pixel, one value or (y, x).
    source : str
        Where it came from, kept as ``metadata["calibration_source"]``.

    Raises
    ------
    ValueError
        A pixel size that is not a positive finite number.
    """
    py, px = (float(v) for v in _last_two(pixel_size, pixel_size))
    if not (np.isfinite(py) and np.isfinite(px) and py > 0 and px > 0):
        raise ValueError(f"a pixel size must be a positive number of Å, not {pixel_size!r}")
    _remember_file_value(layer.metadata)
    scale, units = list(layer.scale), [str(u) for u in layer.units]
    layer.scale = (*scale[:-2], py, px)
    layer.units = (*units[:-2], "angstrom", "angstrom")
    layer.metadata["pixel_size_A"] = (py, px)
    layer.metadata["calibrated"] = True
    layer.metadata["calibration_source"] = str(source)


def calibration_note(layer: Any) -> str:
    """What a statistic says about the calibration it used, in a few words."""
    size = layer_pixel_size(layer)
    if size is None:
        return UNCALIBRATED_NOTE
    value = f"{size[0]:.4f}" if np.isclose(size[0], size[1], rtol=1e-4) else f"{size[0]:.4f} x {size[1]:.4f}"
    return f"pixel size {value} Å/px ({calibration_source(layer)})"


def microscope_settings(layer: Any) -> dict[str, Any]:
    """Beam energy (keV), detector collection angles (inner, outer mrad) and convergence angle (mrad).

    Absent values are None.
    """
    meta = layer.metadata
    return {key: meta.get(key) for key in MICROSCOPE_KEYS}


def set_microscope_settings(layer: Any, **settings: Any) -> None:
    """Store microscope settings (keys of :data:`MICROSCOPE_KEYS`; None or 0 forgets a value).

    Raises
    ------
    KeyError
        An unknown setting.
    ValueError
        Negative values, or collection angles whose inner exceeds the outer.
    """
    for key, value in settings.items():
        if key not in MICROSCOPE_KEYS:
            raise KeyError(f"unknown microscope setting {key!r}; known: {', '.join(MICROSCOPE_KEYS)}")
        if value is None or (np.ndim(value) == 0 and float(value) == 0):
            layer.metadata[key] = None
            continue
        values = tuple(float(v) for v in np.ravel(value))
        if any(v < 0 or not np.isfinite(v) for v in values):
            raise ValueError(f"{key} must be positive, not {value!r}")
        if key == "collection_angles_mrad":
            if len(values) != 2 or values[0] >= values[1]:
                raise ValueError(f"collection angles are (inner, outer) with inner < outer, not {value!r}")
            layer.metadata[key] = values
        else:
            layer.metadata[key] = values[0]


__all__ = [
    "FROM_FILE", "FROM_SCALE", "MICROSCOPE_KEYS", "UNCALIBRATED_NOTE", "calibration_note", "calibration_source",
    "file_pixel_size", "layer_pixel_size", "microscope_settings", "set_microscope_settings", "set_pixel_size",
    "sync_metadata",
]
