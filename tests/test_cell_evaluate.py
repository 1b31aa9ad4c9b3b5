"""The ideal observers for single chalcogen vacancies and for antisites (napari_stem_defects.cells.evaluate)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects.cells.evaluate import (column_contents, ideal_antisite_evidence, ideal_pair_f1,
                                                ideal_vx1_evidence, ideal_vx1_f1)
from napari_stem_defects.simulate import ImagingParams, simulate_twin


def _twin(dose):
    return simulate_twin("MoS2", (224, 224), 0.12, rotation_deg=None, imaging=ImagingParams(dose=dose),
                         seed=3_900_031, defects={"V_X1": 0.1})


def test_ideal_observer_separates_vacancies_at_high_dose_and_not_at_very_low_dose():
    high = ideal_vx1_evidence(_twin(1e6))
    assert set(high["class"]) == {"perfect", "V_X1"}
    assert (high["class"] == "V_X1").sum() >= 3
    # every one-atom column is more likely one atom than two, every perfect one the reverse
    assert np.all(high.loc[high["class"] == "V_X1", "llr"] > 0)
    assert np.all(high.loc[high["class"] == "perfect", "llr"] < 0)
    assert ideal_vx1_f1(high) == 1.0
    low = ideal_vx1_evidence(_twin(1e2))
    assert ideal_vx1_f1(low) < 0.8


def test_ideal_observer_needs_a_dose():
    twin = simulate_twin("MoS2", (64, 64), 0.12, imaging=ImagingParams(dose=None), seed=1)
    with pytest.raises(ValueError, match="finite dose"):
        ideal_vx1_evidence(twin)


def _antisite_twin(dose, gamma):
    return simulate_twin("MoS2", (224, 224), 0.12, rotation_deg=None, imaging=ImagingParams(dose=dose, gamma=gamma),
                         seed=3_900_033, defects={"M_X": 0.06, "sub_X": 0.06}, substituent="Se")


def test_column_contents_parse_species_strings():
    assert column_contents("STe") == ("S", "Te")
    assert column_contents("S2") == ("S", "S")


def test_ideal_observer_tells_antisites_from_substitutions_only_through_the_z_exponent():
    # Z^1.7: a Mo atom (573) is 11 % brighter than S + Se (514); plenty at 1e6
    clear = ideal_antisite_evidence(_antisite_twin(1e6, 1.7))
    assert set(clear["class"]) == {"M_X", "sub_X"}
    assert (clear["class"] == "M_X").sum() >= 3 and (clear["class"] == "sub_X").sum() >= 3
    assert np.all((clear["llr"] > 0) == (clear["class"] == "sub_X"))
    assert ideal_pair_f1(clear, "sub_X") == 1.0
    # Z^1.4: Mo (187) and S + Se (188) are equally bright, whatever the dose
    blind = ideal_antisite_evidence(_antisite_twin(1e6, 1.4))
    assert ideal_pair_f1(blind, "sub_X") < 0.8


def test_antisite_evidence_is_empty_without_both_classes():
    assert ideal_antisite_evidence(_twin(1e5)).empty
