"""Every species, cell class, heatmap family and event is told apart by colour (also with colour-blind
eyes), or by its marker where two colours come close."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.vocabulary import INCOMPLETE
from napari_stem_defects.annotations.edits import site_species_choices
from napari_stem_defects.cells.shapes_layer import CLASS_COLOURS
from napari_stem_defects.columns.points_layer import (
    SPECIES_COLOURS, SYMBOL_DETECTED, SYMBOL_HOLLOW, point_colours, point_symbols,
)
from napari_stem_defects.columns.result import EMPTY
from napari_stem_defects.dynamics.layers import EVENT_COLOURS
from napari_stem_defects.heatmaps.layers import REGION_COLOURS
from napari_stem_defects.materials import KNOWN_MATERIALS
from napari_stem_defects.palette import MIN_DELTA_E, VISIONS, closest_pair, delta_e, simulate_cvd
from napari_stem_defects.simulate.defects import CELL_CLASSES


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * v):02X}" for v in rgba[:3])


def test_the_colour_blindness_simulation_and_distance_behave_as_published():
    # a dichromat cannot tell red from green by hue: their simulated colours fall close together
    red, green = "#D81B1B", "#4CAF50"
    assert delta_e(red, green) > 40
    assert delta_e(red, green, "deuteranopia") < 0.5 * delta_e(red, green)
    # greys (and white) are unchanged by every simulation
    for vision in ("deuteranopia", "protanopia", "tritanopia"):
        np.testing.assert_allclose(simulate_cvd("#808080", vision), simulate_cvd("#808080", "normal"), atol=0.01)
        np.testing.assert_allclose(simulate_cvd("#FFFFFF", vision), (1, 1, 1), atol=0.01)
    assert delta_e("#123456", "#123456", "protanopia") == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="unknown vision"):
        simulate_cvd("#FFFFFF", "martian")


@pytest.mark.parametrize("material", KNOWN_MATERIALS)
def test_the_species_of_one_material_differ_in_colour_or_marker(material):
    species = list(dict.fromkeys(s for choices in site_species_choices(material).values() for s in choices))
    filled = [s for s in species if s not in (EMPTY, "adatom")]
    distance, a, b, vision = closest_pair(SPECIES_COLOURS, filled, VISIONS)
    assert distance >= MIN_DELTA_E, f"{material}: {a} and {b} look alike ({vision}, ΔE2000 {distance:.1f})"
    # the two that may share a colour with another species differ by their marker instead
    table = pd.DataFrame({"sublattice": ["X", "M", "H"], "species": ["S2", EMPTY, "adatom"],
                          "refined_by": ["gaussian", "lattice", "gaussian"]})
    face, _ = point_colours(table)
    symbols = point_symbols(table)
    assert face[1, 3] == 0.0 < face[0, 3]  # an empty site is a hollow ring
    assert symbols[2] == SYMBOL_HOLLOW != SYMBOL_DETECTED == symbols[0]  # an adatom is a diamond


def test_the_free_mixture_classes_differ_in_colour():
    names = ["M1", "M2", "M3", "M4", "X1", "X2", "X3", "X4"]
    distance, a, b, vision = closest_pair(SPECIES_COLOURS, names)
    assert distance >= MIN_DELTA_E, f"{a} and {b} look alike ({vision}, ΔE2000 {distance:.1f})"


def test_every_cell_class_has_its_own_colour_and_defects_are_not_grey():
    assert set(CLASS_COLOURS) == {*CELL_CLASSES, INCOMPLETE}  # 'incomplete': border cells, no class
    distance, a, b, vision = closest_pair(CLASS_COLOURS)
    assert distance >= MIN_DELTA_E, f"{a} and {b} look alike ({vision}, ΔE2000 {distance:.1f})"
    from skimage.color import rgb2lab

    for cls, colour in CLASS_COLOURS.items():  # grey is the perfect lattice (and cells without a class)
        lab = rgb2lab(np.array([[simulate_cvd(colour, "normal")]]))[0, 0]
        assert (np.hypot(lab[1], lab[2]) > 20) == (cls not in ("perfect", INCOMPLETE)), cls


@pytest.mark.parametrize("colours", [REGION_COLOURS, {k: _hex(v) for k, v in EVENT_COLOURS.items()}],
                         ids=["heatmap families", "dynamics events"])
def test_heatmap_families_and_events_differ_in_colour(colours):
    distance, a, b, vision = closest_pair(colours)
    assert distance >= MIN_DELTA_E, f"{a} and {b} look alike ({vision}, ΔE2000 {distance:.1f})"


def test_the_check_finds_a_pair_a_colour_blind_person_cannot_tell_apart():
    # the first release's orange metal vacancy and ochre metal dopant: apart for normal vision only
    old = {"V_M": "#EE7733", "dopant_M": "#DDAA33", "perfect": "#BBBBBB"}
    distance, a, b, vision = closest_pair(old)
    assert distance < MIN_DELTA_E and {a, b} == {"V_M", "dopant_M"} and vision == "deuteranopia"
    assert delta_e(old["V_M"], old["dopant_M"]) > MIN_DELTA_E
    assert all(delta_e(x, y) > 0 for x, y in itertools.combinations(old.values(), 2))
