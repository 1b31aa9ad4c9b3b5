"""Read STEM image files into calibrated :class:`StemImage` objects.

All format parsing is done by RosettaSciIO (``rsciio``), numpy (``.npy``)
and imageio (``.png``, ``.jpg``); this module only chooses the reader by
extension, runs it, and hands each signal it returns to
:func:`.signal_to_image.signal_to_image`, which checks that it is a
real-space image (:mod:`.signal_layout`), converts the pixel size of each
axis to Å with that axis' own unit, and collects the metadata later stages
need (:mod:`.metadata`). It imports neither napari nor Qt; the parsers are
imported only when a file is read.

Decisions
---------
* **Several signals.** In a file with several signals (Velox EMD with
  HAADF, DF and EDS), the image signals are returned and the others skipped
  with a warning; a :class:`StemReadError` is raised only when no signal is
  an image (it says what the file holds, see :mod:`.signal_layout`).
* **PNG, JPEG and npy pictures** of a gray image stored with colour
  channels are read as one channel (:func:`.signal_layout.collapse_channels`);
  for JPEG, channels within 2 gray levels count as gray.
* **Unknown extensions** raise :class:`UnsupportedFormatError` (a subclass
  of :class:`StemReadError`). A missing file raises ``FileNotFoundError``;
  a folder, a symbolic link loop, something that is not a regular file and a
  file the user may not read raise a :class:`StemReadError` that says so.
* **Declared sizes** are checked before any data are read
  (:func:`.limits.check_file`): a header that asks for more data than the
  file holds, HDF5 chunks that were never written, or data over the memory
  budget are refused at once, instead of a hang or gigabytes of memory.
  EMD and hspy files are read lazily (rosettasciio's dask arrays) and each
  signal is loaded only after its size is checked.
* **Parser failures** (corrupt or truncated files, missing ``.ser`` next to
  an ``.emi``) become a :class:`StemReadError` naming the file and format.
* **npy arrays** of shape (H, W, 1) are one image (a channel axis), not H
  frames of W x 1 pixels; (H, W, 2) is gray plus alpha.
* **TIA files.** A ``name_1.ser`` is read through its ``name.emi`` when that
  is present, since the ``.emi`` holds the metadata.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .limits import check_file
from .metadata import get_path
from .parser_guards import harden
from .signal_layout import collapse_channels
from .signal_to_image import name_images, signal_to_image
from .stem_image import StemImage, StemReadError

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


# --------------------------------------------------------------------------- public


def read_stem_file(path: str | Path, lazy: bool = False) -> list[StemImage]:
    """Read every real-space image in a microscopy file.

    Parameters
    ----------
    path : str or Path
        A ``.dm3``, ``.dm4``, ``.emd``, ``.ser``, ``.emi``, ``.mrc``,
        ``.tif``/``.tiff``, ``.hspy``, ``.npy``, ``.png`` or ``.jpg``/``.jpeg``
        file. For a TIA pair, either the ``.emi`` or the ``_1.ser`` works.
    lazy : bool
        Leave a stack's frames in the file until they are used: rosettasciio's
        ``lazy=True`` (a dask array; for ``.npy``, one file read per frame), so a long
        series can be analysed one frame at a time. 2D images are read whole
        either way. A lazy stack's values are checked frame by frame when used
        (an all-NaN frame is refused then, not here).

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
        The file is corrupt, declares more data than it holds or than memory
        allows, holds no image (a spectrum, spectrum image, 4D-STEM data, a
        diffraction pattern, a colour picture, no finite values), is a folder
        or may not be read. The message says what it holds and what to do.
    """
    path = Path(path)
    fmt = _format_of(path)
    _check_path(path, fmt)
    signals = _read_signals(path, fmt, lazy)
    images: list[StemImage] = []
    refused: list[str] = []
    for signal in signals:
        try:
            images.append(signal_to_image(signal, path, reader=fmt.reader, label=fmt.label, lazy=lazy))
        except StemReadError as exc:
            refused.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - a lazy reader meets a truncated file only when reading the data
            if not lazy:
                raise
            raise corrupt_file_error(path, fmt.label, exc) from exc
    if not images:
        if not refused:
            hint = (f" A TIA .emi holds only metadata: keep its data file '{path.stem}_1.ser' "
                    "next to it, or open the .ser." if path.suffix.lower() == ".emi" else "")
            raise StemReadError(f"{path.name} (format: {fmt.label}) holds no data.{hint}")
        raise StemReadError(" ".join(dict.fromkeys(refused)))
    if refused:
        warnings.warn(f"{path.name}: skipped {len(refused)} signal(s) that are not images: "
                      + " ".join(refused), stacklevel=2)
    name_images(images, path)
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


def _check_path(path: Path, fmt: _Format) -> None:
    """A readable regular file, or ``FileNotFoundError`` / a :class:`StemReadError` saying what it is."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise StemReadError(f"{path}: a symbolic link to a file that does not exist "
                                f"({os.readlink(path)}).") from None
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        why = ("a symbolic link that points back to itself (a loop)" if exc.errno == errno.ELOOP
               else f"cannot be opened ({exc.strerror or exc})")
        raise StemReadError(f"{path}: {why}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise StemReadError(f"{path} is a folder, not a {fmt.label} file; open a file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise StemReadError(f"{path} is not a regular file (a device, pipe or socket); copy the data to a file.")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise StemReadError(f"{path}: permission denied; you may not read this file. Ask its owner, or copy it "
                            "somewhere you can read it.") from None
    except OSError as exc:
        raise StemReadError(f"{path}: cannot be opened ({exc.strerror or exc}).") from None


def _read_signals(path: Path, fmt: _Format, lazy: bool = False) -> list[dict[str, Any]]:
    """Check the declared sizes, run the parser; any parser exception becomes a :class:`StemReadError`."""
    try:
        check_file(path, fmt.reader, fmt.label)
        if fmt.reader == "numpy":
            return [_read_numpy(path, lazy)]
        if fmt.reader == "imageio":
            return [_read_picture(path)]
        module = importlib.import_module(fmt.reader)
        harden(fmt.reader)
        if fmt.reader == "rsciio.emd":
            return _read_emd(module, path)
        if path.suffix.lower() == ".ser":
            return _read_ser(module, path, {"lazy": True} if lazy else {})
        if fmt.reader == "rsciio.hspy":  # lazily: each signal is loaded once its size is checked
            return list(module.file_reader(str(path), lazy=True))
        return list(module.file_reader(str(path), **({"lazy": True} if lazy else {})))
    except StemReadError:
        raise
    except PermissionError as exc:
        raise StemReadError(f"{path}: permission denied ({exc}); you may not read this file or one it "
                            "needs beside it.") from None
    except MemoryError as exc:
        raise StemReadError(f"Could not read {path.name} (format: {fmt.label}): not enough memory for its data "
                            f"({exc}). The header may be damaged; if the data are real, crop or bin them "
                            "first.") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a user-facing read error
        raise corrupt_file_error(path, fmt.label, exc) from exc


def corrupt_file_error(path: Path, label: str, exc: Exception) -> StemReadError:
    """The :class:`StemReadError` for a file its parser failed on (corrupt, truncated, wrong format).

    Also used when a lazily read stack fails on a frame that is read later.
    """
    hint = ""
    if label.startswith("FEI TIA"):
        hint = (" A TIA .emi needs its '_1.ser' data file in the same folder, and a .ser"
                " its .emi; keep both with their original names.")
    return StemReadError(
        f"Could not read {Path(path).name} (format: {label}): the file looks corrupt or "
        f"truncated, or is not in that format ({type(exc).__name__}: {exc}).{hint} Check "
        "the copy, or export the image again from the acquisition software."
    )


def _read_emd(module: Any, path: Path) -> list[dict[str, Any]]:
    """Read an EMD file lazily, images only first (Velox spectrum images are slow and need ``sparse``)."""
    signals = list(module.file_reader(str(path), select_type="images", lazy=True))
    if signals:
        return signals
    try:  # no image: read everything (lazily) to say what the file does hold
        return list(module.file_reader(str(path), lazy=True))
    except Exception as exc:  # noqa: BLE001
        raise StemReadError(
            f"{path.name}: the EMD file holds no image signal (only spectra or spectrum images, "
            f"which could not be described: {type(exc).__name__}: {exc}). Export the HAADF "
            "image from Velox or open the file in HyperSpy."
        ) from exc


def _read_ser(module: Any, path: Path, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Read a TIA ``name_1.ser`` through its ``name.emi`` when present (it holds the metadata)."""
    match = re.fullmatch(r"(.+)_\d+", path.stem)
    emi = path.with_name(match.group(1) + ".emi") if match else None
    if emi is not None and emi.is_file():
        try:
            signals = [s for s in module.file_reader(str(emi), **(options or {}))
                       if get_path(s.get("metadata") or {}, "General.original_filename")[1]
                       == path.name]
        except Exception:  # noqa: BLE001 - fall back to the .ser alone
            signals = []
        if signals:
            return signals
    return list(module.file_reader(str(path), **(options or {})))


def _read_numpy(path: Path, lazy: bool = False) -> dict[str, Any]:
    """A ``.npy`` array as an rsciio-like signal dict (no calibration); a stack frame by frame when ``lazy``."""
    data = _lazy_npy_stack(path) if lazy else None
    if data is None:
        data = np.load(path, allow_pickle=False)
    if data.ndim == 3 and data.shape[-1] == 1 and min(data.shape[:2]) > 4:
        data = np.ascontiguousarray(data[..., 0])  # (H, W, 1): one channel, not H frames of W x 1
    elif data.ndim == 3 and data.shape[-1] in (2, 3, 4) and min(data.shape[:2]) > 4:
        data = collapse_channels(data, path.name, tolerance=0)
    ndim = data.ndim
    axes = [{"size": n, "scale": 1.0, "offset": 0.0, "units": None,
             "navigate": ndim > 1 and i < ndim - 2} for i, n in enumerate(data.shape)]
    return {"data": data, "axes": axes, "metadata": {}, "original_metadata": {}}


def _lazy_npy_stack(path: Path) -> Any:
    """A dask array reading one frame of a C-ordered ``.npy`` stack per chunk with plain file reads (a
    memory map would leave every frame read resident in the process); None for anything else."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
        except (ValueError, OSError):
            return None
        offset = fh.tell()
    if len(shape) < 3 or fortran or dtype.hasobject or min(shape) == 0 or shape[-1] in (2, 3, 4):
        return None
    if path.stat().st_size < offset + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"the file holds fewer bytes than its {shape} {dtype} header says (truncated)")
    import dask
    import dask.array as da

    frame_shape = shape[-2:]
    count = int(np.prod(frame_shape))

    def read(index: int) -> np.ndarray:
        with open(path, "rb") as fh:
            fh.seek(offset + index * count * dtype.itemsize)
            return np.fromfile(fh, dtype=dtype, count=count).reshape(frame_shape)

    frames = [da.from_delayed(dask.delayed(read)(k), frame_shape, dtype) for k in range(int(np.prod(shape[:-2])))]
    return da.stack(frames).reshape(shape)


def _read_picture(path: Path) -> dict[str, Any]:
    """A PNG/JPEG: data with imageio (own RGB handling), axes from rsciio.image EXIF if any."""
    import imageio.v3 as iio

    data = np.asarray(iio.imread(path))
    if data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        tolerance = _JPEG_GRAY_TOLERANCE if path.suffix.lower() in (".jpg", ".jpeg") else 0
        data = collapse_channels(data, path.name, tolerance=tolerance)
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
