"""The cell dock classifies the twin's cells into a Shapes layer, counts them, exports them and follows edits."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects._widgets import cells_widget
from napari_stem_defects._widgets.cells_widget import CellsWidget
from napari_stem_defects._widgets.columns_widget import ColumnsWidget
from napari_stem_defects.cells.physics import PROBABILITY_COLUMNS, reference_classes
from napari_stem_defects.cells.shapes_layer import CLASS_COLOURS, cells_to_shapes_data
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.defects import CELL_CLASSES

REQUIRED_FEATURES = {"cell_id", "m_site_id", "x_site_id", "class", "confidence", "verified", "source", "m_species",
                     "x_species", "complete", *PROBABILITY_COLUMNS}


@pytest.fixture(scope="module")
def twin():
    return simulate_twin("MoS2", shape=(256, 256), pixel_size=0.12, rotation_deg=None,
                         defects={"V_X1": 0.05, "V_X2": 0.04, "V_M": 0.04}, imaging=ImagingParams(dose=1e6), seed=4)


@pytest.fixture
def setup(make_napari_viewer, twin):
    viewer = make_napari_viewer()
    image = viewer.add_image(twin.image, name="twin", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                             metadata=twin.metadata)
    columns = ColumnsWidget(viewer)
    run = columns.run(blocking=True)
    assert run.results and not run.errors
    widget = CellsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, image, widget, run.results[None]


def test_widget_classifies_the_twins_cells_into_a_shapes_layer(setup, twin):
    viewer, image, widget, result = setup
    points = viewer.layers["twin columns"]
    assert widget.layer.value is image and widget.points.value is points and widget.material.value == "MoS2"
    run = widget.run(blocking=True)
    assert not run.error and run.cells is not None
    shapes = viewer.layers["twin cells"]
    assert run.layer is shapes and shapes.nshapes == int((points.features["sublattice"] == "M").sum())
    assert set(shapes.shape_type) == {"polygon"}
    assert REQUIRED_FEATURES <= set(shapes.features.columns)
    assert tuple(shapes.scale) == pytest.approx(tuple(image.scale))
    assert [str(u) for u in shapes.units] == ["angstrom", "angstrom"]

    truth = reference_classes(run.cells, result.sites, twin.sites, result.nn_px, "MoS2")
    known = truth != ""
    assert known.mean() > 0.9
    assert (shapes.features["class"].to_numpy()[known] == truth[known]).mean() >= 0.95
    assert {"V_X1", "V_X2", "V_M"} <= set(shapes.features["class"])

    legend = shapes.metadata["legend"]
    assert sum(v["count"] for v in legend.values()) == shapes.nshapes
    assert CLASS_COLOURS["V_M"] in widget.legend.value and "V_M: " in widget.legend.value
    stats = widget.statistics.value
    assert "cm<sup>-2</sup>" in stats and "e+1" in stats and f"<td align=right>{run.stats.counts['V_M']}<" in stats
    present = [c for c, n in run.stats.counts.items() if n > 0 and c != "perfect"]
    ax = widget.figure.axes[0]
    assert len(ax.patches) == len(present)
    assert [t.get_text() for t in ax.get_xticklabels()] == present


def test_export_writes_the_statistics_and_composition(setup, tmp_path, monkeypatch):
    _, _, widget, _ = setup
    assert not widget.export_button.enabled
    run = widget.run(blocking=True)
    target = tmp_path / "out" / "stats.csv"
    monkeypatch.setattr(cells_widget, "ask_save_path", lambda parent, default: str(target))
    widget.export_button.clicked.emit()
    table = pd.read_csv(target)
    classes = table[table["kind"] == "class"]
    assert list(classes["class"]) == list(CELL_CLASSES)
    assert dict(zip(classes["class"], classes["count"], strict=True)) == run.stats.counts
    assert np.isfinite(classes["concentration_cm2"]).all()
    comp = table[table["kind"] == "composition"].set_index("class")["fraction"]
    assert comp["M:Mo"] > 0.9 and comp["X:S2"] > 0.8 and {"M:empty", "X:S"} <= set(comp.index)
    monkeypatch.setattr(cells_widget, "ask_save_path", lambda parent, default: "")  # cancelled dialog
    assert widget.export_csv() is None


def test_editing_a_site_species_changes_its_cell(setup):
    viewer, _, widget, _ = setup
    run = widget.run(blocking=True)
    points, shapes = viewer.layers["twin columns"], viewer.layers["twin cells"]
    cell = run.cells[(run.cells["class"] == "perfect") & run.cells["complete"]].iloc[0]
    features = points.features.copy()
    row = features.index[features["site_id"] == cell["m_site_id"]][0]
    features["species"] = features["species"].astype(object)
    features.loc[row, "species"], features.loc[row, "verified"] = "empty", True
    points.features = features
    again = widget.run(blocking=True)
    assert viewer.layers["twin cells"] is shapes and shapes.nshapes == len(again.cells)
    edited = again.cells.set_index("cell_id").loc[cell["cell_id"]]
    assert edited["class"] == "V_M" and again.stats.counts["V_M"] == run.stats.counts["V_M"] + 1
    assert shapes.features.set_index("cell_id").loc[cell["cell_id"], "class"] == "V_M"


def test_bad_input_gives_a_message_not_an_exception(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = CellsWidget(viewer)
    assert widget.run(blocking=True) is None and "image" in widget.result.value
    viewer.add_image(np.full((128, 128), 0.5, np.float32), name="flat")
    assert widget.layer.value is not None
    assert widget.run(blocking=True) is None and "detect columns first" in widget.result.value
    viewer.add_points(np.random.default_rng(0).uniform(0, 128, (20, 2)), name="random points")
    widget.points.value = viewer.layers["random points"]
    assert widget.run(blocking=True) is None and "not a column layer" in widget.result.value
    columns = ColumnsWidget(viewer)
    columns.run(blocking=True)  # a constant image: columns cannot be found, said in that widget
    assert "flat columns" not in viewer.layers
    sites = pd.DataFrame({"sublattice": ["X"] * 3, "species": ["S2"] * 3, "site_id": [0, 1, 2], "i": [0, 1, 2],
                          "j": [0, 0, 0], "verified": False})
    viewer.add_points(np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]]), features=sites, name="flat columns")
    widget.points.value = viewer.layers["flat columns"]
    run = widget.run(blocking=True)
    assert run.error and "Cannot classify" in widget.result.value and "twin cells" not in viewer.layers


def test_building_15k_cells_is_timed(make_napari_viewer):
    n = 122  # 122 x 122 = 14884 cells
    a1, a2 = np.array([0.0, 20.0]), np.array([17.32, 10.0])
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    centres = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    rng = np.random.default_rng(0)
    cells = pd.DataFrame({"cell_id": np.arange(n * n), "y_px": centres[:, 0], "x_px": centres[:, 1],
                          "class": rng.choice(list(CELL_CLASSES), n * n), "confidence": rng.uniform(0.5, 1, n * n),
                          "verified": False})
    viewer = make_napari_viewer()
    t0 = time.perf_counter()
    data, kwargs, _ = cells_to_shapes_data(cells, a1, a2, scale=(0.1, 0.1), units="angstrom")
    t1 = time.perf_counter()
    layer = viewer.add_shapes(data, **kwargs)
    t2 = time.perf_counter()
    from napari.settings import get_settings

    backend = get_settings().experimental.triangulation_backend
    print(f"\n{len(cells)} cells: layer data {t1 - t0:.2f} s, add_shapes {t2 - t1:.2f} s (triangulation: {backend})")
    assert layer.nshapes == len(cells)


def test_run_in_a_worker_thread_updates_the_dock(setup, qtbot):
    viewer, _, widget, _ = setup
    worker = widget.run()
    assert not widget.run_button.enabled
    with qtbot.waitSignal(worker.finished, timeout=30000):
        pass
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5000)
    assert "twin cells" in viewer.layers and widget.progress.value == 100 and "cells" in widget.result.value


def test_cancel_during_classification_shows_nothing(setup, qtbot, monkeypatch):
    """Cancel pressed while the classifier runs (held here until the cancel arrives): no Shapes layer,
    'Cancelled.', and the dock is ready for the next run."""
    viewer, _, widget, _ = setup
    real = cells_widget.classify_site_table

    def held(*args, **kwargs):
        assert widget.runner.cancel_event.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(cells_widget, "classify_site_table", held)
    assert widget.run() is not None and widget.runner.busy and widget.cancel_button.enabled
    widget.cancel()
    # waiting on the dock's state, not on worker.finished: the worker may finish before a wait starts
    qtbot.waitUntil(lambda: not widget.runner.busy and widget.run_button.enabled, timeout=30000)
    assert "twin cells" not in viewer.layers and widget.result.value == "Cancelled."
    assert widget.last_run.cancelled and widget.last_run.cells is None
    monkeypatch.setattr(cells_widget, "classify_site_table", real)
    assert widget.run(blocking=True).cells is not None and "twin cells" in viewer.layers


def test_cnn_times_columns_in_the_dock_follows_the_context_species(make_napari_viewer, twin):
    viewer = make_napari_viewer()
    viewer.add_image(twin.image, name="twin", scale=(0.12, 0.12), metadata=twin.metadata)
    columns = ColumnsWidget(viewer)
    columns.species_by.value = "context"
    result = columns.run(blocking=True).results[None]
    widget = CellsWidget(viewer)
    widget.classifier.value = "cnn+columns"
    run = widget.run(blocking=True)
    assert not run.error
    fused = run.cells["classifier"] == "cnn+columns"
    assert fused.mean() > 0.9
    truth = reference_classes(run.cells, result.sites, twin.sites, result.nn_px, "MoS2")
    known = truth != ""
    assert (run.cells["class"].to_numpy()[known] == truth[known]).mean() >= 0.95


def test_the_dock_says_which_atom_to_state_where_a_pair_scatters_alike(make_napari_viewer):
    """MoSe2 at 60 kV and a 60 mrad inner angle (typed in the image's metadata): W dopants and Se2 pairs on
    Mo sites scatter alike, so the result line names MoSe2+W."""
    from napari_stem_defects.simulate.imaging_conditions import calibrated_imaging
    from napari_stem_defects.simulate.microscope import MicroscopeSettings

    setting = MicroscopeSettings(energy_kV=60, convergence_mrad=25, detector_inner_mrad=60, detector_outer_mrad=190,
                                 frozen_phonons=8)
    mose2 = simulate_twin("MoSe2", shape=(256, 256), pixel_size=0.12, seed=5, dopant="W",
                          defects={"dopant_M": 0.05, "X_M": 0.05}, imaging=calibrated_imaging(setting, dose=1e6))
    viewer = make_napari_viewer()
    viewer.add_image(mose2.image, name="mose2", scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                     metadata={**mose2.metadata, "beam_energy_keV": 60.0, "collection_angles_mrad": (60.0, 190.0),
                               "convergence_angle_mrad": 25.0})
    assert not ColumnsWidget(viewer).run(blocking=True).errors
    widget = CellsWidget(viewer)
    run = widget.run(blocking=True)
    complete = run.cells[run.cells["complete"].astype(bool) & ~run.cells["boundary"].astype(bool)]
    counts = complete["class"].value_counts()  # the cells the statistics count
    n_anti, n_sub = int(counts.get("X_M", 0)), int(counts.get("dopant_M", 0))
    assert n_anti + n_sub >= 3
    assert (f"{n_anti} X_M and {n_sub} dopant_M cells: W atoms on metal sites scatter like Se2 pairs on them at "
            "this image's microscope") in widget.result.value and "give MoSe2+W" in widget.result.value


def test_the_dock_fuses_the_network_with_the_columns_by_default(make_napari_viewer):
    """As ``analyze`` does, the dock multiplies the CNN's class probabilities by what the sites' species say
    (``cnn+columns``), so a cell never contradicts its columns. On a perfect Janus-MoSSe twin at 80 kV,
    30 mrad, HAADF 70-200 mrad, where Mo on an X2 site scatters like the layer's S+Se pairs, the CNN alone
    (the former default) calls perfect cells M_X; fused with the columns it does not."""
    from napari_stem_defects.simulate.imaging_conditions import calibrated_imaging
    from napari_stem_defects.simulate.microscope import MicroscopeSettings

    setting = MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70, detector_outer_mrad=200,
                                 frozen_phonons=8)
    janus = simulate_twin("Janus-MoSSe", shape=(256, 256), pixel_size=0.15, seed=6,
                          imaging=calibrated_imaging(setting, dose=1e5))
    assert set(janus.cells["class"]) == {"perfect"}
    viewer = make_napari_viewer()
    viewer.add_image(janus.image, name="janus", scale=(0.15, 0.15), units=("angstrom", "angstrom"),
                     metadata={**janus.metadata, "material": "Janus-MoSSe"})
    columns = ColumnsWidget(viewer)
    columns.material.value = "Janus-MoSSe"
    assert not columns.run(blocking=True).errors
    widget = CellsWidget(viewer)
    widget.material.value = "Janus-MoSSe"
    assert widget.classifier.value == "cnn+columns"
    called = {}
    for classifier in ("cnn+columns", "cnn"):
        widget.classifier.value = classifier
        run = widget.run(blocking=True)
        complete = run.cells[run.cells["complete"].astype(bool)]
        called[classifier] = int((complete["class"] != "perfect").sum())
    assert called["cnn+columns"] <= 3 and called["cnn"] >= called["cnn+columns"] + 5, called
