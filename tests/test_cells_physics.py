"""Cells, the physics baseline classifier and defect statistics against twins with known defects."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects.cells.geometry import cell_area_A2, cell_polygons, cells_from_sites
from napari_stem_defects.cells.physics import classify_cells_physics, pair_class, reference_classes
from napari_stem_defects.cells.statistics import defect_statistics
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import ImagingParams, simulate_twin

ALL_DEFECTS = {"V_X1": 0.05, "V_X2": 0.05, "V_M": 0.05, "V_X1+V_M": 0.03, "V_X2+V_M": 0.03, "M_X": 0.03,
               "X_M": 0.03, "dopant_M": 0.03, "sub_X": 0.03, "adatom": 0.03}


@pytest.fixture(scope="module")
def classified():
    twin = simulate_twin("MoS2", shape=(384, 384), pixel_size=0.12, rotation_deg=None, defects=ALL_DEFECTS,
                         imaging=ImagingParams(dose=1e6), seed=5)
    result = detect_columns(twin.image, material="MoS2", pixel_size=0.12)
    cells = classify_cells_physics(result.sites, result.posteriors, "MoS2")
    return twin, result, cells


def test_every_metal_site_is_one_cell_with_its_partner(classified):
    _, result, cells = classified
    assert len(cells) == (result.sites["sublattice"] == "M").sum()
    done = cells[cells["complete"]]
    step = np.hypot(done["x_y_px"] - done["m_y_px"], done["x_x_px"] - done["m_x_px"])
    assert np.allclose(step, result.nn_px, rtol=0.1)  # the partner is a nearest neighbour
    direction = np.arctan2(done["x_y_px"] - done["m_y_px"], done["x_x_px"] - done["m_x_px"])
    assert np.ptp(np.unwrap(direction)) < 0.3  # always the same lattice direction
    corners = cell_polygons(cells, result.a1, result.a2)
    area = 0.5 * np.abs(np.cross(corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]))
    assert np.allclose(area * 0.12**2, cell_area_A2(parse_material("MoS2").a), rtol=0.03)


def test_physics_baseline_recovers_every_class_at_high_dose(classified):
    twin, result, cells = classified
    truth = reference_classes(cells, result.sites, twin.sites, result.nn_px, "MoS2")
    known = truth != ""
    assert known.sum() > 0.9 * len(cells)
    assert (cells["class"].to_numpy()[known] == truth[known]).mean() >= 0.98
    assert set(truth[known]) - {"perfect"} >= {"V_X1", "V_X2", "V_M", "M_X", "X_M", "dopant_M", "sub_X"}
    probs = cells.filter(like="p_").to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.allclose(cells["confidence"], probs.max(axis=1))


def test_pair_classes_follow_the_material():
    mos2, mowsse = parse_material("MoS2"), parse_material("MoWSSe")
    assert pair_class("W", "S2", False, mos2) == "dopant_M"
    assert pair_class("W", "SSe", False, mowsse) == "perfect"  # composition, not a defect, in the alloy
    assert pair_class("S2", "S2", False, mos2) == "X_M"
    assert pair_class("Mo", "Mo", False, mos2) == "M_X"
    assert pair_class("Mo", "S2", True, mos2) == "adatom"


def test_concentration_from_a_known_number_of_defects_in_a_known_area(classified):
    _, _, cells = classified
    complete = cells[cells["complete"]].copy()
    complete["class"] = "perfect"
    complete.iloc[:7, complete.columns.get_loc("class")] = "V_M"
    stats = defect_statistics(complete, "MoS2", 0.12)
    area_cm2 = len(complete) * cell_area_A2(parse_material("MoS2").a) * 1e-16
    assert stats.counts["V_M"] == 7
    assert stats.concentration_cm2["V_M"] == pytest.approx(7 / area_cm2)
    assert stats.fraction["perfect"] == pytest.approx(1 - 7 / len(complete))
    assert np.isnan(defect_statistics(complete, "MoS2", None).concentration_cm2["V_M"])


def test_cells_keep_frames_apart():
    import pandas as pd

    sites = pd.DataFrame({"frame": [0, 0, 1, 1], "site_id": [0, 1, 0, 1], "y_px": [0.0, 1.0, 0.0, 1.0],
                          "x_px": [0.0, 1.0, 0.0, 1.0], "sublattice": ["M", "X", "M", "X"],
                          "species": ["Mo", "S2", "Mo", "S"], "i": 0, "j": 0})
    cells = cells_from_sites(sites)
    assert cells["frame"].tolist() == [0, 1] and cells["x_species"].tolist() == ["S2", "S"]


def test_a_person_s_correction_changes_the_cell_class(classified):
    _, result, cells = classified
    sites = result.sites.copy()
    perfect = cells[(cells["class"] == "perfect") & cells["complete"]].iloc[0]
    row = sites.index[sites["site_id"] == perfect["x_site_id"]][0]
    sites.loc[row, ["species", "verified"]] = ["S", True]  # a person marks one S missing
    again = classify_cells_physics(sites, result.posteriors, "MoS2")
    assert again.loc[again["cell_id"] == perfect["cell_id"], "class"].item() == "V_X1"
    # without any fitted posteriors the table's species decide
    plain = classify_cells_physics(result.sites, None, "MoS2")
    assert (plain["class"] == cells["class"]).mean() > 0.97
