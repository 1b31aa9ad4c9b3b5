"""Seeded mutations of the shared microscopy files, for the reader fuzz tests.

Not a test module: ``test_fuzz_readers.py`` imports it, and it runs as a
script in a child process (``python fuzz_files.py``) that reads each mutated
file with the plugin's reader under a time and memory limit, and prints one
JSON line per file, so a hang or a memory blow-up fails one case instead of
the test session.

Mutations
---------
* ``truncate``: the file cut at a random point (5-98 %).
* ``flip``: 24 random bytes overwritten.
* ``header``: 3 aligned 4-byte words of the first 4 KB set to sizes a
  damaged header could hold (0, 65536, 100000, 2**24, 2**31 - 1, 2**32 - 1).
* ``huge``: the image's declared size set to about 100000 x 100000 in the
  format's own header (MRC, DM3/DM4, TIFF, SER, NPY, PNG, JPEG) or HDF5
  dataset (Velox and NCEM EMD, hspy: an unwritten chunked dataset), the data
  left as they are.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

#: Extensions of the shared files that are microscopy formats (CSV tables are not).
READABLE = {".dm3", ".dm4", ".emd", ".ser", ".emi", ".mrc", ".tif", ".tiff", ".hspy", ".npy", ".png", ".jpg"}
#: Declared side of a "huge" image.
HUGE = 100_000
#: Values a damaged header word may take.
HEADER_VALUES = (0, 65536, HUGE, 1 << 24, 2**31 - 1, 2**32 - 1)


def shared_files(shared: Path) -> list[Path]:
    """Every microscopy file of ``formats/`` and ``real/``, sorted."""
    return sorted(p for sub in ("formats", "real") for p in (shared / sub).iterdir() if p.suffix.lower() in READABLE)


def partners(path: Path) -> list[Path]:
    """Files that must sit beside ``path`` for it to be read (a TIA .emi and its _1.ser)."""
    if path.suffix.lower() == ".emi":
        return [path.with_name(path.stem + "_1.ser")]
    if path.suffix.lower() == ".ser":
        return [path.with_name(re.sub(r"_\d+$", "", path.stem) + ".emi")]
    return []


# --------------------------------------------------------------------------- byte mutations


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """The first 5-98 % of the bytes."""
    return data[: max(1, int(len(data) * rng.uniform(0.05, 0.98)))]


def flip(data: bytes, rng: np.random.Generator, n: int = 24) -> bytes:
    """``n`` random bytes overwritten with random values."""
    out = bytearray(data)
    for i in rng.integers(0, len(out), n):
        out[int(i)] = int(rng.integers(0, 256))
    return bytes(out)


def header_words(data: bytes, rng: np.random.Generator, n: int = 3) -> bytes:
    """``n`` aligned 4-byte words of the first 4 KB set to size-like values (either byte order)."""
    out = bytearray(data)
    span = max(1, min(len(out) - 4, 4096) // 4)
    for _ in range(n):
        i = int(rng.integers(0, span)) * 4
        value = int(rng.choice(HEADER_VALUES))
        out[i:i + 4] = struct.pack("<I" if rng.random() < 0.5 else ">I", value)
    return bytes(out)


# --------------------------------------------------------------------------- huge declared sizes


def _mrc_huge(data: bytes) -> bytes:
    out = bytearray(data)
    out[0:12] = struct.pack("<3i", HUGE, HUGE, HUGE)
    return bytes(out)


def _dm_huge(data: bytes) -> bytes:
    """Set every value of every ``Dimensions`` tag group to 100000 (DM3: 4-byte info, DM4: 8-byte)."""
    out = bytearray(data)
    dm4 = struct.unpack(">I", data[:4])[0] == 4
    word = 8 if dm4 else 4
    for match in re.finditer(rb"Dimensions", data):
        pos = match.end()
        for _ in range(4):  # up to four dimension entries follow
            start = data.find(b"%%%%", pos, pos + 64)
            if start < 0:
                break
            fmt = ">Q" if dm4 else ">I"
            ninfo = struct.unpack(fmt, data[start + 4:start + 4 + word])[0]
            if ninfo != 1:
                break
            kind = struct.unpack(fmt, data[start + 4 + word:start + 4 + 2 * word])[0]
            at = start + 4 + 2 * word
            if kind in (3, 5):  # int32 / uint32 in the file's byte order (little-endian in practice)
                out[at:at + 4] = struct.pack("<I", HUGE)
            elif kind == 11:  # uint64 (DM4)
                out[at:at + 8] = struct.pack("<Q", HUGE)
            pos = at + 4
    return bytes(out)


def _tiff_huge(path: Path, data: bytes) -> bytes:
    import tifffile

    out = bytearray(data)
    with tifffile.TiffFile(path) as tif:
        order = tif.byteorder
        for tag in tif.pages[0].tags.values():
            if tag.code in (256, 257):
                value = min(HUGE, 65535) if tag.dtype == 3 else HUGE
                out[tag.valueoffset:tag.valueoffset + tag.count * (2 if tag.dtype == 3 else 4)] = struct.pack(
                    f"{order}{'H' if tag.dtype == 3 else 'I'}", value)
    return bytes(out)


def _ser_huge(data: bytes) -> bytes:
    """ArraySizeX/Y of the first 2D data element (40 bytes of calibration, int16 type, then the sizes)."""
    out = bytearray(data)
    version = struct.unpack("<H", data[4:6])[0]
    wide = version >= 0x220
    offset_array = struct.unpack("<Q" if wide else "<I", data[22:30] if wide else data[22:26])[0]
    first = struct.unpack("<Q" if wide else "<I", data[offset_array:offset_array + (8 if wide else 4)])[0]
    at = first + 40 + 2
    out[at:at + 8] = struct.pack("<2I", HUGE, HUGE)
    return bytes(out)


def _npy_huge(data: bytes) -> bytes:
    start = data.find(b"{")
    end = data.find(b"}", start) + 1
    header = re.sub(rb"'shape': \([^)]*\)", f"'shape': ({HUGE}, {HUGE})".encode(), data[start:end])
    total = start + len(header) + 1
    pad = (-total) % 64
    header = header + b" " * pad + b"\n"
    out = bytearray(data[:start]) + header + data[end:].split(b"\n", 1)[1]
    out[8:10] = struct.pack("<H", len(header))
    return bytes(out)


def _png_huge(data: bytes) -> bytes:
    out = bytearray(data)
    out[16:24] = struct.pack(">2I", HUGE, HUGE)
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    return bytes(out)


def _jpeg_huge(data: bytes) -> bytes:
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = data.find(marker)
        if at >= 0:
            out[at + 5:at + 9] = struct.pack(">2H", 65535, 65535)
            break
    return bytes(out)


def _hdf5_huge(path: Path, target: Path) -> None:
    """Replace the largest 2D+ ``data`` dataset (else the largest 2D+ one) by an unwritten chunked one of 100000 x 100000 (same dtype)."""
    import h5py

    shutil.copyfile(path, target)
    with h5py.File(target, "r+") as f:
        found = []
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim >= 2
                     and obj.dtype.kind in "uif" else None)
        images = [n for n in found if n.rsplit("/", 1)[-1].lower() == "data"] or found
        name = max(images, key=lambda n: f[n].size)
        old = f[name]
        shape = (HUGE, HUGE) + tuple(old.shape[2:])
        attrs = dict(old.attrs)
        dtype = old.dtype
        del f[name]
        new = f.create_dataset(name, shape=shape, dtype=dtype, chunks=(256, 256) + tuple(old.shape[2:]))
        for key, value in attrs.items():
            new.attrs[key] = value


def huge(path: Path, target: Path) -> bool:
    """Write ``path`` to ``target`` with its image declared about 100000 x 100000; False if not done."""
    ext = path.suffix.lower()
    if ext in (".emd", ".hspy"):
        _hdf5_huge(path, target)
        return True
    data = path.read_bytes()
    makers = {".mrc": _mrc_huge, ".dm3": _dm_huge, ".dm4": _dm_huge, ".ser": _ser_huge, ".npy": _npy_huge,
              ".png": _png_huge, ".jpg": _jpeg_huge}
    if ext in (".tif", ".tiff"):
        out = _tiff_huge(path, data)
    elif ext in makers:
        out = makers[ext](data)
    else:
        return False
    target.write_bytes(out)
    return out != data


def make_cases(sources: list[Path], folder: Path, seed: int = 0, per_kind: int = 2) -> list[Path]:
    """Mutated copies of each source, one folder per case (with the file's TIA partner copied in).

    Returns
    -------
    list of Path
        The mutated files: ``per_kind`` each of truncate, flip and header, and one huge.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for src in sources:
        data = src.read_bytes()
        kinds = [k for k in ("truncate", "flip", "header") for _ in range(per_kind)] + ["huge"]
        for k, kind in enumerate(kinds):
            case = folder / f"{src.name}.{kind}{k}"
            case.mkdir(parents=True)
            target = case / src.name
            if kind == "huge":
                if not huge(src, target):
                    shutil.rmtree(case)
                    continue
            else:
                target.write_bytes({"truncate": truncate, "flip": flip, "header": header_words}[kind](data, rng))
            for partner in partners(src):
                if partner.is_file():
                    shutil.copyfile(partner, case / partner.name)
            cases.append(target)
    return cases


# --------------------------------------------------------------------------- the child process


def _peak_rss(resource) -> int:
    """This process' peak resident memory in bytes, since its program started.

    ``VmHWM`` of ``/proc/self/status`` where there is one: ``ru_maxrss`` keeps the parent's resident
    size from before ``exec`` (a pytest process with torch and napari loaded: 1.7 GB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read_all(paths: list[str], seconds: int, memory_bytes: int) -> None:
    """Read each path with the plugin's reader; print one JSON line per path (outcome, time, peak RSS)."""
    import resource
    import signal
    import time
    import warnings

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    from napari_stem_defects.io.napari_reader import get_reader
    from napari_stem_defects.io.rsciio_reader import read_stem_file
    from napari_stem_defects.io.stem_image import StemReadError

    class Timeout(Exception):
        pass

    def alarm(*_):
        raise Timeout()

    signal.signal(signal.SIGALRM, alarm)
    warnings.simplefilter("ignore")
    for path in paths:
        t0 = time.perf_counter()
        signal.alarm(seconds)
        try:
            images = read_stem_file(path)
            outcome, message = "ok", repr([(im.data.shape, str(im.data.dtype), im.pixel_size) for im in images])
            reader = get_reader(path)
            if reader is None:
                outcome, message = "error", "get_reader returned None for a readable file"
        except StemReadError as exc:
            outcome, message = "refused", str(exc)
        except Timeout:
            outcome, message = "timeout", f"more than {seconds} s"
        except BaseException as exc:  # noqa: BLE001 - what the test reports
            outcome, message = "error", f"{type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        rss = _peak_rss(resource)
        print(json.dumps({"path": path, "outcome": outcome, "message": message[:400],
                          "seconds": time.perf_counter() - t0, "max_rss": rss}), flush=True)


if __name__ == "__main__":
    _read_all(sys.argv[3:], int(sys.argv[1]), int(sys.argv[2]))
