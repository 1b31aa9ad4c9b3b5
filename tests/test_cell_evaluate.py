"""The ideal observer for single chalcogen vacancies (napari_stem_defects.cells.evaluate)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_stem_defects.cells.evaluate import ideal_vx1_evidence, ideal_vx1_f1
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
