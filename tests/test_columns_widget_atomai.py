"""The columns dock's atomai method: a model file chooser and a trust opt-in, without which nothing is loaded."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects.columns import pipeline
from napari_stem_defects.simulate import ImagingParams, simulate_twin


@pytest.fixture
def setup(make_napari_viewer):
    twin = simulate_twin("MoS2", shape=(160, 160), pixel_size=0.12, defects={"V_M": 0.02},
                         imaging=ImagingParams(dose=1e6), seed=8_280_002)
    viewer = make_napari_viewer()
    viewer.add_image(twin.image, name="twin", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                     metadata=twin.metadata)
    widget = ColumnsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_atomai_method_needs_the_trust_opt_in_and_passes_the_file(setup, tmp_path, monkeypatch):
    _, widget = setup
    assert not widget.atomai_file.enabled and not widget.trust.enabled
    widget.method.value = "atomai"
    assert widget.atomai_file.enabled and widget.trust.enabled and not widget.trust.value
    assert "pickle" in widget.trust.tooltip
    model = tmp_path / "mine_metadict_final.tar"
    model.write_bytes(b"not looked at before the opt-in")
    widget.atomai_file.value = model
    refused = widget.run(blocking=True)
    assert not refused.results and "trust" in " ".join(refused.errors.values())
    seen = {}
    real = pipeline.compute_detection_map

    def stand_in(image, method, **kwargs):  # the trained model's map: here the classical one
        seen.update(method=method, model=kwargs.get("model"), trust=kwargs.get("trust_model_file"))
        kwargs.pop("model"), kwargs.pop("trust_model_file")
        dmap = real(image, "classical", **kwargs)
        dmap.method = "atomai"
        return dmap

    monkeypatch.setattr(pipeline, "compute_detection_map", stand_in)
    widget.trust.value = True
    run = widget.run(blocking=True)
    assert seen == {"method": "atomai", "model": str(model), "trust": True}
    assert not run.errors and len(next(iter(run.results.values())).sites) > 50
    assert np.isfinite(next(iter(run.results.values())).sites[["y_px", "x_px"]].to_numpy(float)).all()
