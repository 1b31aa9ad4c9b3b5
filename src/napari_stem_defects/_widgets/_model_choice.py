"""The "model" dropdown of the docks that run a network: the shipped weights or a fine-tuned version.

The list is read from :mod:`napari_stem_defects.model_registry` and re-read whenever the dock is
shown, and in every open dock after a training (:func:`notify_models_changed`).
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox
from qtpy.QtCore import QEvent, QObject

from ..model_registry import SHIPPED, list_models, model_path

log = logging.getLogger(__name__)
#: Dropdowns alive, re-listed by :func:`notify_models_changed`.
_LIVE: weakref.WeakSet = weakref.WeakSet()


class _OnShow(QObject):
    """Calls ``callback`` whenever the watched Qt widget is shown."""

    def __init__(self, widget: Any, callback: Any) -> None:
        super().__init__(widget)
        self._callback = callback
        widget.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Show:
            self._callback()
        return False


class ModelChoice(ComboBox):
    """A ComboBox of the model versions of one kind ('cells' or 'columns'), 'shipped' first.

    Parameters
    ----------
    kind : {'cells', 'columns'}
        Which network's versions to list.
    dock : QWidget
        The dock's Qt widget: the list is re-read whenever it is shown.
    tooltip : str
        What the choice is for.
    """

    def __init__(self, kind: str, dock: Any, tooltip: str) -> None:
        self.kind = kind
        super().__init__(label="model", choices=self._names, value=SHIPPED, tooltip=tooltip)
        self._show_filter = _OnShow(dock, self.refresh)
        _LIVE.add(self)

    def _names(self, *_) -> list[str]:
        try:
            return list(list_models(self.kind))
        except OSError as err:  # an unreadable models folder must not break the dock
            log.warning("cannot list the %s models (%s)", self.kind, err)
            return [SHIPPED]

    def refresh(self) -> None:
        """Re-list the versions, keeping the chosen one when it still exists."""
        self.reset_choices()

    def path(self, name: str | None = None) -> Path:
        """Weights file of ``name`` (default: the chosen version)."""
        return model_path(self.kind, name or self.value or SHIPPED)


def notify_models_changed() -> None:
    """Re-list the model versions in every open dock (after a training)."""
    for choice in list(_LIVE):
        try:
            choice.refresh()
        except RuntimeError:  # its Qt widget was deleted
            pass


__all__ = ["ModelChoice", "notify_models_changed"]
