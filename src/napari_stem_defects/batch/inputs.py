"""Which files a batch analyses: files, folders (recursively, by the extensions we read) and globs.

Each file gets a relative path, under which its results are written: the
path from the deepest folder all inputs share (a folder input counts as
itself, a file or glob as the folder it is in). A file's content hash
(SHA-256 of its bytes, and of a TIA ``.ser``'s ``.emi`` beside it) tells a
re-run whether it changed.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io.rsciio_reader import SUPPORTED_EXTENSIONS

#: Bytes read at a time when hashing a file.
_BLOCK = 4 * 2**20
_TIA_SER = re.compile(r"(.+)_\d+$")


@dataclass(frozen=True)
class InputFile:
    """One file of a batch.

    Attributes
    ----------
    path : Path
        Absolute path.
    rel : str
        Path relative to the inputs' common folder, with '/' separators
        (``day1/scan_001.dm4``); the file's results go to ``OUT/<rel>/``.
    """

    path: Path
    rel: str


def collect_inputs(inputs: Sequence[str | Path], exclude: Iterable[str | Path] = ()) -> list[InputFile]:
    """Expand files, folders and glob patterns into the files a batch analyses, sorted by relative path.

    Parameters
    ----------
    inputs : sequence of str or Path
        Files (any extension: a file we cannot read is reported by the
        batch, not dropped), folders (searched recursively for the extensions
        we read, hidden folders skipped) and glob patterns (``**`` allowed).
    exclude : iterable of str or Path
        Folders whose files are never inputs (the batch's output folder).

    Returns
    -------
    list of InputFile
        Each file once, sorted by ``rel``. A TIA ``.emi`` is dropped when its
        ``_1.ser`` data file is an input too (the ``.ser`` is read through it).

    Raises
    ------
    FileNotFoundError
        An input that is neither a file, a folder, nor a pattern matching a file.
    """
    skip = [Path(p).resolve() for p in exclude]
    found: dict[Path, Path] = {}  # file -> the root its relative path starts from
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            root = path.resolve()
            for file in _walk(root, skip):
                found.setdefault(file, root)
        elif path.is_file():
            file = path.resolve()
            found.setdefault(file, file.parent)
        elif glob.has_magic(text):
            matches = sorted(Path(m).resolve() for m in glob.glob(os.path.expanduser(text), recursive=True))
            matches = [m for m in matches if m.is_file() and not _under(m, skip)]
            if not matches:
                raise FileNotFoundError(f"{text}: the pattern matches no file")
            root = _glob_root(text)
            for file in matches:
                found.setdefault(file, root if _under(file, [root]) else file.parent)
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
    files = _drop_emi_with_ser(found)
    if not files:
        return []
    common = Path(os.path.commonpath([str(root) for root in files.values()]))
    out = [InputFile(file, file.relative_to(common).as_posix()) for file in files]
    return sorted(out, key=lambda f: f.rel)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (and, for a TIA ``name_1.ser``, of its ``name.emi`` beside it).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "a.npy"; _ = p.write_bytes(b"abc")
    ...     file_sha256(p)[:16]
    'ba7816bf8f01cfea'
    """
    path = Path(path)
    digest = hashlib.sha256()
    for part in [path, *_companions(path)]:
        with open(part, "rb") as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def _companions(path: Path) -> list[Path]:
    """Files read together with ``path`` (the ``.emi`` of a TIA ``.ser``)."""
    if path.suffix.lower() != ".ser":
        return []
    match = _TIA_SER.fullmatch(path.stem)
    emi = path.with_name(match.group(1) + ".emi") if match else None
    return [emi] if emi is not None and emi.is_file() else []


def _walk(root: Path, skip: list[Path]) -> list[Path]:
    """Readable files under ``root``, hidden folders and ``skip`` left out."""
    files = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _under(here / d, skip))
        files += [here / n for n in sorted(names)
                  if not n.startswith(".") and Path(n).suffix.lower() in SUPPORTED_EXTENSIONS]
    return files


def _under(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _glob_root(pattern: str) -> Path:
    """The folder before a pattern's first wildcard (``data/*/x*.dm4`` -> ``data``)."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed).resolve() if fixed else Path.cwd()


def _drop_emi_with_ser(found: dict[Path, Path]) -> dict[Path, Path]:
    """Leave out ``name.emi`` when ``name_<k>.ser`` is an input (the same data, read through the .emi)."""
    sers = {f.parent / (m.group(1) + ".emi") for f in found if f.suffix.lower() == ".ser"
            for m in [_TIA_SER.fullmatch(f.stem)] if m}
    return {f: root for f, root in found.items() if not (f.suffix.lower() == ".emi" and f in sers)}


__all__ = ["InputFile", "collect_inputs", "file_sha256"]
