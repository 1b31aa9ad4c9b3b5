"""One rsciio signal dict to a calibrated :class:`StemImage`.

This module chains the layout checks (:mod:`.signal_layout`), converts the
pixel size of each image axis to Å with that axis' own unit (:mod:`.units`),
collects the metadata later stages need (:mod:`.metadata`) and names the
images of a file. It imports neither napari, Qt nor a parser.

Decisions
---------
* **Calibration.** The pixel size (y, x) comes from the two signal axes,
  each converted with its own unit (:mod:`.units`). Axes without a length
  unit (``None``, ``""``, ``"pixel"``, unknown strings) give
  ``pixel_size=None``, with a ``calibration_note`` in the metadata when the
  axes carry a scale other than 1 or a non-length unit. When rsciio leaves the unit of a
  TIFF axis empty but the ImageJ header names one (``unit=nm``,
  ``unit=micron``), that unit is used with rsciio's scale. A negative scale
  (a flipped axis) counts by its absolute value.
* **Implausible calibrations** (outside 0.1 pm to 10 µm per pixel, or y and
  x sizes more than 20 % apart) are kept but warned about, and the warning
  is stored as ``calibration_warning`` (:mod:`.calibration_checks`).
* **Data** keep their dtype (no rescaling); they are copied into memory in
  native byte order so no file stays open. Data read lazily (dask arrays)
  are loaded only after their size is checked against the memory budget
  (:func:`.limits.check_signal_sizes`).
* **Names.** An image is named after the file stem; when a file holds
  several images, each name adds the signal title (or index), made unique.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .calibration_checks import calibration_warning
from .limits import check_signal_sizes
from .metadata import (
    as_float,
    beam_energy_keV,
    collection_angles_mrad,
    detector,
    frame_interval_s,
    imagej_header,
    merged_metadata,
    plain_dict,
    signal_title,
)
from .signal_layout import (
    axes_for,
    check_values,
    drop_unit_navigation,
    image_layout,
    structured_rgb_to_gray,
)
from .stem_image import StemImage, StemReadError
from .units import to_angstrom, unit_kind

__all__ = ["in_memory", "name_images", "signal_to_image"]


# --------------------------------------------------------------------------- one signal


def signal_to_image(signal: Mapping[str, Any], path: Path, *, reader: str,
                    label: str, lazy: bool = False) -> StemImage:
    """Check one rsciio signal dict and turn it into a :class:`StemImage`.

    Parameters
    ----------
    signal : Mapping
        One signal as rsciio (or the numpy/imageio readers) returns it:
        ``data``, ``axes``, ``metadata``, ``original_metadata``, ``mapping``.
    path : Path
        The file it was read from (name, stem and source path).
    reader : str
        The reader module (``"rsciio.tiff"`` enables the ImageJ unit fallback).
    label : str
        The readable format name, stored as ``file_format``.
    lazy : bool
        Keep a stack's data as the reader gave it (a dask array, read frame by
        frame when used) and skip the scan of all values for NaN; a 2D image is
        read into memory either way.

    Returns
    -------
    StemImage
        Data (y, x) or (t, y, x) in native byte order, pixel size in Å or
        None, and the metadata of :class:`StemImage`.

    Raises
    ------
    StemReadError
        The signal is not a real-space image (see :mod:`.signal_layout`).
    """
    metadata = merged_metadata(signal)
    title = signal_title(metadata)
    what = f"{path.name}" + (f" (signal '{title}')" if title else "")
    original = plain_dict(signal.get("original_metadata") or {})

    data = signal["data"]
    # a lazy stack stays in its file (read frame by frame when used, each frame within the budget)
    keep_lazy = lazy and np.ndim(data) >= 3 and hasattr(data, "shape") and hasattr(data, "dtype")
    if not keep_lazy:
        data = _loaded(signal, path, label)
    if getattr(data, "dtype", None) is not None and data.dtype.names:
        data = structured_rgb_to_gray(in_memory(data), what)
        keep_lazy = False
    if not keep_lazy:
        data = in_memory(data)
    axes = axes_for(data, list(signal.get("axes") or []))
    data, axes = drop_unit_navigation(data, axes)
    check_values(data, what, scan=not keep_lazy)
    data, nav, sig = image_layout(data, axes, what)
    if keep_lazy and data.ndim == 2:  # a stack of one frame: read it now
        data, keep_lazy = in_memory(data), False

    ax_y, ax_x = sig
    pixel_size, note = _pixel_size(ax_y, ax_x, original, reader, what)
    info: dict[str, Any] = {
        "pixel_size_A": pixel_size,
        "calibrated": pixel_size is not None,
        "beam_energy_keV": beam_energy_keV(metadata, original),
        "detector": detector(metadata, original),
        "collection_angles_mrad": collection_angles_mrad(original),
        "frame_interval_s": frame_interval_s(nav, original) if data.ndim == 3 else None,
        "source_path": str(path.resolve()),
        "signal_title": title,
        "original_metadata": original,
        "file_format": label,
    }
    if note:
        info["calibration_note"] = note
    implausible = calibration_warning(pixel_size, what)
    if implausible:
        info["calibration_warning"] = implausible
        warnings.warn(implausible, UserWarning, stacklevel=3)
    data = data if keep_lazy else _native(data)
    return StemImage(data=data, pixel_size=pixel_size, name=path.stem, metadata=info)


def in_memory(data: Any) -> np.ndarray:
    """A numpy array of ``data``; a lazy (dask) array is read here, in this thread, never through a
    dask.distributed cluster the caller may be running on."""
    if hasattr(data, "compute") and not isinstance(data, np.ndarray):
        data = data.compute(scheduler="synchronous")
    return np.asarray(data)


def _loaded(signal: Mapping[str, Any], path: Path, label: str) -> Any:
    """The signal's data in memory: a lazy (dask) array is loaded once its size is checked."""
    data = signal["data"]
    if isinstance(data, np.ndarray) or not hasattr(data, "compute"):
        return data
    check_signal_sizes([signal], path, label)
    try:
        return in_memory(data)
    except MemoryError as exc:
        raise StemReadError(f"Could not read {path.name} (format: {label}): not enough memory for its data "
                            f"({exc}).") from None
    except Exception as exc:  # noqa: BLE001 - damaged data blocks: a read error, not a crash
        raise StemReadError(f"Could not read {path.name} (format: {label}): its data blocks are damaged "
                            f"({type(exc).__name__}: {exc}). Check the copy, or export the image again.") from None


