"""Read STEM image files into calibrated :class:`StemImage` objects.

All format parsing is done by RosettaSciIO (``rsciio``), numpy (``.npy``)
and imageio (``.png``, ``.jpg``); this module only chooses the reader by
extension, checks that what comes back is a real-space image, converts the
pixel size of each axis to Å with that axis' own unit, and collects the
metadata later stages need. It imports neither napari nor Qt.

Decisions
---------
* **Calibration.** The pixel size (y, x) comes from the two signal axes,
  each converted with its own unit (:mod:`.units`). Axes without a length
  unit (``None``, ``""``, ``"pixel"``, unknown strings) give
  ``pixel_size=None``. When rsciio leaves the unit of a TIFF axis empty but
  the ImageJ header names one (``unit=nm``, ``unit=micron``), that unit is
  used with rsciio's scale.
* **Diffraction patterns** (signal axes in reciprocal length, e.g.
  ``1/nm``, or in angle, e.g. ``mrad``) are refused with a
  :class:`StemReadError`: the plugin finds atom columns in real space.
* **Spectra, spectrum images, 4D-STEM** and data of more dimensions are
  refused with a :class:`StemReadError` saying what the file holds. In a
  file with several signals (Velox EMD with HAADF, DF and EDS), the image
  signals are returned and the others skipped with a warning; the error is
  raised only when no signal is an image.
* **RGB(A) images.** Alpha is ignored. If R = G = B, the R channel is the
  grayscale image (exact, no rescaling). For JPEG, whose decoding can leave
  channels of a gray image a level or two apart, channels within 2 levels
  are averaged (rounded, same dtype). Any other colour image is refused.
* **Unknown extensions** raise :class:`UnsupportedFormatError` (a subclass
  of :class:`StemReadError`). A missing file raises ``FileNotFoundError``.
* **Parser failures** (corrupt or truncated files, missing ``.ser`` next to
  an ``.emi``) become a :class:`StemReadError` naming the file and format.
* **Data** keep their dtype (no rescaling); they are copied into memory in
  native byte order so no file stays open.
* **Axis order.** Data come out as (y, x) or (t, y, x). When rsciio names
  the two signal axes ``X`` then ``Y`` in array order (its NCEM EMD reader
  transposes the stored array), they are swapped back so rows are Y, as the
  file's own ``dim1 = Y`` label says.
"""

from __future__ import annotations

import codecs
import importlib
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .stem_image import StemImage, StemReadError
from .units import to_angstrom, unit_kind

__all__ = ["SUPPORTED_EXTENSIONS", "UnsupportedFormatError", "is_supported", "read_stem_file"]


class UnsupportedFormatError(StemReadError):
    """The file extension is not one this reader handles."""


@dataclass(frozen=True)
class _Format:
    """How to read one extension: rsciio module (or other) and a readable name."""

    reader: str
    label: str


#: Extension (lowercase, with dot) -> reader. ``numpy`` and ``imageio`` are not rsciio.
_FORMATS: dict[str, _Format] = {
    ".dm3": _Format("rsciio.digitalmicrograph", "Gatan DigitalMicrograph (DM3)"),
    ".dm4": _Format("rsciio.digitalmicrograph", "Gatan DigitalMicrograph (DM4)"),
    ".emd": _Format("rsciio.emd", "EMD (Velox or NCEM)"),
    ".ser": _Format("rsciio.tia", "FEI TIA (SER)"),
    ".emi": _Format("rsciio.tia", "FEI TIA (EMI)"),
    ".mrc": _Format("rsciio.mrc", "MRC"),
    ".tif": _Format("rsciio.tiff", "TIFF"),
    ".tiff": _Format("rsciio.tiff", "TIFF"),
    ".hspy": _Format("rsciio.hspy", "HyperSpy HDF5 (hspy)"),
    ".npy": _Format("numpy", "NumPy array (npy)"),
    ".png": _Format("imageio", "PNG"),
    ".jpg": _Format("imageio", "JPEG"),
    ".jpeg": _Format("imageio", "JPEG"),
}

