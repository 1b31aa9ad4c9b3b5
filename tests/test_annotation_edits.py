"""A person's edits: classes and species, review by uncertainty, point positions, undo and redo."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.annotations.edits import (
    CLASS_KEYS,
    SOURCE_HUMAN,
    SOURCE_MODEL,
    mark_human,
    next_uncertain,
    set_cell_class,
    set_site_species,
    site_species_choices,
    species_keys,
    sync_positions,
)
from napari_stem_defects.annotations.history import EditHistory, apply_edit
from napari_stem_defects.cells.physics import PROBABILITY_COLUMNS
from napari_stem_defects.simulate.defects import CELL_CLASSES


def _cells(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(CELL_CLASSES)), size=n)
    cells = pd.DataFrame({"cell_id": np.arange(n), "class": pd.Series(["perfect"] * n, dtype="str"),
                          "confidence": [0.9, 0.4, 0.7, 0.4, 0.99, 0.2][:n]})
    for k, col in enumerate(PROBABILITY_COLUMNS):
        cells[col] = probs[:, k]
    cells["verified"] = False
    cells["source"] = pd.Series([SOURCE_MODEL] * n, dtype="str")
    cells["classifier"] = pd.Series(["cnn"] * n, dtype="str")
    return cells


def _sites() -> pd.DataFrame:
    y_px, x_px = np.array([10.0, 20.0, 30.0]), np.array([5.0, 6.0, 7.0])
    return pd.DataFrame({"y": y_px * 0.12, "x": x_px * 0.12, "y_px": y_px, "x_px": x_px,
                         "sublattice": pd.Series(["M", "X", "X"], dtype="str"),
                         "species": pd.Series(["Mo", "S2", "S"], dtype="str"), "probability": [0.9, 0.8, 0.6],
                         "site_id": [0, 1, 2], "verified": [False, False, False],
                         "source": pd.Series([SOURCE_MODEL] * 3, dtype="str")})


def test_setting_a_cell_class_marks_it_human_and_keeps_the_model_probabilities():
    cells = _cells()
    original = cells.copy()
    edited = set_cell_class(cells, [1, 3], "V_X1")
    pd.testing.assert_frame_equal(cells, original)  # the input is left as it was
    assert edited.loc[[1, 3], "class"].tolist() == ["V_X1", "V_X1"]
    assert edited.loc[[1, 3], "confidence"].tolist() == [1.0, 1.0]
    assert edited.loc[[1, 3], "verified"].all() and (edited.loc[[1, 3], "source"] == SOURCE_HUMAN).all()
    assert (edited.loc[[1, 3], "classifier"] == "cnn").all()  # which model it was stays recorded
    pd.testing.assert_frame_equal(edited[list(PROBABILITY_COLUMNS)], cells[list(PROBABILITY_COLUMNS)], check_exact=True)
    untouched = [0, 2, 4, 5]
    pd.testing.assert_frame_equal(edited.loc[untouched], cells.loc[untouched], check_exact=True)
    assert list(edited.dtypes) == list(cells.dtypes)
    with pytest.raises(ValueError, match="unknown cell class 'V_Q'"):
        set_cell_class(cells, [0], "V_Q")
    with pytest.raises(IndexError):
        set_cell_class(cells, [6], "V_M")


def test_setting_a_species_marks_the_site_human_and_certain():
    sites = _sites()
    edited = set_site_species(sites, [2], "S2")
    assert edited.loc[2, ["species", "probability", "verified", "source"]].tolist() == ["S2", 1.0, True, "human"]
    pd.testing.assert_frame_equal(edited.loc[[0, 1]], sites.loc[[0, 1]], check_exact=True)
    emptied = set_site_species(sites, [0, 1], "empty")
    assert emptied["species"].tolist() == ["empty", "empty", "S"]
    assert emptied["source"].tolist() == ["human", "human", "model"]


def test_columns_missing_from_older_tables_are_created_and_categories_extended():
    old = pd.DataFrame({"class": pd.Categorical(["perfect", "V_M"]), "confidence": [0.5, 0.6]})
    edited = set_cell_class(old, [0], "adatom")
    assert edited["class"].tolist() == ["adatom", "V_M"]
    assert edited["verified"].tolist() == [True, False] and edited["source"].tolist() == ["human", "model"]
    assert mark_human(pd.DataFrame({"a": [1, 2]}), [1])["source"].tolist() == ["model", "human"]


def test_next_uncertain_goes_by_confidence_then_row_and_skips_verified_cells():
    cells = _cells()  # confidences 0.9, 0.4, 0.7, 0.4, 0.99, 0.2
    assert next_uncertain(cells) == 5
    order, current = [], None
    for _ in range(6):
        current = next_uncertain(cells, current)
        order.append(current)
    assert order == [5, 1, 3, 2, 0, 4]  # ties (rows 1, 3 at 0.4) by row
    assert next_uncertain(cells, 4) == 5  # after the last, back to the first
    edited = set_cell_class(cells, [5], "V_M")  # corrected: confidence 1, verified
    assert next_uncertain(edited) == 1
    assert next_uncertain(edited, 5) == 1  # the cell just corrected is no longer in the list
    assert next_uncertain(edited, 1) == 3
    done = set_cell_class(cells, range(6), "perfect")
    assert next_uncertain(done) is None and next_uncertain(done, 2) is None
    no_confidence = pd.DataFrame({"class": ["perfect"] * 3, "verified": [False, True, False]})
    assert next_uncertain(no_confidence) == 0 and next_uncertain(no_confidence, 0) == 2


def test_sync_positions_follows_the_layer_data():
    sites = _sites()
    data = sites[["y_px", "x_px"]].to_numpy().copy()
    data[1] = (21.5, 8.25)
    synced = sync_positions(sites, data, (0.12, 0.12), [1])
    assert synced.loc[1, ["y_px", "x_px"]].tolist() == [21.5, 8.25]
    assert synced.loc[1, "y"] == 21.5 * 0.12 and synced.loc[1, "x"] == 8.25 * 0.12
    pd.testing.assert_frame_equal(synced.loc[[0, 2]], sites.loc[[0, 2]], check_exact=True)
    frames = sites.assign(frame=[0, 0, 0])
    data3 = np.column_stack([[0.0, 2.0, 0.0], data])
    assert sync_positions(frames, data3, (1.0, 0.2, 0.2))["frame"].tolist() == [0, 2, 0]
    assert sync_positions(frames, data3, (1.0, 0.2, 0.2))["y"].tolist() == pytest.approx(data[:, 0] * 0.2)
    with pytest.raises(ValueError, match="2 points but 3"):
        sync_positions(sites, data[:2], (1.0, 1.0))


def test_keys_and_species_choices():
    assert list(CLASS_KEYS) == list(CELL_CLASSES)
    assert len(set(CLASS_KEYS.values())) == len(CELL_CLASSES)
    assert CLASS_KEYS["perfect"] == "Alt-0" and CLASS_KEYS["adatom"] == "Alt-A"
    keys = species_keys([f"s{k}" for k in range(12)])
    assert len(keys) == 9 and keys["s0"] == "Alt-1" and keys["s8"] == "Alt-9"
    mos2 = site_species_choices("MoS2")
    assert mos2["M"][0] == "Mo" and mos2["M"][-1] == "empty" and "S2" in mos2["M"]  # antisite
    assert mos2["X"][0] == "S2" and {"S", "Mo", "empty"} <= set(mos2["X"])
    assert mos2["H"] == ["empty", "adatom"]
    alloy = site_species_choices("Mo0.5W0.5SSe")
    assert set(alloy["M"][:2]) == {"Mo", "W"} and set(alloy["X"][:3]) == {"S2", "SSe", "Se2"}


def test_undo_and_redo_of_a_class_edit_restore_the_tables_exactly():
    cells = _cells()
    history = EditHistory()
    assert not history.dirty and history.undo() is None and history.redo() is None
    edited = set_cell_class(cells, [2], "M_X")
    history.record("class", [2], cells, edited)  # whole tables: only row 2 is kept
    assert history.dirty and history.can_undo and not history.can_redo
    assert len(history._undo[0].before) == 1

    undo = history.undo()
    assert undo.kind == "class" and undo.indices.tolist() == [2]
    restored, _ = apply_edit(undo, edited)
    pd.testing.assert_frame_equal(restored, cells, check_exact=True)
    assert not history.dirty and history.can_redo

    redo = history.redo()
    again, _ = apply_edit(redo, restored)
    pd.testing.assert_frame_equal(again, edited, check_exact=True)
    history.mark_saved()
    assert not history.dirty
    history.undo()
    assert history.dirty  # back before the saved state

    history.record("class", [0], cells, set_cell_class(cells, [0], "V_M"))
    assert not history.can_redo  # a new edit forgets what was undone


def test_the_history_keeps_the_last_100_edits():
    cells = _cells()
    history = EditHistory()
    for k in range(105):
        history.record("class", [k % 6], cells, set_cell_class(cells, [k % 6], CELL_CLASSES[k % 11]))
    undone = 0
    while history.undo() is not None:
        undone += 1
    assert undone == 100


def test_point_moves_additions_and_deletions_undo():
    sites = _sites()
    data = sites[["y_px", "x_px"]].to_numpy()
    history = EditHistory()

    moved_data = data.copy()
    moved_data[0] += 1.0
    moved = set_site_species(sync_positions(sites, moved_data, (0.12, 0.12), [0]), [0], "W")
    history.record_points(data, sites, moved_data, moved)
    assert history._undo[-1].indices.tolist() == [0]  # a move keeps the changed row only

    added_data = np.vstack([moved_data, [[40.0, 9.0]]])
    added = pd.concat([moved, moved.iloc[[2]]], ignore_index=True)
    history.record_points(moved_data, moved, added_data, added, layer="sites")
    assert history._undo[-1].indices is None and history._undo[-1].layer == "sites"

    undo = history.undo()
    features, points = apply_edit(undo, added, added_data)
    pd.testing.assert_frame_equal(features, moved, check_exact=True)
    np.testing.assert_array_equal(points, moved_data)
    undo = history.undo()
    features, points = apply_edit(undo, features, points)
    pd.testing.assert_frame_equal(features, sites, check_exact=True)
    np.testing.assert_array_equal(points, data)
    redo = history.redo()
    features, points = apply_edit(redo, features, points)
    pd.testing.assert_frame_equal(features, moved, check_exact=True)
    np.testing.assert_array_equal(points, moved_data)
