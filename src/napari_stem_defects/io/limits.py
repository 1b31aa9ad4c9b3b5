"""What a file may make the reader allocate: declared sizes checked before any data are read.

A damaged header can declare an image of 100000 x 100000 pixels in a file of
a few hundred kilobytes; a parser that trusts it hangs (rosettasciio's MRC
memory map) or allocates gigabytes. :func:`check_file` reads only the header
of the formats whose parsers trust it (MRC, TIA SER, TIFF, NPY, HDF5-based
EMD and hspy, PNG/JPEG) and raises :class:`~.stem_image.StemReadError` when

* the data it declares do not fit in the file (an uncompressed format whose
  header asks for more bytes than the file holds: truncated or damaged),
* an HDF5 dataset declares chunks that were never written (the acquisition
  or copy was cut short, or the shape was damaged), or
* the data would take more than :func:`memory_budget` bytes.

:func:`check_signal_sizes` applies the budget to signals read lazily
(rosettasciio's dask arrays) before they are loaded. The checks are cheap
(headers only) and never refuse an intact file within the budget. This
module imports no parser at import time.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .stem_image import StemReadError

__all__ = ["BUDGET_ENV", "MIN_BUDGET", "check_file", "check_signal_sizes", "human_bytes", "memory_budget"]

#: Environment variable that sets the budget in bytes (suffixes K, M, G, T allowed), e.g. ``8G``.
BUDGET_ENV = "NAPARI_STEM_DEFECTS_READ_LIMIT"
#: The budget is never smaller than this (bytes).
MIN_BUDGET = 256 << 20
#: Share of the available memory one file's data may take.
BUDGET_FRACTION = 0.5

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Examples
    --------
    >>> human_bytes(20e9)
    '18.6 GiB'
    """
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``, else free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_budget() -> int:
    """Bytes the data of one file may take: :data:`BUDGET_ENV` if set, else half the available memory.

    Never less than :data:`MIN_BUDGET`; 4 GiB when the available memory cannot be found.

    Examples
    --------
    >>> memory_budget() >= MIN_BUDGET
    True
    """
    text = os.environ.get(BUDGET_ENV, "").strip().upper().removesuffix("B").removesuffix("I")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)", text)
    if match:
        return max(1, int(float(match.group(1)) * _UNITS[match.group(2)]))
    available = _available_memory()
    if available is None:
        return 4 << 30
    return max(MIN_BUDGET, int(available * BUDGET_FRACTION))


# --------------------------------------------------------------------------- the checks


