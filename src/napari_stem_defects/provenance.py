"""Who wrote a file, when, and with which software: the provenance entries of our JSON files."""

from __future__ import annotations

import getpass
from datetime import datetime, timezone

from . import __version__


def current_user() -> str | None:
    """The login name, or None where the environment has none (some containers)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  (getpass raises different errors on different systems)
        return None


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-11-22T06:51:08+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def software() -> str:
    """``napari-stem-defects <version>``."""
    return f"napari-stem-defects {__version__}"


def provenance(created_key: str = "created", by_key: str = "created_by") -> dict[str, str | None]:
    """``{created_key: now, by_key: user, "software": ...}`` for a file being written."""
    return {created_key: now_iso(), by_key: current_user(), "software": software()}
