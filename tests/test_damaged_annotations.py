"""The data-loss scenario of the QA report, in a real viewer: a damaged annotation file, the image reopened,
corrections made again and autosaved. Every earlier correction must survive: recovered into the new file
where the damaged one could be read, and the damaged file itself kept, byte for byte, never overwritten."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects._widgets.cells_widget import CellsWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects._widgets.correct_widget import CorrectWidget
from napari_stem_defects.annotations import load_annotations, recover_annotations, sidecar_path
from napari_stem_defects.simulate.presets import mos2_vacancies

PLUGIN = "napari-stem-defects"


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    """Model versions and autosaves go to a temporary folder, never the user's."""
    monkeypatch.setenv("NAPARI_STEM_DEFECTS_MODELS", str(tmp_path / "user" / "models"))


@pytest.fixture(scope="module")
def sample_image() -> np.ndarray:
    return np.ascontiguousarray(mos2_vacancies().image[:256, :256])


def _docks(viewer):
    docks = [ColumnsWidget(viewer), CellsWidget(viewer), CorrectWidget(viewer)]
    for dock in docks:
        viewer.window.add_dock_widget(dock)
    return docks


def _analyse(docks) -> None:
    assert docks[0].run(blocking=True).results
    run = docks[1].run(blocking=True)
    assert not run.error, run.error


@pytest.fixture
def corrected_file(make_napari_viewer, sample_image, tmp_path):
    """scan.npy analysed and corrected (4 cells, 1 site) in the dock and saved; the saved cells table."""
    path = tmp_path / "scan.npy"
    np.save(path, sample_image)
    viewer = make_napari_viewer()
    viewer.open(path, plugin=PLUGIN)
    docks = _docks(viewer)
    _analyse(docks)
    widget = docks[2]
    assert widget.set_class("V_M", [2, 5]) and widget.set_class("V_X1", [7, 11])
    assert widget.set_species("empty", [4])
    assert widget.save() == sidecar_path(path)
    saved = load_annotations(sidecar_path(path))
    viewer.close()
    return path, saved


def _human(cells: pd.DataFrame) -> dict[int, str]:
    return {int(r): str(c) for r, c in cells.loc[cells["source"] == "human", "class"].items()}


def _reopen(make_napari_viewer, path):
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="could not be read"):
        layers = viewer.open(path, plugin=PLUGIN)
    return viewer, layers


def test_a_damaged_value_in_the_cells_metadata_loses_no_correction(make_napari_viewer, corrected_file, qtbot):
    path, saved = corrected_file
    earlier = _human(saved.cells.features)
    assert earlier == {2: "V_M", 5: "V_M", 7: "V_X1", 11: "V_X1"}
    sidecar = sidecar_path(path)
    doc = json.loads(sidecar.read_text())
    doc["cells"]["metadata"]["low_confidence"]["threshold"] = "high"  # one non-numeric value
    sidecar.write_text(json.dumps(doc))
    damaged = sidecar.read_bytes()

    viewer, layers = _reopen(make_napari_viewer, path)
    assert [layer.name for layer in layers] == ["scan", "scan columns", "scan cells"]  # recovered, not dropped
    widget = _docks(viewer)[2]
    assert widget.cells.value is viewer.layers["scan cells"]
    assert _human(viewer.layers["scan cells"].features) == earlier
    assert widget.set_class("V_X2", [20])  # one more correction; the autosave follows
    target = widget.autosave(blocking=True)
    assert target == sidecar

    (kept,) = [p for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert kept.read_bytes() == damaged  # never overwritten
    assert ".damaged-" in widget.result.value and str(kept) in widget.result.value  # the dock says where
    now = load_annotations(sidecar)
    assert _human(now.cells.features) == {**earlier, 20: "V_X2"}  # every earlier correction, and the new one
    assert now.sites.features.loc[4, "species"] == "empty" and now.sites.features.loc[4, "source"] == "human"


def test_a_file_cut_short_is_kept_and_what_it_holds_is_recovered(make_napari_viewer, corrected_file, qtbot):
    path, saved = corrected_file
    sidecar = sidecar_path(path)
    damaged = sidecar.read_bytes()[: int(0.9 * sidecar.stat().st_size)]  # a copy interrupted at 90 %
    sidecar.write_bytes(damaged)
    readable, _ = recover_annotations(sidecar)

    viewer, layers = _reopen(make_napari_viewer, path)
    assert [layer.name for layer in layers][0] == "scan"
    for layer in list(viewer.layers)[1:]:  # the person does not trust the rest, and analyses again
        viewer.layers.remove(layer)
    docks = _docks(viewer)
    _analyse(docks)
    widget = docks[2]
    assert widget.set_class("V_M", [3])
    assert widget.autosave(blocking=True) == sidecar

    (kept,) = [p for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert kept.read_bytes() == damaged  # the earlier corrections are all still on disk, untouched
    again, _ = recover_annotations(kept)
    for mine, theirs in ((readable.sites, again.sites), (readable.cells, again.cells)):
        assert (mine is None) == (theirs is None) and (mine is None or mine.equals(theirs))
    assert readable.sites.equals(saved.sites)  # the sites come before the cut: every site correction is back
    n = len(readable.cells.features)
    pd.testing.assert_series_equal(readable.cells.features["class"], saved.cells.features["class"].iloc[:n])
    now = load_annotations(sidecar)
    assert now.cells.features.loc[3, "class"] == "V_M" and now.cells.features.loc[3, "source"] == "human"
