"""The annotator's name: set once in the "Correct labels" dock, remembered across sessions (Qt settings).

Every annotation file the dock saves records it as ``saved_by``
(:func:`~napari_stem_defects.annotations.store.save_annotations`), so several people's files
of one image can be merged into consensus labels
(:mod:`napari_stem_defects.annotations.consensus`).
"""

from __future__ import annotations

from qtpy.QtCore import QSettings

from ..provenance import current_user

#: The settings key of the name.
KEY = "annotations/annotator"


def _settings() -> QSettings:
    """The plugin's user settings (an INI file in the user's configuration folder)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "napari-stem-defects", "settings")


def stored_annotator() -> str:
    """The name set last, else the login name ("" when there is none)."""
    value = _settings().value(KEY, "")
    name = str(value).strip() if value else ""
    return name or (current_user() or "")


def store_annotator(name: str) -> None:
    """Remember ``name`` (stripped) as the annotator's name; a blank name forgets it."""
    settings = _settings()
    if str(name).strip():
        settings.setValue(KEY, str(name).strip())
    else:
        settings.remove(KEY)
    settings.sync()
