"""Material formulas, lattice constants and Vegard's law."""

import math

import pytest

from napari_stem_defects.materials import KNOWN_MATERIALS, parse_material


@pytest.mark.parametrize(
    "name, metals, chalcogens, a",
    [
        ("MoS2", {"Mo": 1.0}, {"S": 1.0}, 3.160),
        ("WSe2", {"W": 1.0}, {"Se": 1.0}, 3.282),
        ("MoTe2", {"Mo": 1.0}, {"Te": 1.0}, 3.519),
        ("MoWSSe", {"Mo": 0.5, "W": 0.5}, {"S": 0.5, "Se": 0.5}, (3.160 + 3.153 + 3.289 + 3.282) / 4),
        ("Mo0.8W0.2S2", {"Mo": 0.8, "W": 0.2}, {"S": 1.0}, 0.8 * 3.160 + 0.2 * 3.153),
    ],
)
def test_formulas_give_composition_and_vegard_lattice_constant(name, metals, chalcogens, a):
    m = parse_material(name)
    assert m.metals == pytest.approx(metals) and m.chalcogens == pytest.approx(chalcogens)
    assert m.a == pytest.approx(a, abs=1e-9)
    assert m.d100 == pytest.approx(a * math.sqrt(3) / 2)


def test_janus_needs_two_chalcogens_and_every_known_name_parses():
    assert parse_material("Janus-MoSSe").janus
    with pytest.raises(ValueError, match="Janus"):
        parse_material("Janus-MoS2")
    for name in KNOWN_MATERIALS:
        assert parse_material(name).a > 3.0


@pytest.mark.parametrize("bad", ["", "mos2", "MoXx2", "S2", "Mo", "MoO2"])
def test_bad_formulas_are_refused_with_a_message(bad):
    with pytest.raises(ValueError):
        parse_material(bad)


def test_context_vector_orders_materials_by_z():
    assert parse_material("WSe2").context_vector()[0] > parse_material("MoSe2").context_vector()[0]
    assert parse_material("MoWSSe").context_vector()[1] > 0  # spread of Z on the metal sites


@pytest.mark.parametrize("dopant, z", [("Mn", 25), ("Co", 27)])
def test_3d_dopants_parse_after_plus_as_foreign_metals(dopant, z):
    from napari_stem_defects.materials import ATOMIC_NUMBER, METALS

    m = parse_material(f"WSe2+{dopant}")
    assert m.dopants == (dopant,) and m.metals == {"W": 1.0} and ATOMIC_NUMBER[dopant] == z and dopant in METALS
    assert m.a == pytest.approx(3.282)  # the host's lattice; a dopant does not change it
    with pytest.raises(ValueError, match="lattice constant"):
        parse_material(f"{dopant}S2").a  # a 3d-metal host has no known 2H lattice constant
    with pytest.raises(ValueError, match="part of the host"):
        parse_material(f"WSe2+{dopant}+{dopant}")