#: Extensions :func:`read_stem_file` handles (lowercase, with the dot).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_FORMATS)

#: Gray levels two JPEG channels may differ by and still count as gray.
_JPEG_GRAY_TOLERANCE = 2

_SECONDS_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3,
                "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}


# --------------------------------------------------------------------------- public


def read_stem_file(path: str | Path) -> list[StemImage]:
    """Read every real-space image in a microscopy file.

    Parameters
    ----------
    path : str or Path
        A ``.dm3``, ``.dm4``, ``.emd``, ``.ser``, ``.emi``, ``.mrc``,
        ``.tif``/``.tiff``, ``.hspy``, ``.npy``, ``.png`` or ``.jpg``/``.jpeg``
        file. For a TIA pair, either the ``.emi`` or the ``_1.ser`` works.

    Returns
    -------
    list of StemImage
        One per image signal in the file (a Velox EMD may hold several
        detectors), each 2D (y, x) or a (t, y, x) stack, with ``pixel_size``
        in Å or None when the file holds no real-space calibration.

    Raises
    ------
    UnsupportedFormatError
        The extension is not handled.
    FileNotFoundError
        ``path`` does not exist.
    StemReadError
        The file is corrupt, or holds no image (a spectrum, spectrum image,
        4D-STEM data, a diffraction pattern, a colour picture, no finite
        values). The message says what it holds and what to do.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    signals = _read_signals(path, fmt)
    images: list[StemImage] = []
    refused: list[str] = []
    for signal in signals:
        try:
            images.append(_signal_to_image(signal, path, fmt))
        except StemReadError as exc:
            refused.append(str(exc))
    if not images:
        if not refused:
            hint = (f" A TIA .emi holds only metadata: keep its data file '{path.stem}_1.ser' "
                    "next to it, or open the .ser." if path.suffix.lower() == ".emi" else "")
            raise StemReadError(f"{path.name} (format: {fmt.label}) holds no data.{hint}")
        raise StemReadError(" ".join(dict.fromkeys(refused)))
    if refused:
        warnings.warn(f"{path.name}: skipped {len(refused)} signal(s) that are not images: "
                      + " ".join(refused), stacklevel=2)
    _name_images(images, path)
    return images


def is_supported(path: str | Path) -> bool:
    """True when ``path`` has an extension :func:`read_stem_file` handles.

    Parameters
    ----------
    path : str or Path
        Any path; the file need not exist.

    Returns
    -------
    bool
    """
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


# --------------------------------------------------------------------------- reading


def _format_of(path: Path) -> _Format:
    """The reader for ``path``'s extension, or :class:`UnsupportedFormatError`."""
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise UnsupportedFormatError(
            f"{path.name}: the extension '{path.suffix}' is not a format this plugin reads "
            f"(it reads {known})."
        ) from None


def _read_signals(path: Path, fmt: _Format) -> list[dict[str, Any]]:
    """Run the parser; any parser exception becomes a :class:`StemReadError`."""
    try:
        if fmt.reader == "numpy":
            return [_read_numpy(path)]
        if fmt.reader == "imageio":
            return [_read_picture(path)]
        module = importlib.import_module(fmt.reader)
        if fmt.reader == "rsciio.emd":
            return _read_emd(module, path)
        if path.suffix.lower() == ".ser":
            return _read_ser(module, path)
        return list(module.file_reader(str(path)))
    except StemReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is a user-facing read error
        hint = ""
        if fmt.reader == "rsciio.tia":
            hint = (" A TIA .emi needs its '_1.ser' data file in the same folder, and a .ser"
                    " its .emi; keep both with their original names.")
        raise StemReadError(
            f"Could not read {path.name} (format: {fmt.label}): the file looks corrupt or "
            f"truncated, or is not in that format ({type(exc).__name__}: {exc}).{hint} Check "
            "the copy, or export the image again from the acquisition software."
        ) from exc


