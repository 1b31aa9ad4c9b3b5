"""The calibration dock widget measures, warns and adopts the lattice's pixel size."""

from __future__ import annotations

import pytest

from napari_stem_defects._widgets.calibration_widget import CalibrationWidget
from napari_stem_defects.simulate import ImagingParams, simulate_twin


def test_widget_flags_a_wrong_scale_and_adopts_the_measured_one(make_napari_viewer):
    viewer = make_napari_viewer()
    twin = simulate_twin("WSe2", (384, 384), 0.11, rotation_deg=9, seed=1, imaging=ImagingParams(dose=1e5))
    wrong = 0.11 * 0.88  # a file 12 % off, like the real WSSe TIFFs
    layer = viewer.add_image(twin.image, scale=(wrong, wrong), metadata={"pixel_size_A": (wrong, wrong)})
    widget = CalibrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer.value is layer
    widget.material.value = "WSe2"
    report = widget._on_measure()
    assert report is not None and not report.ok
    assert widget.adopt.enabled and "off" in widget.result.value
    widget.adopt.clicked.emit()
    assert tuple(layer.scale) == pytest.approx((0.11, 0.11), rel=0.01)
    assert layer.metadata["calibrated"] and "WSe2" in layer.metadata["calibration_source"]
    assert str(layer.units[0]) == "angstrom"


def test_widget_explains_when_there_is_no_lattice(make_napari_viewer):
    import numpy as np

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).poisson(20, (128, 128)).astype(float))
    widget = CalibrationWidget(viewer)
    assert widget._on_measure() is None
    assert "no lattice" in widget.result.value
