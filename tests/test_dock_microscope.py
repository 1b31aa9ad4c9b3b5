"""The docks' shared Microscope row: typed settings reach the algorithm, a file's settings fill it in."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects._widgets.batch_widget import BatchWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects.columns import pipeline
from napari_stem_defects.columns.context_classifier import apply_context_classifier
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.microscope import typed_settings


@pytest.fixture(scope="module")
def twin():
    return simulate_twin("WSe2", shape=(192, 192), pixel_size=0.12, defects={"V_X2": 0.03},
                         imaging=ImagingParams(dose=1e6), seed=5)


@pytest.fixture
def spy(monkeypatch):
    """The microscope settings of every columns_from_map call (the dock calls it through the pipeline module)."""
    seen = []
    real = pipeline.columns_from_map

    def columns_from_map(*args, **kwargs):
        seen.append(kwargs.get("microscope"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "columns_from_map", columns_from_map)
    return seen


def _dock(make_napari_viewer, twin, **metadata):
    viewer = make_napari_viewer()
    layer = viewer.add_image(twin.image, name="twin", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                             metadata={**twin.metadata, **metadata})
    return layer, ColumnsWidget(viewer)


def test_typed_settings_reach_the_detection(make_napari_viewer, twin, spy):
    layer, widget = _dock(make_napari_viewer, twin)
    row = widget.microscope
    assert [f.value for f in row.fields] == [0.0] * 4 and row.kv.native.text() == "not given"
    run = widget.run(blocking=True)
    assert spy == [None] and not run.errors  # nothing typed: Z^1.7 as before

    row.kv.value, row.convergence.value, row.inner.value, row.outer.value = 60.0, 28.0, 50.0, 200.0
    run = widget.run(blocking=True)
    typed = typed_settings(60.0, 28.0, (50.0, 200.0))
    assert spy[-1] == typed
    # the same sites and species as the algorithm called directly with these settings
    direct = pipeline.detect_columns(twin.image, material="WSe2", pixel_size=(0.12, 0.12), microscope=typed)
    assert widget.species_by.value == "context"  # the default: the context classifier, told the same settings
    apply_context_classifier(direct, twin.image, parse_material("WSe2"), typed)
    shown = run.results[None].sites
    assert len(shown) == len(direct.sites)
    assert (shown["species"].astype(str).to_numpy() == direct.sites["species"].astype(str).to_numpy()).all()
    assert np.allclose(shown[["y_px", "x_px"]].to_numpy(float), direct.sites[["y_px", "x_px"]].to_numpy(float),
                       equal_nan=True)
    assert "multislice table at 60 kV, 28 mrad, ADF 50-200 mrad" in widget.details.value
    # the typed values stay with the image
    assert layer.metadata["beam_energy_keV"] == 60.0 and layer.metadata["collection_angles_mrad"] == (50.0, 200.0)


def test_file_settings_fill_the_row_and_bad_values_are_said(make_napari_viewer, twin, spy):
    layer, widget = _dock(make_napari_viewer, twin, beam_energy_keV=80.0, collection_angles_mrad=(70.0, 200.0))
    row = widget.microscope
    assert (row.kv.value, row.inner.value, row.outer.value, row.convergence.value) == (80.0, 70.0, 200.0, 0.0)
    widget.run(blocking=True)
    assert spy[-1] == typed_settings(80.0, 30.0, (70.0, 200.0))

    row.kv.value = 40.0  # outside the multislice table: detected without it, and the dock says why
    run = widget.run(blocking=True)
    assert spy[-1] is None and run.results
    assert "outside 60-300 kV" in widget.result.value


def test_a_files_beam_energy_without_its_detector_is_not_completed_with_defaults(make_napari_viewer, twin, spy,
                                                                                  monkeypatch):
    """As `analyze` does not guess a detector the file does not record, the dock does not either: the context
    classifier is told the file's beam energy alone, and the dock says how to use the table. A beam energy the
    person types is completed with the defaults, as `analyze --kv`."""
    from napari_stem_defects._widgets import columns_widget

    told = []
    real = columns_widget.apply_context_classifier

    def classifier(*args, **kwargs):
        told.append((args[3], kwargs.get("energy_kV")))
        return real(*args, **kwargs)

    monkeypatch.setattr(columns_widget, "apply_context_classifier", classifier)
    layer, widget = _dock(make_napari_viewer, twin, beam_energy_keV=80.0)
    row = widget.microscope
    assert (row.kv.value, row.inner.value, row.outer.value) == (80.0, 0.0, 0.0)
    widget.run(blocking=True)
    assert spy[-1] is None and told[-1] == (None, 80.0)
    assert "records 80 kV but not its detector angles" in widget.result.value
    row.kv.value = 60.0  # typed: the defaults of `analyze --kv`
    widget.run(blocking=True)
    assert spy[-1] == typed_settings(60.0, 30.0, (70.0, 200.0)) and told[-1][0] == spy[-1]


def test_batch_takes_the_typed_settings(make_napari_viewer):
    widget = BatchWidget(make_napari_viewer())
    assert widget.settings().microscope is None
    row = widget.microscope
    row.kv.value, row.inner.value, row.outer.value = 200.0, 60.0, 180.0
    assert widget.settings().microscope == typed_settings(200.0, 30.0, (60.0, 180.0)).as_dict()
    row.inner.value = 20.0  # inside the convergence cone: refused before any file
    with pytest.raises(ValueError, match="must exceed the convergence angle"):
        widget.settings()