def _read_emd(module: Any, path: Path) -> list[dict[str, Any]]:
    """Read an EMD file, images only first (Velox spectrum images are slow and need ``sparse``)."""
    signals = list(module.file_reader(str(path), select_type="images"))
    if signals:
        return signals
    try:  # no image: read everything to say what the file does hold
        return list(module.file_reader(str(path)))
    except Exception as exc:  # noqa: BLE001
        raise StemReadError(
            f"{path.name}: the EMD file holds no image signal (only spectra or spectrum images, "
            f"which could not be described: {type(exc).__name__}: {exc}). Export the HAADF "
            "image from Velox or open the file in HyperSpy."
        ) from exc


def _read_ser(module: Any, path: Path) -> list[dict[str, Any]]:
    """Read a TIA ``name_1.ser`` through its ``name.emi`` when present (it holds the metadata)."""
    match = re.fullmatch(r"(.+)_\d+", path.stem)
    emi = path.with_name(match.group(1) + ".emi") if match else None
    if emi is not None and emi.is_file():
        try:
            signals = [s for s in module.file_reader(str(emi))
                       if _get_path(s.get("metadata") or {}, "General.original_filename")[1]
                       == path.name]
        except Exception:  # noqa: BLE001 - fall back to the .ser alone
            signals = []
        if signals:
            return signals
    return list(module.file_reader(str(path)))


def _read_numpy(path: Path) -> dict[str, Any]:
    """A ``.npy`` array as an rsciio-like signal dict (no calibration)."""
    data = np.load(path, allow_pickle=False)
    if data.ndim == 3 and data.shape[-1] in (3, 4) and min(data.shape[:2]) > 4:
        data = _collapse_channels(data, path.name, tolerance=0)
    ndim = data.ndim
    axes = [{"size": n, "scale": 1.0, "offset": 0.0, "units": None,
             "navigate": ndim > 1 and i < ndim - 2} for i, n in enumerate(data.shape)]
    return {"data": data, "axes": axes, "metadata": {}, "original_metadata": {}}


def _read_picture(path: Path) -> dict[str, Any]:
    """A PNG/JPEG: data with imageio (own RGB handling), axes from rsciio.image EXIF if any."""
    import imageio.v3 as iio

    data = np.asarray(iio.imread(path))
    if data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        tolerance = _JPEG_GRAY_TOLERANCE if path.suffix.lower() in (".jpg", ".jpeg") else 0
        data = _collapse_channels(data, path.name, tolerance=tolerance)
    axes = [{"name": n, "size": s, "scale": 1.0, "offset": 0.0, "units": None, "navigate": False}
            for n, s in zip(("y", "x"), data.shape[-2:])]
    original: dict[str, Any] = {}
    try:
        from rsciio.image import file_reader

        signal = file_reader(str(path))[0]
        original = signal.get("original_metadata") or {}
        by_name = {a.get("name"): a for a in signal.get("axes", [])}
        if data.ndim == 2 and {"y", "x"} <= set(by_name):
            axes = [{**by_name[n], "size": s, "navigate": False}
                    for n, s in zip(("y", "x"), data.shape)]
    except Exception:  # noqa: BLE001 - EXIF calibration is optional; the pixels are read
        pass
    navigate = [{"size": data.shape[0], "scale": 1.0, "units": None, "navigate": True}]
    return {"data": data, "axes": (navigate if data.ndim == 3 else []) + axes,
            "metadata": {}, "original_metadata": original}


def _collapse_channels(data: np.ndarray, filename: str, tolerance: int = 0) -> np.ndarray:
    """Turn a gray image stored as RGB(A) (channels last) into one channel.

    Alpha (4th channel, or 2nd of a gray+alpha image) is ignored. The result
    is the first channel when all colour channels are equal; with
    ``tolerance`` > 0 channels that differ by at most that many levels are
    averaged and rounded to the input dtype.

    Raises
    ------
    StemReadError
        The channels differ: a real colour image.
    """
    if data.shape[-1] == 2:  # gray + alpha
        return data[..., 0]
    r, g, b = (data[..., i] for i in range(3))
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r)
    if tolerance > 0:
        rgb = data[..., :3].astype(np.int64)
        if int((rgb.max(axis=-1) - rgb.min(axis=-1)).max()) <= tolerance:
            return np.rint(rgb.mean(axis=-1)).astype(data.dtype)
    raise StemReadError(
        f"{filename} is a colour (RGB) image whose red, green and blue channels differ, for "
        "example a figure, a false-colour map or an annotated picture. The plugin needs raw "
        "detector intensities: open the original grayscale file (dm3/dm4/emd/tif), or save "
        "a single-channel grayscale copy if you accept that intensities come from a rendering."
    )


