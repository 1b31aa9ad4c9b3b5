"""Column results become Points layer data that sits on the image, coloured by species (no Qt)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.columns.points_layer import (
    FACE_ALPHA,
    FALLBACK_COLOUR,
    FEATURE_COLUMNS,
    SIZE_FRACTION,
    SPECIES_COLOURS,
    SYMBOL_DETECTED,
    SYMBOL_LATTICE,
    hex_to_rgba,
    legend_html,
    result_to_points_data,
    species_colour,
    species_counts,
    stack_results_to_points_data,
)
from napari_stem_defects.columns.result import EMPTY, SITE_COLUMNS, ColumnResult, SpeciesFit


def _result(shift: float = 0.0) -> ColumnResult:
    """Five hand-made sites: two Mo, one empty metal site, one S2 column, one S column."""
    sites = pd.DataFrame({
        "site_id": [0, 1, 2, 3, 4],
        "y_px": [10.0, 20.0, 30.0, 12.0, 22.0],
        "x_px": [5.0, 15.0, 25.0, 8.0, 18.0],
        "sublattice": ["M", "M", "M", "X", "X"],
        "species": ["Mo", "Mo", EMPTY, "S2", "S"],
        "probability": [0.99, 0.95, 0.9, 0.97, 0.8],
        "intensity": [100.0, 98.0, 3.0, 60.0, 31.0],
        "detected": [True, True, False, True, True],
        "refined_by": ["gaussian", "gaussian", "lattice", "gaussian", "com"],
        "i": [0, 1, 2, 0, 1],
        "j": [0, 0, 0, 0, 0],
        "verified": [False] * 5,
    })
    sites["y_px"] += shift
    fit = SpeciesFit("M", ["empty", "Mo"], np.array([3.0, 99.0]), np.array([2.0, 3.0]), np.array([0.3, 0.7]),
                     np.array([100.0, 98.0, 3.0]))
    return ColumnResult(sites=sites.loc[:, list(SITE_COLUMNS)], detection_map=np.zeros((40, 40), np.float32),
                        peaks=np.array([[10.0, 5.0]]), a1=np.array([0.0, 26.0]), a2=np.array([22.5, 13.0]),
                        nn_px=15.0, m_offset=np.array([8.7, 0.0]), species_fits={"M": fit},
                        pixel_size=(0.12, 0.12), messages=["hand-made"])


def test_species_colours_are_distinct_and_unknown_species_fall_back():
    colours = list(SPECIES_COLOURS.values())
    assert len(set(colours)) == len(colours)
    assert FALLBACK_COLOUR not in colours
    for species in ("Mo", "W", "Nb", "Re", "V", "S2", "SSe", "Se2", "STe", "SeTe", "Te2", "S", "Se", "Te",
                    "empty", "adatom"):
        assert species in SPECIES_COLOURS
    assert species_colour("Xx") == FALLBACK_COLOUR
    assert hex_to_rgba("#0077BB") == pytest.approx((0.0, 0x77 / 255, 0xBB / 255, 1.0))


def test_points_sit_in_pixels_with_the_image_scale_and_physical_features():
    data, kwargs, kind = result_to_points_data(_result(), scale=(0.12, 0.12), units=("angstrom", "angstrom"),
                                               name="img columns", parameters={"threshold": 0.2})
    assert kind == "points"
    assert data.shape == (5, 2)
    np.testing.assert_allclose(data[:, 0], [10, 20, 30, 12, 22])
    assert kwargs["scale"] == (0.12, 0.12) and kwargs["units"] == ("angstrom", "angstrom")
    assert kwargs["name"] == "img columns"
    features = kwargs["features"]
    assert list(features.columns) == list(FEATURE_COLUMNS)
    np.testing.assert_allclose(features["y"], 0.12 * features["y_px"])
    np.testing.assert_allclose(features["x"], [0.6, 1.8, 3.0, 0.96, 2.16])
    assert not features["verified"].any()
    assert set(features["source"]) == {"model"}  # detected, not labelled by a person
    assert kwargs["size"] == pytest.approx(SIZE_FRACTION * 15.0) and SIZE_FRACTION <= 0.5  # the column shows
    meta = kwargs["metadata"]
    assert meta["parameters"]["threshold"] == 0.2 and meta["parameters"]["method"] == "classical"
    assert meta["parameters"]["species_fits"]["M"]["labels"] == ["empty", "Mo"]
    assert meta["legend"]["Mo"] == {"colour": SPECIES_COLOURS["Mo"], "count": 2}
    assert list(meta["legend"]) == ["Mo", "S2", "S", "empty"]  # metals, chalcogens, empty last
    assert meta["feature_units"]["y"] == "angstrom"


def test_empty_sites_are_hollow_and_others_filled_by_species():
    _, kwargs, _ = result_to_points_data(_result())
    face, border = kwargs["face_color"], kwargs["border_color"]
    empty = kwargs["features"]["species"].to_numpy() == EMPTY
    assert face[empty, 3] == pytest.approx([0.0])
    assert border[empty, 3] == pytest.approx([1.0])
    np.testing.assert_allclose(border[empty, :3], [hex_to_rgba(SPECIES_COLOURS[EMPTY])[:3]])
    np.testing.assert_allclose(face[0], hex_to_rgba(SPECIES_COLOURS["Mo"], FACE_ALPHA))  # translucent face
    np.testing.assert_allclose(border[0], hex_to_rgba(SPECIES_COLOURS["Mo"]))  # opaque edge
    np.testing.assert_allclose(face[3], hex_to_rgba(SPECIES_COLOURS["S2"], FACE_ALPHA))
    assert not np.allclose(face[3], face[4])  # S2 and S columns differ


def test_sites_placed_by_the_lattice_fit_have_their_own_marker():
    result = _result()
    result.sites.loc[1, "refined_by"] = "lattice"  # an occupied site no peak was found for
    result.sites.loc[2, "refined_by"] = "lattice"  # the empty one
    _, kwargs, _ = result_to_points_data(result)
    symbols = list(kwargs["symbol"])
    assert symbols[1] == SYMBOL_LATTICE != SYMBOL_DETECTED == symbols[0]
    assert symbols[2] == SYMBOL_DETECTED  # empty sites stay hollow rings, whoever placed them


def test_frame_feature_is_added_when_given():
    _, kwargs, _ = result_to_points_data(_result(), frame=4)
    assert (kwargs["features"]["frame"] == 4).all()
    _, kwargs, _ = result_to_points_data(_result())
    assert "frame" not in kwargs["features"]


def test_stack_gives_3d_points_on_their_frames():
    results = [_result(shift=k) for k in range(3)]
    data, kwargs, _ = stack_results_to_points_data(results, frames=[0, 1, 2], scale=(0.12, 0.12),
                                                   units=("angstrom", "angstrom"))
    assert data.shape == (15, 3)
    np.testing.assert_array_equal(data[:, 0], np.repeat([0, 1, 2], 5))
    np.testing.assert_allclose(data[5:10, 1], data[:5, 1] + 1)
    assert kwargs["scale"] == (1.0, 0.12, 0.12)
    assert kwargs["units"] == ("pixel", "angstrom", "angstrom")
    np.testing.assert_array_equal(kwargs["features"]["frame"], data[:, 0])
    assert kwargs["metadata"]["legend"]["Mo"]["count"] == 6
    assert set(kwargs["metadata"]["parameters"]["frames"]) == {0, 1, 2}
    with pytest.raises(ValueError, match="frame"):
        stack_results_to_points_data(results, frames=[0, 1])


def test_stack_of_nothing_is_an_empty_3d_layer():
    data, kwargs, _ = stack_results_to_points_data([], scale=(2.0, 0.1, 0.1))
    assert data.shape == (0, 3)
    assert kwargs["scale"] == (2.0, 0.1, 0.1)
    assert kwargs["face_color"].shape == (0, 4)


def test_legend_html_lists_species_with_colours_and_counts():
    text = legend_html(_result())
    entries = text.split(" &nbsp; ")  # entries flow on, each kept on one line
    assert len(entries) == 4 and all("white-space:nowrap" in e for e in entries)
    assert SPECIES_COLOURS["Mo"] in entries[0] and "Mo: 2" in entries[0]
    assert "empty: 1" in entries[-1] and "&#9675;" in entries[-1]
    assert legend_html({"W": 7}).endswith("W: 7</span>")
    assert legend_html([_result(), _result()]).split(" &nbsp; ")[0].endswith("Mo: 4</span>")
    assert legend_html({}) == ""
    assert species_counts(["S", "Mo", "empty", "Mo"]) == {"Mo": 2, "S": 1, "empty": 1}


def test_points_data_makes_a_valid_napari_layer():
    pytest.importorskip("napari")
    from napari.layers import Layer

    layer = Layer.create(*result_to_points_data(_result(), scale=(0.12, 0.12), units="angstrom"))
    assert layer.ndim == 2 and len(layer.data) == 5
    assert tuple(layer.scale) == pytest.approx((0.12, 0.12))
    assert layer.face_color[2, 3] == 0.0 and layer.border_color[2, 3] == 1.0
    assert list(layer.features["species"]) == ["Mo", "Mo", EMPTY, "S2", "S"]


def test_module_imports_without_napari_or_qt():
    import subprocess
    import sys

    code = ("import sys, napari_stem_defects.columns.points_layer;"
            "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'magicgui') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
