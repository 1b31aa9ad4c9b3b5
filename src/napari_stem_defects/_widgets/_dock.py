"""What every dock of the plugin shares: a scroll area of fixed width, folding sections, the
image / material / run rows, result labels, plots with readable fonts, and the scale bar.

A dock is a :class:`StemDock` (a magicgui ``Container``) whose ``native`` widget is a
scroll area: napari docks that, so a dock never makes the main window taller than the
screen, and its width does not change when results arrive. When several of the plugin's
docks open on the same side of the window they are tabbed together (a person can drag a
tab out again), so on a 1366 x 768 laptop the canvas keeps most of the screen.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton
from magicgui.widgets.bases import Widget
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractSpinBox, QComboBox, QDockWidget, QFrame, QMainWindow, QScrollArea, QSizePolicy, QWidget,
)

from ..layer_calibration import layer_pixel_size
from ..materials import KNOWN_MATERIALS, parse_material

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Width a dock asks for, and the narrowest it can be made (pixels).
DOCK_WIDTH, DOCK_MIN_WIDTH = 370, 300
#: Height below which a dock scrolls rather than squeezing the canvas (pixels).
DOCK_MIN_HEIGHT = 120
#: Font size of the docks' plots (points) and of their legends.
PLOT_FONT_SIZE, PLOT_LEGEND_SIZE = 9, 8
#: Viewers whose scale bar a dock has switched on already (a person may switch it off again).
_SCALE_BAR_SHOWN: weakref.WeakSet = weakref.WeakSet()


class DockScroll(QScrollArea):
    """The scroll area napari docks: fixed preferred width, small minimum height."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.setWidget(body)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        body = self.widget()
        height = 400 if body is None else body.sizeHint().height() + 2
        return QSize(DOCK_WIDTH, int(min(max(height, DOCK_MIN_HEIGHT), 640)))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(DOCK_MIN_WIDTH, DOCK_MIN_HEIGHT)


class TabWithSiblings(QObject):
    """Tabs a newly docked plugin dock onto another of the plugin's docks on the same side (once)."""

    def __init__(self, scroll: QWidget) -> None:
        super().__init__(scroll)
        self._dock: QDockWidget | None = None
        self._done = False
        scroll.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ParentChange:
            parent = obj.parentWidget()
            if isinstance(parent, QDockWidget) and parent is not self._dock:
                self._dock = parent
                parent.dockLocationChanged.connect(self._schedule)
        return False

    def _schedule(self, *_) -> None:
        if not self._done:
            self._done = True
            QTimer.singleShot(0, self._tabify)

    def _tabify(self) -> None:
        dock = self._dock
        window = None if dock is None else dock.parentWidget()
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return
        area = window.dockWidgetArea(dock)
        for other in window.findChildren(QDockWidget):
            if (other is dock or other.isFloating() or not other.isVisible()
                    or window.dockWidgetArea(other) != area):
                continue
            if isinstance(getattr(other.widget(), "_magic_widget", None), StemDock):
                window.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                return


class StemDock(Container):
    """Base of the plugin's docks: a scroll area of fixed width around a column of controls.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the dock works on.

    Notes
    -----
    ``native`` is the scroll area (what napari docks); ``body`` is the widget that holds
    the controls. Sub-classes add their controls with ``extend`` and call :meth:`finish`.
    """

    def __init__(self, viewer: Any) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self.margins = (4, 4, 4, 4)
        body = Container.native.fget(self)
        self._scroll = DockScroll(body)
        self._scroll._magic_widget = self  # napari's dock finds the magicgui widget through it
        self._tabs = TabWithSiblings(self._scroll)
        viewer.layers.events.inserted.connect(lambda *_: show_scale_bar(viewer))
        show_scale_bar(viewer)

    @property
    def native(self) -> Any:
        """The scroll area that napari docks (the controls are in :attr:`body`)."""
        return getattr(self, "_scroll", None) or Container.native.fget(self)

    @property
    def body(self) -> Any:
        """The Qt widget that holds the controls."""
        return Container.native.fget(self)

    def finish(self) -> None:
        """Make long layer names and choices shrink with the dock (:func:`fit_to_width`)."""
        fit_to_width(self.body)

    def run_area(self, run_text: str, run_tip: str, *, what: str,
                 result_tip: str = "what the last run found") -> Container:
        """Make the dock's ``run_button``, ``cancel_button``, ``progress`` bar and ``result`` line
        (:func:`run_controls`, :func:`text_label`); returns the row of the two buttons."""
        self.run_button, self.cancel_button, self.progress, buttons = run_controls(run_text, run_tip, what=what)
        self.result = text_label(tooltip=result_tip)
        return buttons

    def say(self, message: str) -> None:
        """Show a message in the dock's result line and the viewer's status bar."""
        label = getattr(self, "result", None)
        if label is not None:
            label.value = message
        self._viewer.status = message.replace("\n", " ")