def _structured_rgb_to_gray(data: np.ndarray, filename: str) -> np.ndarray:
    """rsciio's RGB(A) structured arrays (fields R, G, B, A) to one channel."""
    names = [n for n in ("R", "G", "B") if n in (data.dtype.names or ())]
    if len(names) != 3:
        raise StemReadError(f"{filename} holds a structured array with fields "
                            f"{data.dtype.names}, not an image.")
    stacked = np.stack([np.asarray(data[n]) for n in names], axis=-1)
    return _collapse_channels(stacked, filename)


# --------------------------------------------------------------------------- one signal


def _signal_to_image(signal: Mapping[str, Any], path: Path, fmt: _Format) -> StemImage:
    """Check one rsciio signal dict and turn it into a :class:`StemImage`."""
    metadata = _merged_metadata(signal)
    title = _title(metadata)
    what = f"{path.name}" + (f" (signal '{title}')" if title else "")
    original = _plain_dict(signal.get("original_metadata") or {})

    data = signal["data"]
    if getattr(data, "dtype", None) is not None and data.dtype.names:
        data = _structured_rgb_to_gray(np.asarray(data), what)
    data = np.asarray(data)
    axes = _axes_for(data, list(signal.get("axes") or []))
    data, axes = _drop_unit_navigation(data, axes)
    _check_values(data, what)
    data, nav, sig = _image_layout(data, axes, what)

    ax_y, ax_x = sig
    pixel_size, note = _pixel_size(ax_y, ax_x, original, fmt, what)
    info: dict[str, Any] = {
        "pixel_size_A": pixel_size,
        "calibrated": pixel_size is not None,
        "beam_energy_keV": _beam_energy_keV(metadata, original),
        "detector": _detector(metadata, original),
        "collection_angles_mrad": _collection_angles_mrad(original),
        "frame_interval_s": _frame_interval_s(nav, original) if data.ndim == 3 else None,
        "source_path": str(path.resolve()),
        "signal_title": title,
        "original_metadata": original,
        "file_format": fmt.label,
    }
    if note:
        info["calibration_note"] = note
    data = _native(data)
    return StemImage(data=data, pixel_size=pixel_size, name=path.stem, metadata=info)


def _axes_for(data: np.ndarray, axes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Axes in array order, one per dimension (filled in when the reader gave fewer)."""
    if len(axes) == data.ndim:
        sizes = [a.get("size") for a in axes]
        if any(s is not None and int(s) != n for s, n in zip(sizes, data.shape)):
            indexed = [a.get("index_in_array") for a in axes]
            if sorted(i for i in indexed if i is not None) == list(range(data.ndim)):
                axes = sorted(axes, key=lambda a: a["index_in_array"])
        return axes
    # The reader gave no or partial axes: last two are the image, the rest navigation.
    return [{"size": n, "scale": 1.0, "units": None, "navigate": i < data.ndim - 2}
            for i, n in enumerate(data.shape)]


def _drop_unit_navigation(data: np.ndarray, axes: list[dict[str, Any]]
                          ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Remove navigation axes of length 1 (a 'stack' of one frame is an image)."""
    keep = [i for i, a in enumerate(axes) if not (a.get("navigate") and data.shape[i] == 1)]
    if len(keep) == data.ndim:
        return data, axes
    return data.reshape([data.shape[i] for i in keep]), [axes[i] for i in keep]


def _check_values(data: np.ndarray, what: str) -> None:
    """Refuse empty, complex and all-NaN/inf data."""
    if data.size == 0:
        raise StemReadError(f"{what} holds an empty array (shape {data.shape}); there is no "
                            "image to analyse.")
    if np.iscomplexobj(data):
        raise StemReadError(f"{what} holds complex values (an FFT or exit wave?), not "
                            "detector intensities. Open the real-space HAADF image instead.")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise StemReadError(f"{what} holds {data.dtype} values, not image intensities.")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).any():
        raise StemReadError(f"{what} holds only NaN or infinite values; the acquisition or "
                            "export failed. Re-export the image.")


