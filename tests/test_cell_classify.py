"""Allowed classes per material, and cells classified by the CNN from detected columns (classify_site_table)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects.composition import (
    CLEAR_CONTRAST, allowed_classes, class_mask, dopant_elements, substituent_elements,
)
from napari_stem_defects.cells.physics import reference_classes
from napari_stem_defects.cells.statistics import defect_statistics
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.materials import KNOWN_MATERIALS, parse_material
from napari_stem_defects.simulate import CELL_CLASSES, ImagingParams, simulate_twin
from napari_stem_defects.simulate.defects import default_dopant


def test_alloys_report_composition_instead_of_dopants_and_substitutions():
    assert allowed_classes("MoS2") == CELL_CLASSES
    assert "dopant_M" not in allowed_classes("MoWS2") and "sub_X" in allowed_classes("MoWS2")
    for mat in ("MoSSe", "Janus-MoSSe", "MoWSSe"):
        assert "sub_X" not in allowed_classes(mat)
    assert "dopant_M" not in allowed_classes("MoWSSe")
    assert class_mask("MoWSSe").sum() == len(allowed_classes("MoWSSe"))


def test_dopants_never_scatter_like_another_content_of_the_metal_site():
    # a light dopant in MoS2 would look like the S2 of an X_M antisite; a W atom in MoTe2 like Te2
    assert set(dopant_elements("MoS2", CLEAR_CONTRAST)) <= {"W", "Re", "Ta", "Hf", "Pt"}
    assert "W" not in dopant_elements("MoTe2", CLEAR_CONTRAST)
    assert default_dopant(parse_material("MoS2")) == "W" and default_dopant(parse_material("WSe2")) == "Mo"
    assert default_dopant(parse_material("MoTe2")) == "V"
    assert substituent_elements("WSe2")[0] == "S" and substituent_elements("MoSSe") == ()


def test_training_twins_only_hold_allowed_classes():
    from napari_stem_defects.training.cell_cnn import defect_plan

    rng = np.random.default_rng(0)
    for name in KNOWN_MATERIALS:
        mat = parse_material(name)
        plan = defect_plan(mat, rng)
        assert set(plan["defects"]) == set(allowed_classes(mat)) - {"perfect"}
        if "dopant_M" in plan["defects"]:
            assert plan["dopant"] in dopant_elements(mat)


torch = pytest.importorskip("torch")

ALL_DEFECTS = {"V_X1": 0.04, "V_X2": 0.04, "V_M": 0.04, "V_X1+V_M": 0.03, "V_X2+V_M": 0.03, "M_X": 0.03,
               "X_M": 0.03, "dopant_M": 0.03, "sub_X": 0.03, "adatom": 0.03}


@pytest.fixture(scope="module")
def mos2():
    twin = simulate_twin("MoS2", shape=(384, 384), pixel_size=0.12, rotation_deg=None, defects=ALL_DEFECTS,
                         imaging=ImagingParams(dose=1e6), seed=3_900_101)
    result = detect_columns(twin.image, material="MoS2", pixel_size=0.12)
    return twin, result


def test_cnn_classifies_detected_cells_of_a_twin_with_every_defect(mos2):
    from napari_stem_defects.cells.classify import classify_site_table

    twin, result = mos2
    cells = classify_site_table(twin.image, result.sites, "MoS2", "cnn", nn_px=result.nn_px)
    truth = reference_classes(cells, result.sites, twin.sites, result.nn_px, "MoS2")
    known = (truth != "") & cells["complete"].to_numpy()
    assert known.sum() > 0.85 * len(cells)
    pred = cells["class"].to_numpy()
    assert (pred[known] == truth[known]).mean() >= 0.97
    for cls in ("V_X1", "V_X2", "V_M", "M_X", "X_M", "dopant_M", "adatom"):
        there = known & (truth == cls)
        assert there.sum() >= 3 and (pred[there] == cls).mean() >= 0.7, cls
    assert set(cells["classifier"]) == {"cnn"} and set(cells["source"]) == {"model"}
    probs = cells[[f"p_{c}" for c in CELL_CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # statistics: the counted vacancies per area follow the classes
    stats = defect_statistics(cells, "MoS2", 0.12)
    assert stats.counts["V_M"] == int((pred[cells["complete"]] == "V_M").sum())
    assert stats.concentration_cm2["V_M"] == pytest.approx(stats.counts["V_M"] / (stats.area_nm2 * 1e-14))


def test_two_stage_and_single_agree_on_a_clear_twin(mos2):
    from napari_stem_defects.cells.classify import classify_site_table

    twin, result = mos2
    one = classify_site_table(twin.image, result.sites, "MoS2", "cnn", nn_px=result.nn_px)
    two = classify_site_table(twin.image, result.sites, "MoS2", "cnn-two-stage", nn_px=result.nn_px)
    np.testing.assert_allclose(two[[f"p_{c}" for c in CELL_CLASSES]].to_numpy().sum(axis=1), 1.0, atol=1e-4)
    assert (one["class"] == two["class"]).mean() >= 0.97


def test_a_verified_site_overrules_the_cnn(mos2):
    from napari_stem_defects.cells.classify import classify_site_table

    twin, result = mos2
    sites = result.sites.copy()
    cells = classify_site_table(twin.image, sites, "MoS2", "cnn", nn_px=result.nn_px)
    cell = cells[(cells["class"] == "perfect") & cells["complete"]].iloc[0]
    row = sites.index[sites["site_id"] == cell["m_site_id"]][0]
    sites["species"] = sites["species"].astype(object)
    sites.loc[row, "species"], sites.loc[row, "verified"] = "empty", True
    again = classify_site_table(twin.image, sites, "MoS2", "cnn", nn_px=result.nn_px).set_index("cell_id")
    assert again.loc[cell["cell_id"], "class"] == "V_M" and again.loc[cell["cell_id"], "classifier"] == "verified sites"
    assert (again["classifier"] == "cnn").sum() == len(again) - 1
    assert set(again["source"]) == {"model"}  # a verified site changes the classifier, not who labelled the cell


def test_an_alloy_gets_only_its_allowed_classes():
    from napari_stem_defects.cells.cnn import classify_cells
    from napari_stem_defects.training.cell_cnn import twin_cells, twin_nn_px

    twin = simulate_twin("MoWSSe", shape=(256, 256), pixel_size=0.12, rotation_deg=None,
                         defects={"V_X2": 0.05, "V_M": 0.05}, imaging=ImagingParams(dose=1e6), seed=3_900_102)
    m, x, labels = twin_cells(twin)
    prob = classify_cells(twin.image, m, x, twin_nn_px(twin), "MoWSSe")
    assert np.all(prob[:, ~class_mask("MoWSSe")] == 0)
    pred = prob.argmax(axis=1)
    for cls in ("V_X2", "V_M"):
        k = CELL_CLASSES.index(cls)
        assert (pred[labels == k] == k).mean() >= 0.9, cls


def test_cnn_needs_the_image():
    from napari_stem_defects.cells.classify import classify_site_table

    twin = simulate_twin("MoS2", shape=(96, 96), pixel_size=0.12, imaging=ImagingParams(dose=None), seed=1)
    with pytest.raises(ValueError, match="2D image"):
        classify_site_table(None, twin.sites, "MoS2", "cnn")
    with pytest.raises(ValueError, match="classifier"):
        classify_site_table(twin.image, twin.sites, "MoS2", "svm")