# --------------------------------------------------------------------------- calibration


def _pixel_size(ax_y: Mapping[str, Any], ax_x: Mapping[str, Any], original: Mapping[str, Any],
                reader: str, what: str) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel size (y, x) in Å from each axis with its own unit, and a note when uncalibrated."""
    units = [ax_y.get("units"), ax_x.get("units")]
    if reader == "rsciio.tiff" and all(unit_kind(u) == "none" for u in units):
        imagej = imagej_header(original)
        units = [imagej.get("yunit", imagej.get("unit")), imagej.get("unit")]
        if all(unit_kind(u) == "length" for u in units):
            if float(ax_y.get("scale", 1.0)) == 1.0 and float(ax_x.get("scale", 1.0)) == 1.0 \
                    and "XResolution" not in original:
                return None, None
    sizes = [_axis_to_angstrom(ax, unit) for ax, unit in zip((ax_y, ax_x), units)]
    if sizes[0] is not None and sizes[1] is not None:
        return (sizes[0], sizes[1]), None
    kinds = [unit_kind(u) for u in units]
    if all(k == "none" for k in kinds):
        scales = [as_float(ax.get("scale", 1.0)) for ax in (ax_y, ax_x)]
        if any(v is not None and v != 1.0 for v in scales):
            return None, (f"{what}: axis scales {scales[0]:g}, {scales[1]:g} per pixel come "
                          "without a unit; opened in pixels.")
        return None, None
    return None, (f"{what}: axis units {units[0]!r}, {units[1]!r} are not a real-space length "
                  "calibration; opened in pixels.")


def _axis_to_angstrom(axis: Mapping[str, Any], unit: str | None) -> float | None:
    """One axis' scale in Å, or None (no length unit, or a zero/non-finite scale).

    A negative scale (a flipped axis) gives its absolute value.
    """
    try:
        scale = float(axis.get("scale", 1.0))
    except (TypeError, ValueError):
        return None
    if not math.isfinite(scale) or scale == 0:
        return None
    return to_angstrom(abs(scale), unit)


# --------------------------------------------------------------------------- output


def _native(data: np.ndarray) -> np.ndarray:
    """An in-memory, C-contiguous array in native byte order (no file handle kept)."""
    if not data.dtype.isnative:
        return np.ascontiguousarray(data.astype(data.dtype.newbyteorder("=")))
    if isinstance(data, np.memmap) or not data.flags.c_contiguous or data.base is not None:
        return np.array(data, copy=True, order="C")
    return data


def name_images(images: list[StemImage], path: Path) -> None:
    """File stem, plus the signal title (or index) when a file holds several images.

    Parameters
    ----------
    images : list of StemImage
        The images of one file, named in place.
    path : Path
        The file they were read from.
    """
    if len(images) < 2:
        return
    labels = [img.metadata.get("signal_title") or f"signal {i}" for i, img in enumerate(images)]
    for i, (img, label) in enumerate(zip(images, labels)):
        if labels.count(label) > 1:
            label = f"{label} {i}"
        img.name = f"{path.stem} [{label}]"