def _shape_text(shape: tuple[int, ...]) -> str:
    """``(64, 128)`` -> ``'64 × 128'``."""
    return " × ".join(str(n) for n in shape)


def _image_layout(data: np.ndarray, axes: list[dict[str, Any]], what: str
                  ) -> tuple[np.ndarray, list[dict[str, Any]], tuple[dict, dict]]:
    """Check the signal/navigation structure; return data as (y, x) or (t, y, x).

    Returns
    -------
    data, navigation axes, (y axis, x axis)
    """
    nav_i = [i for i, a in enumerate(axes) if a.get("navigate")]
    sig_i = [i for i, a in enumerate(axes) if not a.get("navigate")]
    nav_shape = tuple(data.shape[i] for i in nav_i)
    sig_shape = tuple(data.shape[i] for i in sig_i)
    if len(sig_i) == 1:
        unit = axes[sig_i[0]].get("units")
        unit_txt = f" in {unit}" if unit else ""
        if not nav_i:
            raise StemReadError(
                f"{what} holds a single spectrum ({sig_shape[0]} channels{unit_txt}), not an "
                "image. Open it in HyperSpy or another spectroscopy tool; this plugin needs a "
                "2D HAADF-STEM image.")
        raise StemReadError(
            f"{what} holds a spectrum image or line scan ({_shape_text(nav_shape)} positions, "
            f"{sig_shape[0]} channels{unit_txt}), not an image. Open the HAADF/ADF image "
            "acquired with it, or make an image from it in HyperSpy.")
    if len(sig_i) != 2:
        raise StemReadError(
            f"{what} holds a {data.ndim}D dataset (shape {data.shape}) with {len(sig_i)} "
            "signal axes, not a 2D image or a stack of 2D frames.")
    if [str(axes[i].get("name") or "").strip().lower() for i in sig_i] == ["x", "y"]:
        # rsciio says the rows are X (its NCEM EMD reader transposes the stored (Y, X)
        # array): put Y on the rows again, as the file's own dim labels and ncempy have it.
        sig_i = sig_i[::-1]
        sig_shape = sig_shape[::-1]
    _check_real_space(axes[sig_i[0]], axes[sig_i[1]], what, sig_shape, nav_shape)
    if len(nav_i) == 2:
        raise StemReadError(
            f"{what} holds 4D-STEM data (scan {_shape_text(nav_shape)}, patterns "
            f"{_shape_text(sig_shape)}), not an image. Make a virtual HAADF/ADF image (e.g. in "
            "py4DSTEM or HyperSpy) and open that.")
    if len(nav_i) > 2:
        raise StemReadError(
            f"{what} holds a {data.ndim}D dataset (shape {data.shape}); the plugin opens 2D "
            "images and (t, y, x) stacks. Export the frames you need as a stack.")
    order = nav_i + sig_i
    if order != list(range(data.ndim)):
        data = np.transpose(data, order)
    return data, [axes[i] for i in nav_i], (axes[sig_i[0]], axes[sig_i[1]])