class Section(Container):
    """A titled, folding group of controls (a header button that shows or hides them).

    Parameters
    ----------
    title : str
        Header text.
    widgets : iterable of magicgui widgets
        The controls inside.
    expanded : bool
        Shown at first.
    tooltip : str
        What the section holds (the header's tooltip).
    labels : bool
        Put each control's label beside it.
    """

    def __init__(self, title: str, widgets: Iterable[Widget] = (), *, expanded: bool = True, tooltip: str = "",
                 labels: bool = True) -> None:
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self.title = title
        self.header = PushButton(text=title, tooltip=tooltip or f"show or hide '{title}'")
        self.header.native.setCheckable(True)
        self.header.native.setStyleSheet("text-align: left; padding: 2px 6px; font-weight: bold;")
        self.content = Container(labels=labels, widgets=list(widgets))
        self.content.margins = (6, 0, 0, 2)
        self.extend([self.header, self.content])
        self.header.native.toggled.connect(self._show)
        self.header.native.setChecked(bool(expanded))
        self._show(bool(expanded))

    @property
    def expanded(self) -> bool:
        """True when the controls are shown."""
        return bool(self.header.native.isChecked())

    @expanded.setter
    def expanded(self, value: bool) -> None:
        self.header.native.setChecked(bool(value))

    def _show(self, shown: bool) -> None:
        self.header.native.setText(("\u25be " if shown else "\u25b8 ") + self.title)
        self.content.visible = bool(shown)

    def add_native(self, widget: Any) -> None:
        """Add a Qt widget (a plot canvas) below the controls."""
        self.content.native.layout().addWidget(widget)


def fit_to_width(body: QWidget) -> None:
    """Make long layer names and choices in ``body`` shrink with the dock instead of widening it, and give
    the parts of composite controls (a slider's number box) the control's tooltip."""
    for combo in body.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    for part in body.findChildren(QAbstractSpinBox):
        parent = part.parentWidget()
        if part.toolTip() or parent is None:
            continue
        tips = [w.toolTip() for w in parent.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly)
                if w.toolTip()]
        if tips:
            part.setToolTip(tips[0])


def row(*widgets: Widget, label: str = "") -> Container:
    """Controls side by side (buttons of one task), without labels of their own.

    ``label`` names the row in a labelled container (e.g. 'species' before a dropdown and its button).
    """
    box = Container(layout="horizontal", labels=False, widgets=list(widgets), label=label)
    box.margins = (0, 0, 0, 0)
    return box


def text_label(value: str = "", tooltip: str = "") -> Label:
    """A label for results: wraps with the dock's width, text can be selected and copied."""
    label = Label(value=value, tooltip=tooltip or None)
    label.native.setWordWrap(True)
    label.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    # the dock's width decides the label's (long text never widens the dock), and its height follows
    # from the wrapped lines (height for width)
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    policy.setHeightForWidth(True)
    label.native.setSizePolicy(policy)
    label.native.setMinimumWidth(50)
    return label


def run_controls(run_text: str, run_tip: str, *, cancel: bool = True,
                 what: str = "the job") -> tuple[PushButton, PushButton | None, ProgressBar, Container]:
    """The run button (and cancel button) side by side, and a progress bar.

    Returns
    -------
    run_button, cancel_button, progress, row
        ``cancel_button`` is None when ``cancel`` is False; ``row`` holds the buttons.
    """
    run_button = PushButton(text=run_text, tooltip=run_tip)
    cancel_button = (PushButton(text="Cancel", enabled=False,
                                tooltip=f"stop {what} at its next checkpoint") if cancel else None)
    progress = ProgressBar(label="progress", min=0, max=100, value=0,
                           tooltip=f"how much of {what} is done")
    buttons = row(*[w for w in (run_button, cancel_button) if w is not None])
    return run_button, cancel_button, progress, buttons


def layer_choice(viewer: Any, accept: Callable[[Any], bool], *, label: str = "image", tooltip: str,
                 nullable: bool = False) -> ComboBox:
    """A dropdown of the viewer's layers that ``accept`` takes, kept up to date."""
    combo = ComboBox(label=label, choices=lambda *_: [x for x in viewer.layers if accept(x)], nullable=nullable,
                     tooltip=tooltip)
    viewer.layers.events.inserted.connect(combo.reset_choices)
    viewer.layers.events.removed.connect(combo.reset_choices)
    combo.reset_choices()
    return combo


def is_grey_image(layer: Any, ndims: Sequence[int] = (2, 3)) -> bool:
    """A greyscale (not RGB) Image layer of one of ``ndims`` dimensions."""
    from napari.layers import Image

    return isinstance(layer, Image) and not layer.rgb and layer.ndim in ndims


