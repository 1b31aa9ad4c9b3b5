"""Classified cells become Shapes layer data: one polygon per cell, coloured by class, unsure cells marked."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.cells.physics import PROBABILITY_COLUMNS, classify_cells_physics
from napari_stem_defects.cells.shapes_layer import (
    CLASS_COLOURS, cells_to_shapes_data, class_counts, estimate_lattice_vectors, legend_html, low_confidence_mask,
)
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.defects import CELL_CLASSES
from napari_stem_defects.vocabulary import INCOMPLETE


@pytest.fixture(scope="module")
def detected():
    twin = simulate_twin("MoS2", shape=(256, 256), pixel_size=0.12, rotation_deg=None,
                         defects={"V_X1": 0.05, "V_X2": 0.04, "V_M": 0.04}, imaging=ImagingParams(dose=1e6), seed=2)
    result = detect_columns(twin.image, material="MoS2", pixel_size=0.12)
    return result, classify_cells_physics(result.sites, None, "MoS2")


def test_every_class_has_a_distinct_colour_and_perfect_is_grey():
    assert set(CLASS_COLOURS) == {*CELL_CLASSES, INCOMPLETE}  # 'incomplete': border cells, no class
    assert len(set(CLASS_COLOURS.values())) == len(CELL_CLASSES) + 1
    r, g, b = (int(CLASS_COLOURS["perfect"][k:k + 2], 16) for k in (1, 3, 5))
    assert r == g == b


def test_shapes_data_has_one_polygon_per_cell_with_the_cell_table(detected):
    result, cells = detected
    data, kwargs, kind = cells_to_shapes_data(cells, result.a1, result.a2, scale=(0.12, 0.12),
                                              units="angstrom", name="twin cells")
    assert kind == "shapes" and kwargs["shape_type"] == "polygon"
    assert data.shape == (len(cells), 4, 2) == (int((result.sites["sublattice"] == "M").sum()), 4, 2)
    np.testing.assert_allclose(data.mean(axis=1), cells[["y_px", "x_px"]].to_numpy())  # centred on the cell
    assert kwargs["scale"] == (0.12, 0.12) and kwargs["units"] == ("angstrom", "angstrom")
    features = kwargs["features"]
    assert {"class", "confidence", "verified", "source", "classifier", "m_species", "x_species", "cell_id", "m_site_id",
            *PROBABILITY_COLUMNS} <= set(features.columns)
    assert (features["class"] == "perfect").any()  # perfect cells are drawn too
    assert np.all(kwargs["face_color"][:, 3] == 0)  # high dose: every cell is sure, faces transparent
    defect = (features["class"] != "perfect").to_numpy()
    assert np.all(kwargs["edge_color"][defect, 3] == 1) and np.all(kwargs["edge_color"][~defect, 3] < 1)
    legend = kwargs["metadata"]["legend"]
    assert legend == {c: {"colour": CLASS_COLOURS[c], "count": n} for c, n in class_counts(cells).items()}
    assert sum(v["count"] for v in legend.values()) == len(cells)


def test_low_confidence_cells_are_marked_unless_verified(detected):
    result, cells = detected
    cells = cells.copy()
    cells.loc[[0, 1, 2], "confidence"] = 0.5
    cells.loc[2, "verified"] = True
    assert low_confidence_mask(cells, 0.8)[:4].tolist() == [True, True, False, False]
    _, kwargs, _ = cells_to_shapes_data(cells, result.a1, result.a2, low_confidence=0.8)
    width, face = kwargs["edge_width"], kwargs["face_color"]
    assert width[0] > width[3] and width[2] == width[3]
    assert face[0, 3] > 0 and face[2, 3] == 0 and face[3, 3] == 0
    assert kwargs["metadata"]["low_confidence"] == {"threshold": 0.8, "count": 2}
    assert "2 low-confidence" in legend_html(cells, 2)


def test_lattice_vectors_from_the_sites_match_the_detection(detected):
    result, _ = detected
    a1, a2 = estimate_lattice_vectors(result.sites)
    np.testing.assert_allclose(a1, result.a1, atol=0.5)
    np.testing.assert_allclose(a2, result.a2, atol=0.5)
    b1, b2 = estimate_lattice_vectors(result.sites.drop(columns=["i", "j"]))  # nearest neighbours only
    assert np.hypot(*b1) == pytest.approx(np.hypot(*result.a1), rel=0.05)
    cos = np.dot(b1, b2) / np.hypot(*b1) / np.hypot(*b2)
    assert cos == pytest.approx(0.5, abs=0.05)  # 60 degrees, like a1 and a2
    with pytest.raises(ValueError):
        estimate_lattice_vectors(pd.DataFrame({"sublattice": ["M"], "y_px": [1.0], "x_px": [1.0]}))


def test_empty_cell_table_gives_an_empty_layer():
    cells = pd.DataFrame({"y_px": [], "x_px": [], "class": [], "confidence": [], "verified": []})
    data, kwargs, _ = cells_to_shapes_data(cells, (10.0, 0.0), (5.0, 8.66))
    assert data.shape == (0, 4, 2) and kwargs["metadata"]["legend"] == {}


def test_module_imports_without_qt_or_napari():
    code = ("import sys, napari_stem_defects.cells.shapes_layer;"
            "bad = [m for m in ('qtpy', 'PyQt6', 'napari', 'magicgui') if m in sys.modules]; sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
