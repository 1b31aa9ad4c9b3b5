"""Never overwrite an annotation file that could not be read: keep it aside first.

:func:`~.store.save_annotations` calls :func:`keep_earlier_file` before it
writes. A file already at the target is overwritten only when it is a
readable annotation file of the same image (same hash). Otherwise it is
renamed, in the same folder, to

* ``<name>.damaged-<YYYYmmdd-HHMMSS>`` when it cannot be read (cut short,
  hand-edited, not an annotation file, unreadable), or
* ``<name>.replaced-<YYYYmmdd-HHMMSS>`` when it holds the annotations of
  another image (or of an earlier version of this image file),

and the caller is told where. Nothing a person corrected is lost: the old
file's bytes are kept as they were, and
:func:`~.recovery.recover_annotations` reads what can be read from it.

To keep autosaves cheap, a file this process wrote or read successfully is
remembered by its identity (device, inode, size, modification time) and
image hash; only a file not known that way is read again before it is
replaced.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

__all__ = ["EarlierFileKept", "aside_path", "forget", "keep_earlier_file", "remember_good"]

_LOCK = threading.Lock()
#: Absolute path -> (device, inode, size, mtime_ns, image sha256) of files known to be good.
_GOOD: dict[str, tuple[int, int, int, int, str]] = {}


class EarlierFileKept(UserWarning):
    """An annotation file that could not be read (or belonged to another image) was kept aside, not overwritten."""


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remember_good(path: str | os.PathLike, sha256: str) -> None:
    """Remember that ``path``, as it is now, is a readable annotation file of the image ``sha256``."""
    ident = _identity(Path(path))
    if ident is not None:
        with _LOCK:
            _GOOD[os.path.abspath(path)] = (*ident, str(sha256))


def forget(path: str | os.PathLike) -> None:
    """Forget what was remembered about ``path``."""
    with _LOCK:
        _GOOD.pop(os.path.abspath(path), None)


def aside_path(target: str | os.PathLike, why: str) -> Path:
    """A free name beside ``target``: ``<name>.<why>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken).

    Examples
    --------
    >>> aside_path("/tmp/a.json", "damaged").name.startswith("a.json.damaged-")
    True
    """
    target = Path(target)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = target.with_name(f"{target.name}.{why}-{stamp}")
    k = 2
    while os.path.lexists(candidate):
        candidate = target.with_name(f"{target.name}.{why}-{stamp}-{k}")
        k += 1
    return candidate


def keep_earlier_file(target: str | os.PathLike, sha256: str) -> str | None:
    """Move the file at ``target`` aside unless it is a readable annotation file of the image ``sha256``.

    Parameters
    ----------
    target : str or Path
        The annotation file about to be written.
    sha256 : str
        Hash of the image the new annotations belong to.

    Returns
    -------
    str or None
        A message saying what was kept and where, or None when nothing had to be kept.

    Raises
    ------
    OSError
        The earlier file could not be moved aside; nothing must be written then.
    """
    from .store import load_annotations

    target = Path(target)
    ident = _identity(target)
    if ident is None:
        return None
    with _LOCK:
        known = _GOOD.get(os.path.abspath(target))
    if known is not None and known[:4] == ident:
        if known[4] == sha256:
            return None
        why, reason = "replaced", None
    else:
        try:
            earlier = load_annotations(target)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - whatever the reason, it could not be read
            why, reason = "damaged", str(exc).replace(f"{target}: ", "")
        else:
            if earlier.image.sha256 == sha256:
                return None
            why, reason = "replaced", None
    aside = aside_path(target, why)
    try:
        os.rename(target, aside)
    except OSError as exc:
        raise OSError(f"{target} could not be read, and it could not be kept aside as {aside.name} ({exc}); "
                      "nothing was written so that it is not lost. Move or repair it, then save again") from exc
    forget(target)
    if why == "damaged":
        return (f"The earlier annotation file {target.name} could not be read ({reason}); it was kept, untouched, "
                f"as {aside} and the annotations were saved to a new {target.name}. Nothing in it was overwritten: "
                "napari_stem_defects.annotations.recover_annotations reads what can be read from it.")
    return (f"The earlier annotation file {target.name} belonged to another image (or an earlier version of this "
            f"image file); it was kept as {aside} and the annotations were saved to a new {target.name}.")
