"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the plugin writes goes through :func:`atomic_path`: the content is
written to a hidden temporary file beside the target
(``.<name>.<8 random characters>.tmp<suffix>``), flushed to disk, and renamed
over the target in one step.

Decisions
---------
* **Permissions.** A new file gets the mode the user's umask gives any new
  file (``0o666 & ~umask``, e.g. ``0o644``), so colleagues sharing a folder
  can read results and annotations; a file that is replaced keeps its own
  mode. (``tempfile.mkstemp`` alone would leave every file ``0o600``.)
* **Temporary files left by a killed process** (SIGKILL, power loss) are
  removed by the next write of the same target and when its annotations are
  opened (:func:`remove_stale_temporaries`): only names of exactly our
  pattern, only plain files older than :data:`STALE_AFTER_S`, and only when no
  process holds them: the writer keeps an exclusive ``flock`` on its
  temporary file until the rename, and a file that is locked is left alone.
  Where ``flock`` is not available (Windows), only files older than
  :data:`STALE_AFTER_NO_LOCK_S` are removed.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX advisory locks: a temporary file being written is locked by its writer
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["STALE_AFTER_NO_LOCK_S", "STALE_AFTER_S", "atomic_path", "atomic_save_npy", "atomic_write",
           "atomic_write_text", "current_umask", "json_default", "remove_stale_temporaries", "temporary_pattern"]

#: A temporary file younger than this (seconds) is never removed (it may be about to be locked).
STALE_AFTER_S = 2.0
#: Without ``flock``, a temporary file must be this old (seconds) to count as left behind.
STALE_AFTER_NO_LOCK_S = 3600.0
#: Characters of ``tempfile``'s random names.
_RANDOM = "[a-z0-9_]{8}"
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process' umask, read without changing it where the system allows (Linux).

    Examples
    --------
    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(target: Path) -> int:
    """The mode of the file about to replace ``target``: its own, or what the umask gives a new file."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def temporary_pattern(target: str | os.PathLike) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporary files of ``target`` (a compiled regex).

    Examples
    --------
    >>> bool(temporary_pattern("a.json").match(".a.json.x1_y2z3w.tmp.json"))
    True
    >>> bool(temporary_pattern("a.json").match(".b.json.x1_y2z3w.tmp.json"))
    False
    """
    p = Path(target)
    return re.compile(r"\A\." + re.escape(p.name) + r"\." + _RANDOM + r"\.tmp" + re.escape(p.suffix) + r"\Z")


def _is_locked(path: str) -> bool:
    """True when another open file description holds a lock on ``path`` (or it cannot be checked)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed writer left beside ``target``.

    Only plain files named exactly as :func:`atomic_path` names them for this
    target, older than :data:`STALE_AFTER_S` and not locked by a writer (or,
    without ``flock``, older than :data:`STALE_AFTER_NO_LOCK_S`). Errors are
    ignored: cleaning up never stops a save or an open.

    Parameters
    ----------
    target : str or Path
        The file whose leftovers to remove.

    Returns
    -------
    list of Path
        The files removed.
    """
    target = Path(target)
    pattern = temporary_pattern(target)
    min_age = STALE_AFTER_S if fcntl is not None else STALE_AFTER_NO_LOCK_S
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < min_age:
                continue
            if fcntl is not None and _is_locked(entry.path):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success flush it to disk and rename it over ``path``.

    If the body raises, the temporary file is removed and ``path`` is left as
    it was. The new file gets the umask's permissions (or the replaced file's
    own); temporary files a killed writer left for ``path`` are removed first
    (see the module notes).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    mode = _mode_for(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    tmp = Path(tmp_name)
    if fcntl is None:  # pragma: no cover - Windows cannot rename a file it holds open
        os.close(fd)
        fd = -1
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass
        yield tmp
        if fd >= 0:
            try:
                os.fsync(fd)  # the same inode: what the body wrote through its own handle reaches the disk
            except OSError:
                pass
        os.replace(tmp, target)
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        finally:
            if fd >= 0:
                os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_save_npy(path: str | os.PathLike, array) -> None:
    """Save ``array`` as ``.npy`` at exactly ``path`` (no suffix added), atomically."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save adds no suffix
            np.save(f, array)
    atomic_write(path, write)


def json_default(obj):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as plain values."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