def material_choice(value: str = "MoS2") -> ComboBox:
    """The material dropdown (taken from the image's metadata when it names one); any formula can be typed.

    A typed formula (``W(S,Te)2``, ``Mo0.5W0.5SSe``, ``MoS2+Se``) is checked when the field is left:
    a formula that is not MX2 or names an unknown element is refused with the parser's message in
    the field's tooltip and the previous choice comes back.
    """
    tip = ("the 2D material in the image: sets the lattice constant and the species expected on each site "
           "(taken from the image's metadata when it names one; default MoS2). Type any MX2 formula: alloys "
           "W(S,Te)2 or Mo0.5W0.5SSe, Janus-MoSSe, expected foreign atoms MoS2+Se")
    combo = ComboBox(label="material", choices=list(KNOWN_MATERIALS), value=value, tooltip=tip)
    native = combo.native
    native.setEditable(True)
    native.setInsertPolicy(native.InsertPolicy.NoInsert)

    def typed() -> None:
        text = native.currentText().strip()
        if not text or text == combo.value:
            return
        try:
            parse_material(text)
        except ValueError as err:
            native.setToolTip(f"{err}. {tip}")
            native.setCurrentText(str(combo.value))
            return
        native.setToolTip(tip)
        adopt_material(combo, text)

    native.lineEdit().editingFinished.connect(typed)
    return combo


def adopt_material(combo: ComboBox, name: str | None) -> bool:
    """Select material ``name`` in ``combo`` (adding it as a choice) when it names a material.

    Returns
    -------
    bool
        True when the material was taken.
    """
    if not name:
        return False
    try:
        if parse_material(name) is None:
            return False
    except ValueError:
        return False
    if name not in combo.choices:
        combo.choices = [*combo.choices, name]
    combo.value = name
    return True


def pixel_size(layer: Any) -> tuple[float, float] | None:
    """Å per pixel (y, x) of an image layer, or None (see :mod:`napari_stem_defects.layer_calibration`)."""
    return layer_pixel_size(layer)


def current_frame(viewer: Any, layer: Any) -> int:
    """The stack frame the viewer shows (dims position mapped through the layer's scale)."""
    world = np.asarray(viewer.dims.point, float)[-layer.ndim:]
    frame = int(round(float(layer.world_to_data(world)[0])))
    return int(np.clip(frame, 0, layer.data.shape[0] - 1))


def plot_style(figure: Figure, viewer: Any) -> tuple[dict[str, Any], str]:
    """Match a dock plot to the viewer's theme with readable fonts.

    Returns
    -------
    style : dict
        matplotlib rc parameters for ``matplotlib.rc_context``.
    fg : str
        The theme's text colour (hex), for lines and edges drawn in it.
    """
    from napari.utils.theme import get_theme

    theme = get_theme(viewer.theme)
    fg, bg = theme.text.as_hex(), theme.background.as_hex()
    figure.set_facecolor(bg)
    style = {"text.color": fg, "axes.labelcolor": fg, "axes.edgecolor": fg, "xtick.color": fg,
             "ytick.color": fg, "axes.facecolor": "none", "font.size": PLOT_FONT_SIZE,
             "legend.fontsize": PLOT_LEGEND_SIZE, "legend.frameon": False, "axes.titlesize": PLOT_FONT_SIZE}
    return style, fg


def plot_canvas(height: int = 240) -> tuple[Figure, Any]:
    """A matplotlib figure and its Qt canvas of fixed height that follows the dock's width."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.4, height / 100), dpi=100, layout="constrained")
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(height)
    canvas.setMaximumHeight(height)
    canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    canvas.setMinimumWidth(150)
    canvas.setToolTip("the dock's plot; it redraws after every run")
    return figure, canvas


def show_scale_bar(viewer: Any, calibrated: bool | None = None) -> None:
    """Switch the viewer's scale bar on once a calibrated image is shown (once per viewer).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    calibrated : bool, optional
        Whether a calibrated image is being opened; by default the viewer's layers are looked at.
    """
    from napari.layers import Image

    viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a proxy of the viewer
    if viewer in _SCALE_BAR_SHOWN:
        return
    if calibrated is None:
        calibrated = any(isinstance(x, Image) and layer_pixel_size(x, sync=False) is not None
                         for x in viewer.layers)
    if calibrated:
        scale_bar_of(viewer).visible = True
        _SCALE_BAR_SHOWN.add(viewer)


def show_scale_bar_in_current_viewer(calibrated: bool) -> None:
    """For readers and samples: switch the scale bar of napari's current viewer on (once) for a
    calibrated image. Does nothing without a running napari window."""
    import sys

    if not calibrated or "napari" not in sys.modules:
        return
    import napari

    viewer = napari.current_viewer()
    if viewer is not None:
        show_scale_bar(viewer, calibrated=True)


def scale_bar_of(viewer: Any) -> Any:
    """The viewer's scale bar overlay (``viewer.canvas.overlays`` since napari 0.9)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    try:
        return overlays["scale_bar"]
    except (TypeError, KeyError):
        return viewer.scale_bar


__all__ = [
    "DOCK_MIN_WIDTH", "DOCK_WIDTH", "DockScroll", "Section", "StemDock", "TabWithSiblings", "adopt_material",
    "current_frame", "fit_to_width", "is_grey_image",
    "layer_choice", "material_choice", "pixel_size", "plot_canvas", "plot_style", "row", "run_controls",
    "scale_bar_of", "show_scale_bar", "show_scale_bar_in_current_viewer", "text_label",
]
