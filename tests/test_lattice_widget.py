"""The Lattice analysis dock measures a relaxed twin in a real viewer: maps, profiles and gallery."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from napari_stem_defects._widgets.cells_widget import CellsWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects._widgets.lattice_widget import (
    MAP_LAYERS,
    REFERENCES,
    LatticeWidget,
)
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.strain_field import UniformStrain

SCREEN = (1366, 768)


@pytest.fixture(scope="module")
def twin():
    field = UniformStrain(exx=0.01, centre=(160, 160))
    return simulate_twin("MoS2", shape=(320, 320), pixel_size=0.12, rotation_deg=10,
                         defects={"V_M": 0.04, "V_X2": 0.04}, imaging=ImagingParams(dose=1e6), seed=6,
                         displacement=field)


@pytest.fixture
def setup(make_napari_viewer, twin, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.setGeometry(0, 0, *SCREEN)
    image = viewer.add_image(twin.image, name="twin", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                             metadata=twin.metadata)
    assert ColumnsWidget(viewer).run(blocking=True).results
    cells = CellsWidget(viewer)
    cells.classifier.value = "physics"
    assert not cells.run(blocking=True).error
    widget = LatticeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lattice analysis")
    return viewer, image, widget


def test_dock_shows_maps_profiles_and_gallery(setup, qtbot):
    viewer, image, widget = setup
    assert widget.layer.value is image and widget.points.value is viewer.layers["twin columns"]
    widget.reference.value = REFERENCES[1]  # the material's nominal lattice: the applied 1 % shows
    run = widget.run(blocking=True)
    assert run is not None and run is widget.last_run
    for suffix, k, factor in MAP_LAYERS:
        layer = viewer.layers[f"twin {suffix}"]
        assert tuple(layer.scale) == pytest.approx(tuple(image.scale))
        lo, hi = layer.contrast_limits
        assert lo == pytest.approx(-hi) and hi > 0
        assert layer.colormap.name == "coolwarm"
    exx = viewer.layers["twin exx (%)"].data
    assert np.nanmedian(exx) == pytest.approx(1.0, abs=0.15)  # percent
    assert np.nanmedian(viewer.layers["twin eyy (%)"].data) == pytest.approx(0.0, abs=0.15)
    assert "exx +" in widget.result.value and "V_M" in widget.result.value
    axes = widget.profile_figure.axes
    assert len(axes) == 2 and all(len(ax.lines) >= 1 for ax in axes)
    titles = [ax.get_title() for ax in widget.gallery_figure.axes]
    assert any(t.startswith("V_M n=") for t in titles)
    # the dock fits a 1366 x 768 screen
    qtbot.wait(200)
    window = viewer.window._qt_window
    assert window.frameGeometry().height() <= SCREEN[1]
    assert widget.native.width() <= 0.5 * SCREEN[0]
    window.grab().save("/tmp/lattice_dock.png")
    QApplication.processEvents()


def test_region_reference_without_a_region_says_so(setup):
    _viewer, _image, widget = setup
    widget.reference.value = REFERENCES[2]
    assert widget.run(blocking=True) is None
    assert "reference region" in widget.result.value


def test_region_reference_uses_the_drawn_region(setup):
    viewer, _image, widget = setup
    viewer.add_shapes([np.array([[0, 0], [0, 15], [38, 15], [38, 0]])], shape_type="rectangle", name="ref",
                      scale=(1.0, 1.0))
    widget.region.reset_choices()
    widget.region.value = viewer.layers["ref"]
    widget.reference.value = REFERENCES[2]
    run = widget.run(blocking=True)
    assert run is not None
    assert abs(np.nanmedian(run.site_values["exx"])) < 2e-3  # the region shares the image's 1 % strain


def test_no_sites_gives_a_message(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 64)), name="noise")
    widget = LatticeWidget(viewer)
    assert widget.run(blocking=True) is None
