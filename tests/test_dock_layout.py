"""All the plugin's docks open at once on a 1366 x 768 laptop screen: the window stays on the screen, the
canvas keeps most of it, every dock scrolls and keeps its width, and every control explains itself."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import (
    QAbstractButton, QAbstractItemView, QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox, QDockWidget,
    QLineEdit, QScrollArea, QScrollBar, QWidget,
)

from napari_stem_defects._widgets._dock import DOCK_MIN_WIDTH, StemDock

PLUGIN = "napari-stem-defects"
DOCKS = ("Check pixel calibration", "Detect atom columns", "Classify unit cells", "Defect heatmaps", "Dynamics",
         "Correct labels", "Train a model", "Lattice analysis", "Consensus labels")
SCREEN = (1366, 768)
#: Qt widgets a person operates (a scroll bar of a scroll area is not a control of the dock).
CONTROLS = (QAbstractButton, QComboBox, QAbstractSpinBox, QAbstractSlider, QLineEdit, QAbstractItemView)


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_STEM_DEFECTS_MODELS", str(tmp_path / "models"))


@pytest.fixture
def laptop(make_napari_viewer, qtbot):
    """A shown viewer filling a 1366 x 768 screen, a sample open, and every dock opened from the plugin menu."""
    screen = QApplication.primaryScreen().geometry()
    assert (screen.width(), screen.height()) == SCREEN, "the test display must be a 1366 x 768 laptop screen"
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.setGeometry(0, 0, *SCREEN)
    viewer.open_sample(PLUGIN, "mos2_vacancies")
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in DOCKS}
    qtbot.wait(300)  # the docks tab together on the next turns of the event loop
    return viewer, docks  # (not the window: napari's leak check wants its QtViewer gone after the test)


def _controls(dock: StemDock) -> list[QWidget]:
    """The dock's visible controls (not the parts inside a composite control, nor scroll bars)."""
    found = []
    for widget in dock.body.findChildren(QWidget):
        if not isinstance(widget, CONTROLS) or isinstance(widget, QScrollBar):
            continue
        parent = widget.parentWidget()
        if isinstance(parent, (QComboBox, QAbstractSpinBox, QAbstractItemView)):
            continue  # the line edit of a spin box, the list of a combo box
        found.append(widget)
    return found


def _tooltip(widget: QWidget, dock: StemDock) -> str:
    """The widget's tooltip, or that of the composite control it is part of (a slider with its readout)."""
    while widget is not None and widget is not dock.body:
        if widget.toolTip():
            return widget.toolTip()
        widget = widget.parentWidget()
    return ""


def test_all_docks_fit_the_screen_and_leave_the_canvas_most_of_it(laptop, qtbot):
    viewer, docks = laptop
    window = viewer.window._qt_window
    assert all(isinstance(dock, StemDock) for dock in docks.values())
    assert window.frameGeometry().height() <= SCREEN[1] and window.frameGeometry().width() <= SCREEN[0]
    height, width = viewer.canvas.size
    assert height >= 0.6 * SCREEN[1] and width >= 0.45 * SCREEN[0], (height, width)
    # the docks are tabbed together on one side: one of them shows, with the canvas's full height
    wrappers = [dock.native.parentWidget() for dock in docks.values()]
    assert all(isinstance(w, QDockWidget) for w in wrappers)
    assert len({window.dockWidgetArea(w) for w in wrappers}) == 1
    assert sum(not w.visibleRegion().isEmpty() for w in wrappers) == 1
    assert all(len(window.tabifiedDockWidgets(w)) == len(DOCKS) - 1 for w in wrappers)


def test_every_dock_scrolls_and_keeps_its_width_when_results_arrive(laptop, qtbot):
    viewer, docks = laptop
    window = viewer.window._qt_window
    for name, dock in docks.items():
        scroll = dock.native
        assert isinstance(scroll, QScrollArea) and scroll.widget() is dock.body and scroll.widgetResizable(), name
        assert scroll.minimumSizeHint().height() <= 150, name  # a dock never forces the window taller
        assert scroll.minimumSizeHint().width() <= DOCK_MIN_WIDTH, name
    wrapper = docks["Correct labels"].native.parentWidget()
    before = wrapper.width()
    columns, cells = docks["Detect atom columns"], docks["Classify unit cells"]
    assert columns.run(blocking=True).results and not cells.run(blocking=True).error
    wrapper.raise_()
    qtbot.wait(100)
    correct = docks["Correct labels"]
    scroll = correct.native
    assert scroll.verticalScrollBar().maximum() > 0  # taller than the screen: it scrolls
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    assert correct.save_button.native.visibleRegion().isEmpty() is False  # "Save annotations" is reachable
    assert wrapper.width() == before  # results did not widen the docks
    assert window.frameGeometry().height() <= SCREEN[1]
    for dock in (columns, cells):
        dock.native.parentWidget().raise_()
        qtbot.wait(50)
        assert dock.native.width() == before and dock.body.width() <= dock.native.viewport().width()


def test_every_control_has_a_tooltip(laptop):
    _, docks = laptop
    missing = []
    for name, dock in docks.items():
        assert not dock.body.toolTip()  # a tooltip on the whole dock would hide the missing ones
        controls = _controls(dock)
        assert len(controls) >= 3, name
        missing += [f"{name}: {type(w).__name__} {getattr(w, 'text', lambda: '')()!r}"
                    for w in controls if not _tooltip(w, dock).strip()]
    assert not missing, "controls without a tooltip:\n" + "\n".join(missing)