def _check_real_space(ax_y: Mapping[str, Any], ax_x: Mapping[str, Any], what: str,
                      sig_shape: tuple[int, ...], nav_shape: tuple[int, ...]) -> None:
    """Refuse 2D signals whose axes are not in real space (diffraction, energy, time)."""
    kinds = {unit_kind(ax_y.get("units")), unit_kind(ax_x.get("units"))}
    units = f"{ax_y.get('units')}, {ax_x.get('units')}"
    if kinds & {"reciprocal", "angle"}:
        if len(nav_shape) == 2:
            return  # 4D-STEM: reported by the caller with its own message
        raise StemReadError(
            f"{what} holds a diffraction pattern or FFT ({_shape_text(sig_shape)}, axes in "
            f"{units}), not a real-space image. This plugin finds atom columns in HAADF-STEM "
            "images; open the real-space image of the same area.")
    if kinds & {"energy", "time"}:
        raise StemReadError(
            f"{what} holds a 2D signal with axes in {units} (for example an energy-time "
            "map), not a real-space image.")


# --------------------------------------------------------------------------- calibration


def _pixel_size(ax_y: Mapping[str, Any], ax_x: Mapping[str, Any], original: Mapping[str, Any],
                fmt: _Format, what: str) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel size (y, x) in Å from each axis with its own unit, and a note when uncalibrated."""
    units = [ax_y.get("units"), ax_x.get("units")]
    if fmt.reader == "rsciio.tiff" and all(unit_kind(u) == "none" for u in units):
        imagej = _imagej_header(original)
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
        scales = [_as_float(ax.get("scale", 1.0)) for ax in (ax_y, ax_x)]
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


def _imagej_header(original: Mapping[str, Any]) -> dict[str, str]:
    """``key=value`` lines of an ImageJ TIFF ImageDescription (empty dict if none)."""
    text = original.get("ImageDescription")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.startswith("ImageJ="):
        return {}
    header: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            value = value.strip()
            if "\\u" in value:  # ImageJ escapes non-ASCII units, e.g. \u00B5m
                value = codecs.decode(value, "unicode_escape")
            header[key.strip()] = value
    return header


# --------------------------------------------------------------------------- metadata


def _merged_metadata(signal: Mapping[str, Any]) -> dict[str, Any]:
    """rsciio ``metadata`` plus what its ``mapping`` takes from ``original_metadata``.

    rsciio leaves applying the mapping to HyperSpy; this does it for the few
    keys used here (beam energy, detector).
    """
    metadata = _plain_dict(signal.get("metadata") or {})
    original = signal.get("original_metadata") or {}
    for source, target in (signal.get("mapping") or {}).items():
        try:
            dest, function = target
            found, value = _get_path(original, source)
            if not found:
                continue
            if function is not None:
                value = function(value)
        except Exception:  # noqa: BLE001 - a mapping that does not apply is skipped
            continue
        if value is not None and _get_path(metadata, dest)[0] is False:
            _set_path(metadata, dest, value)
    return metadata


def _slug(key: str) -> str:
    """Key spelling HyperSpy uses for mapping paths (spaces etc. -> underscores)."""
    return re.sub(r"\W", "_", str(key)).lower()


def _get_path(tree: Any, dotted: str) -> tuple[bool, Any]:
    """Look up ``a.b.c`` in nested dicts, tolerant to HyperSpy's key slugs."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return False, None
        if part in node:
            node = node[part]
            continue
        matches = [k for k in node if _slug(k) == _slug(part)]
        if not matches:
            return False, None
        node = node[matches[0]]
    return True, node


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating levels."""
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[last] = value


def _plain_dict(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings as plain dicts (leaves kept as they are)."""
    return {str(k): _plain_dict(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def _title(metadata: Mapping[str, Any]) -> str | None:
    """The signal title, or None when empty."""
    found, title = _get_path(metadata, "General.title")
    if not found or title is None:
        return None
    return str(title).strip() or None


def _as_float(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError, AttributeError):
        return None
    return number if math.isfinite(number) else None


def _beam_energy_keV(metadata: Mapping[str, Any], original: Mapping[str, Any]) -> float | None:
    """Beam energy in keV (rsciio mapping, else NCEM/TIA voltage tags in V)."""
    found, kev = _get_path(metadata, "Acquisition_instrument.TEM.beam_energy")
    energy = _as_float(kev) if found else None
    if energy is None:
        for path in ("microscope.high tension",
                     "ObjectInfo.ExperimentalConditions.MicroscopeConditions.AcceleratingVoltage",
                     "Optics.AccelerationVoltage"):
            found, volts = _get_path(original, path)
            volts = _as_float(volts) if found else None
            if volts is not None:
                energy = volts / 1000.0
                break
    return energy if energy is not None and energy > 0 else None


_DETECTOR_KEYS = {"detector", "detectorname", "detector name", "detector_name"}


def _detector(metadata: Mapping[str, Any], original: Mapping[str, Any]) -> str | None:
    """Detector name: Velox result/detector tags, rsciio mapping, else any 'Detector' tag."""
    for tree, path in ((original, "BinaryResult.Detector"),
                       (original, "DetectorMetadata.DetectorName"),
                       (metadata, "Acquisition_instrument.TEM.Detector.Camera.Name"),
                       (metadata, "Acquisition_instrument.TEM.Detector.name")):
        found, value = _get_path(tree, path)
        if found and isinstance(value, str) and value.strip():
            return value.strip()
    return _find_string(original, _DETECTOR_KEYS)


def _find_string(tree: Mapping[str, Any], keys: set[str], depth: int = 0) -> str | None:
    """First non-empty string under a key in ``keys`` (case-insensitive), depth first."""
    if depth > 12:
        return None
    for key, value in tree.items():
        if str(key).lower() in keys and isinstance(value, str) and value.strip():
            return value.strip()
    for value in tree.values():
        if isinstance(value, Mapping):
            found = _find_string(value, keys, depth + 1)
            if found:
                return found
    return None


def _collection_angles_mrad(original: Mapping[str, Any]) -> tuple[float, float] | None:
    """(inner, outer) detector collection semi-angles in mrad (Velox, stored in rad)."""
    for base in ("DetectorMetadata.CollectionAngleRange", "Detector.CollectionAngleRange"):
        found_b, begin = _get_path(original, base + ".begin")
        found_e, end = _get_path(original, base + ".end")
        inner, outer = _as_float(begin), _as_float(end)
        if found_b and found_e and inner is not None and outer is not None and outer > 0:
            return (inner * 1000.0, outer * 1000.0)
    return None


def _frame_interval_s(nav: list[Mapping[str, Any]], original: Mapping[str, Any]) -> float | None:
    """Time between frames of a stack: time-axis scale, ImageJ finterval or Velox FrameTime."""
    if nav:
        unit = str(nav[0].get("units") or "").strip().lower()
        scale = _as_float(nav[0].get("scale"))
        if unit in _SECONDS_PER and scale is not None and scale > 0:
            return scale * _SECONDS_PER[unit]
    imagej = _imagej_header(original)
    interval = _as_float(imagej.get("finterval"))
    if interval is not None and interval > 0:
        return interval * _SECONDS_PER.get(imagej.get("tunit", "s").strip().lower(), 1.0)
    for path in ("Scan.FrameTime", "ObjectInfo.AcquireInfo.FrameTime"):
        found, value = _get_path(original, path)
        value = _as_float(value) if found else None
        if value is not None and value > 0:
            return value
    return None


# --------------------------------------------------------------------------- output


def _native(data: np.ndarray) -> np.ndarray:
    """An in-memory, C-contiguous array in native byte order (no file handle kept)."""
    if not data.dtype.isnative:
        return np.ascontiguousarray(data.astype(data.dtype.newbyteorder("=")))
    if isinstance(data, np.memmap) or not data.flags.c_contiguous or data.base is not None:
        return np.array(data, copy=True, order="C")
    return data


def _name_images(images: list[StemImage], path: Path) -> None:
    """File stem, plus the signal title (or index) when a file holds several images."""
    if len(images) < 2:
        return
    labels = [img.metadata.get("signal_title") or f"signal {i}" for i, img in enumerate(images)]
    for i, (img, label) in enumerate(zip(images, labels)):
        if labels.count(label) > 1:
            label = f"{label} {i}"
        img.name = f"{path.stem} [{label}]"