def _shape_text(shape: Iterable[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def _check_size(path: Path, label: str, what: str, nbytes: int, *, stored: int | None = None) -> None:
    """Refuse ``nbytes`` of declared data over the budget, or over ``stored`` bytes the file holds for them."""
    if stored is not None and nbytes > stored:
        raise StemReadError(
            f"Could not read {path.name} (format: {label}): its header declares {what} "
            f"({human_bytes(nbytes)}) but the file holds only {human_bytes(max(stored, 0))} for it; the file "
            "is truncated or its header is damaged. Check the copy, or export the image again.")
    budget = memory_budget()
    if nbytes > budget:
        raise StemReadError(
            f"Could not read {path.name} (format: {label}): it declares {what} ({human_bytes(nbytes)}), more "
            f"than the {human_bytes(budget)} a file may use here (half the free memory). The header is probably "
            f"damaged; if the data are real, crop or bin them first, or set {BUDGET_ENV} (bytes) to allow more.")


def check_signal_sizes(signals: Iterable[Mapping[str, Any]], path: Path, label: str) -> None:
    """Refuse lazily read signals (dask or memory-mapped) whose data would exceed the budget.

    Parameters
    ----------
    signals : iterable of Mapping
        rsciio signal dicts whose ``data`` have ``shape`` and ``dtype`` but are not loaded yet.
    path : Path
        The file (named in the message).
    label : str
        The readable format name.

    Raises
    ------
    StemReadError
    """
    for signal in signals:
        data = signal.get("data")
        shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", None)
        if shape is None or dtype is None:
            continue
        nbytes = math.prod(int(s) for s in shape) * int(getattr(dtype, "itemsize", 1) or 1)
        _check_size(path, label, f"data of {_shape_text(shape)} {dtype}", nbytes)


def check_file(path: Path, reader: str, label: str) -> None:
    """Check the sizes a file's header declares before its parser reads the data.

    Parameters
    ----------
    path : Path
        An existing file.
    reader : str
        The reader :mod:`.rsciio_reader` chose (``"rsciio.mrc"``, ``"numpy"``...).
    label : str
        The readable format name.

    Raises
    ------
    StemReadError
        The declared data do not fit in the file, were never written, or exceed :func:`memory_budget`.
    """
    ext = path.suffix.lower()
    check = {
        "rsciio.mrc": _check_mrc,
        "rsciio.tiff": _check_tiff,
        "numpy": _check_npy,
        "rsciio.emd": _check_hdf5,
        "rsciio.hspy": _check_hdf5,
        "imageio": _check_picture,
    }.get(reader)
    if reader == "rsciio.tia":
        for ser in ([path] if ext == ".ser" else sorted(path.parent.glob(f"{glob_escape(path.stem)}_*.ser"))):
            _check_ser(ser, label)
        return
    if check is not None:
        check(path, label)


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters escaped."""
    return re.sub(r"([\[\]*?])", r"[\1]", text)


# --------------------------------------------------------------------------- formats


#: MRC data mode -> bytes per voxel (mode 101, 4-bit, is handled apart).
_MRC_ITEMSIZE = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2, 16: 3}


def _check_mrc(path: Path, label: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(1024)
    if len(header) < 1024:
        raise StemReadError(f"Could not read {path.name} (format: {label}): the file is shorter than the "
                            f"1024-byte MRC header ({size} bytes); it is truncated.")
    order = ">" if header[212:214] == b"\x11\x11" else "<"
    nx, ny, nz, mode = struct.unpack(order + "4i", header[:16])
    extended = struct.unpack(order + "i", header[92:96])[0]
    if min(nx, ny, nz) < 1:
        raise StemReadError(f"Could not read {path.name} (format: {label}): its header declares a data block "
                            f"of {nx} x {ny} x {nz} voxels; the header is damaged.")
    if mode == 101:
        nbytes = (nx * ny * nz + 1) // 2
    elif mode in _MRC_ITEMSIZE:
        nbytes = nx * ny * nz * _MRC_ITEMSIZE[mode]
    else:
        return  # an unknown mode: the parser says so
    what = f"{nz} x {ny} x {nx} voxels of mode {mode}"
    _check_size(path, label, what, nbytes, stored=size - 1024 - max(extended, 0))


def _check_npy(path: Path, label: str) -> None:
    import numpy as np

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                return
            shape, _, dtype = read[version](f)
            header_end = f.tell()
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise StemReadError(f"Could not read {path.name} (format: {label}): not a valid .npy header ({exc}).") from None
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False)
    nbytes = math.prod(shape) * dtype.itemsize
    _check_size(path, label, f"an array of {_shape_text(shape)} {dtype}", nbytes, stored=size - header_end)


def _check_tiff(path: Path, label: str) -> None:
    import tifffile

    size = path.stat().st_size
    try:
        tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - the parser reports an unreadable file itself
        return
    with tif:
        try:
            series = list(tif.series)
        except Exception:  # noqa: BLE001
            return
        for s in series:
            try:
                shape, dtype = tuple(s.shape), s.dtype
                compressed = int(getattr(s.keyframe, "compression", 1)) != 1
            except Exception:  # noqa: BLE001
                continue
            if dtype is None:
                continue
            nbytes = math.prod(shape) * dtype.itemsize
            _check_size(path, label, f"an image of {_shape_text(shape)} {dtype}", nbytes,
                        stored=None if compressed else size)


def _check_hdf5(path: Path, label: str) -> None:
    """Every numeric dataset of 2+ dimensions (for Velox, the images only): written, and within the budget."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception:  # noqa: BLE001 - the parser reports an unreadable file itself
        return
    with f:
        velox = "Data/Image" in f
        found: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.ndim >= 2 and obj.dtype.kind in "biufc":
                if not velox or name.startswith("Data/Image/"):
                    found.append(name)

        try:
            f.visititems(visit)
        except Exception:  # noqa: BLE001
            return
        for name in found:
            dset = f[name]
            shape, dtype = dset.shape, dset.dtype
            nbytes = math.prod(shape) * dtype.itemsize
            what = f"a dataset '{name}' of {_shape_text(shape)} {dtype}"
            if nbytes == 0:
                continue
            try:
                if dset.chunks is not None:
                    expected = math.prod(math.ceil(s / c) for s, c in zip(shape, dset.chunks))
                    written = dset.id.get_num_chunks()
                    if written < expected:
                        raise StemReadError(
                            f"Could not read {path.name} (format: {label}): it declares {what} "
                            f"({human_bytes(nbytes)}) but only {written} of its {expected} chunks were ever "
                            "written; the acquisition or the copy was cut short, or the header is damaged. "
                            "Export the image again.")
                elif dset.id.get_storage_size() < nbytes:
                    _check_size(path, label, what, nbytes, stored=int(dset.id.get_storage_size()))
            except StemReadError:
                raise
            except Exception:  # noqa: BLE001 - storage details unavailable: the budget still applies
                pass
            _check_size(path, label, what, nbytes)


#: TIA SER data type code -> bytes per value.
_SER_ITEMSIZE = {1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 16}


def _check_ser(path: Path, label: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(34)
        if len(head) < 30 or head[:2] != b"II":
            return  # not little-endian TIA: the parser says what it is
        version = struct.unpack("<H", head[4:6])[0]
        data_type = struct.unpack("<I", head[6:10])[0]
        total, valid = struct.unpack("<2I", head[14:22])
        wide = version >= 0x220
        offsets_at = struct.unpack("<Q", head[22:30])[0] if wide else struct.unpack("<I", head[22:26])[0]
        step = 8 if wide else 4
        if valid > total or offsets_at + step * total > size:
            raise StemReadError(
                f"Could not read {path.name} (format: {label}): its header declares {valid} data elements "
                f"(of {total}) whose offsets do not fit in the file ({human_bytes(size)}); the file is "
                "truncated or its header is damaged.")
        if valid == 0:
            return
        f.seek(offsets_at)
        raw = f.read(step * valid)
        offsets = struct.unpack(f"<{valid}{'Q' if wide else 'I'}", raw)
        calibration = 40 if data_type == 0x4122 else 20 if data_type == 0x4120 else None
        if calibration is None:
            return
        element = None
        for offset in (offsets[0], offsets[-1]):
            f.seek(offset + calibration)
            fields = f.read(10 if data_type == 0x4122 else 6)
            if len(fields) < (10 if data_type == 0x4122 else 6):
                raise StemReadError(f"Could not read {path.name} (format: {label}): a data element lies beyond "
                                    "the end of the file; it is truncated.")
            kind = struct.unpack("<H", fields[:2])[0]
            dims = struct.unpack("<2I", fields[2:10]) if data_type == 0x4122 else struct.unpack("<I", fields[2:6])
            if kind not in _SER_ITEMSIZE:
                return
            element = math.prod(dims) * _SER_ITEMSIZE[kind]
            what = f"data elements of {_shape_text(dims[::-1])} values of type {kind}"
            _check_size(path, label, what, element, stored=size - offset - calibration - len(fields))
        if element is not None:
            _check_size(path, label, f"{valid} data elements", element * valid)


def _check_picture(path: Path, label: str) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            bands = len(im.getbands())
    except Image.DecompressionBombError as exc:
        raise StemReadError(f"Could not read {path.name} (format: {label}): it declares an image too large to "
                            f"be real ({exc}); the header is probably damaged.") from None
    except Exception:  # noqa: BLE001 - the parser reports an unreadable file itself
        return
    _check_size(path, label, f"a picture of {height} x {width} pixels x {bands} channels",
                width * height * bands * 2)
