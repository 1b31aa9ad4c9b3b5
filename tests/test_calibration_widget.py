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


def test_a_typed_or_file_pixel_size_reaches_every_dock_and_the_statistics(make_napari_viewer):
    from napari_stem_defects._widgets.calibration_widget import TYPED
    from napari_stem_defects.layer_calibration import calibration_note, layer_pixel_size

    viewer = make_napari_viewer()
    twin = simulate_twin("MoS2", (256, 256), 0.12, seed=2, imaging=ImagingParams(dose=1e6))
    layer = viewer.add_image(twin.image, name="scan", metadata={"pixel_size_A": None, "calibrated": False})
    widget = CalibrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert layer_pixel_size(layer) is None and "uncalibrated" in widget.current.value
    assert "no pixel size" in widget.file_value.value and not widget.use_file.enabled
    widget.size_y.value = 0.125
    assert widget.size_x.value == pytest.approx(0.125)  # square pixels: x follows y
    assert widget.set_typed()
    assert tuple(layer.scale) == pytest.approx((0.125, 0.125)) and str(layer.units[-1]) == "angstrom"
    assert layer.metadata["calibrated"] and layer.metadata["calibration_source"] == TYPED
    assert calibration_note(layer) == f"pixel size 0.1250 Å/px ({TYPED})"
    assert "0.1250" in widget.current.value

    widget.square.value = False
    widget.size_x.value = 0.13
    assert widget.set_typed() and tuple(layer.scale) == pytest.approx((0.125, 0.13))

    # a scale set from the console counts too, and the dock shows it
    layer.scale = (0.12, 0.12)
    assert layer_pixel_size(layer) == pytest.approx((0.12, 0.12))
    assert layer.metadata["calibrated"] and layer.metadata["calibration_source"] == "layer scale"
    assert widget.size_y.value == pytest.approx(0.12)

    # the lattice's value, with the spots it fitted drawn on the power spectrum
    report = widget._on_measure()
    assert report is not None and "Lattice: 0.12" in widget.lattice_value.value
    ax = widget.figure.axes[0]
    assert len(ax.images) == 1 and sum(len(c.get_offsets()) for c in ax.collections) >= 6


def test_file_value_and_microscope_settings(make_napari_viewer):
    viewer = make_napari_viewer()
    twin = simulate_twin("MoS2", (128, 128), 0.12, seed=2)
    layer = viewer.add_image(twin.image, scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                             metadata={**twin.metadata, "beam_energy_keV": 80.0})
    widget = CalibrationWidget(viewer)
    assert "File: 0.1200" in widget.file_value.value and widget.kv.value == 80.0
    widget.size_y.value = 0.1
    widget.set_typed()
    assert widget.use_file.enabled and widget.use_file_value()
    assert tuple(layer.scale) == pytest.approx((0.12, 0.12)) and layer.metadata["calibration_source"] == "file"
    widget.inner.value, widget.outer.value, widget.kv.value = 60.0, 200.0, 300.0
    assert layer.metadata["collection_angles_mrad"] == (60.0, 200.0) and layer.metadata["beam_energy_keV"] == 300.0
    widget.inner.value = 250.0  # inner above outer: refused with a message, the last good values stay
    assert layer.metadata["collection_angles_mrad"] == (60.0, 200.0) and "not stored" in widget.result.value
