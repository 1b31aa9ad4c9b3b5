"""The multislice-calibrated cross-section table and the fast twins that use it (no abTEM needed)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from napari_stem_defects.materials import ATOMIC_NUMBER
from napari_stem_defects.simulate import ImagingParams, random_imaging, simulate_twin
from napari_stem_defects.simulate.cross_sections import (
    PAIR_CONTENTS,
    SINGLE_CONTENTS,
    TABLE_FILE,
    column_cross_section,
    load_table,
    probe_shape,
)
from napari_stem_defects.simulate.imaging import content_cross_section
from napari_stem_defects.simulate.imaging_conditions import calibrated_imaging
from napari_stem_defects.simulate.imaging import column_cross_section as slot_cross_sections
from napari_stem_defects.simulate.microscope import MicroscopeSettings
from napari_stem_defects.simulate.twin import with_dose

HAADF80 = MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70, detector_outer_mrad=200)


def test_table_is_small_documented_and_covers_every_content():
    data = json.loads(TABLE_FILE.read_text())
    assert TABLE_FILE.stat().st_size < 120_000
    assert "isolated column" in data["method"] and data["protocol"]["code"] == "abTEM"
    table = load_table()
    assert set(SINGLE_CONTENTS) | set(PAIR_CONTENTS) == set(table.contents)
    for content in table.contents:
        assert column_cross_section(content, HAADF80) > 0
    assert column_cross_section("", HAADF80) == 0.0


def test_single_atoms_brighten_with_z_and_pairs_are_near_twice_a_single():
    values = {el: column_cross_section(el, HAADF80) for el in SINGLE_CONTENTS}
    by_z = sorted(SINGLE_CONTENTS, key=ATOMIC_NUMBER.__getitem__)
    assert all(values[a] < values[b] for a, b in zip(by_z, by_z[1:]))
    # effective Z exponent of Mo against S in the usual HAADF range
    gamma = np.log(values["Mo"] / values["S"]) / np.log(42 / 16)
    assert 1.3 < gamma < 2.0
    thermal = dataclasses.replace(HAADF80, frozen_phonons=8)
    for pair, single in (("S2", "S"), ("Se2", "Se"), ("Te2", "Te")):
        assert 1.6 < column_cross_section(pair, HAADF80) / values[single] < 2.2
        assert 1.85 < column_cross_section(pair, thermal) / column_cross_section(single, thermal) < 2.25
    # single atoms do not depend on thermal vibration; pairs lose coherence and brighten
    assert column_cross_section("Mo", thermal) == pytest.approx(values["Mo"], rel=1e-9)
    assert column_cross_section("S2", thermal) > column_cross_section("S2", HAADF80)


def test_interpolation_is_smooth_and_follows_the_physics_of_the_settings():
    sig = lambda content, **kw: column_cross_section(content, dataclasses.replace(HAADF80, **kw))  # noqa: E731
    # a wider detector collects more; a larger inner angle less; higher energy less
    assert sig("Mo", detector_outer_mrad=250) > sig("Mo") > sig("Mo", detector_inner_mrad=90)
    energies = [60, 70, 80, 90, 100, 140, 200, 250, 300]
    mo = [sig("Mo", energy_kV=kv) for kv in energies]
    assert all(a > b for a, b in zip(mo, mo[1:]))
    # between grid energies the value lies between its neighbours' (no interpolation overshoot)
    assert sig("W", energy_kV=80) > sig("W", energy_kV=90) > sig("W", energy_kV=100)
    # the convergence angle matters when the detector's inner angle is near it
    assert sig("Mo", convergence_mrad=35, detector_inner_mrad=45) > 1.05 * sig("Mo", convergence_mrad=20,
                                                                                 detector_inner_mrad=45)


def test_settings_outside_the_table_and_bad_settings_are_refused_with_a_message():
    with pytest.raises(ValueError, match="outside 60-300 kV"):
        MicroscopeSettings(energy_kV=30)
    with pytest.raises(ValueError, match="must exceed the convergence"):
        MicroscopeSettings(convergence_mrad=30, detector_inner_mrad=25)
    with pytest.raises(ValueError, match="outer angle"):
        MicroscopeSettings(detector_outer_mrad=400)
    with pytest.raises(ValueError, match="unknown element"):
        column_cross_section("Xx2", HAADF80)


def test_probe_shape_narrows_with_energy_and_convergence_and_adds_the_source():
    fwhm = [probe_shape(dataclasses.replace(HAADF80, energy_kV=kv)).fwhm_A for kv in (60, 120, 300)]
    assert fwhm[0] > fwhm[1] > fwhm[2] > 0.2
    wide = probe_shape(dataclasses.replace(HAADF80, convergence_mrad=15, detector_inner_mrad=60)).fwhm_A
    assert wide > probe_shape(HAADF80).fwhm_A
    base = probe_shape(HAADF80)
    blurred = probe_shape(dataclasses.replace(HAADF80, source_size_A=0.5))
    assert blurred.fwhm_A == pytest.approx(np.hypot(base.fwhm_A, 0.5))
    assert 0 <= base.tail_fraction < 0.6 and base.tail_width_A > 0


SHARP = dict(probe_fwhm=0.3, tail_fraction=0.0, background=0.0, texture=0.0, dose=None)


def _peak(img, y, x):
    iy, ix = int(round(y)), int(round(x))
    return img[iy - 3 : iy + 4, ix - 3 : ix + 4].sum()


def test_fast_twin_column_cross_section_follow_the_table():
    imaging = ImagingParams(gamma=None, microscope=HAADF80, **SHARP)
    twin = simulate_twin("MoWSSe", (256, 256), 0.08, rotation_deg=0.0, seed=7, imaging=imaging,
                         defects={"V_X1": 0.05, "X_M": 0.03})
    s = twin.sites.copy()
    # an S+Se column scatters as the table's 'SSe' (Se where the beam enters) or 'SeS' (Se where it leaves),
    # about half of each in an alloy; every other column as its species
    mixed = s["species"] == "SSe"
    expect = np.array([column_cross_section(sp, HAADF80) for sp in s["species"]])
    assert np.allclose(s["cross_section_A2"][~mixed], expect[~mixed], rtol=1e-9)
    orders = {c: np.isclose(s["cross_section_A2"][mixed], column_cross_section(c, HAADF80), rtol=1e-9)
              for c in ("SSe", "SeS")}
    assert (orders["SSe"] | orders["SeS"]).all() and 0.4 < orders["SSe"].mean() < 0.6
    s.loc[mixed, "species"] = np.where(orders["SeS"], "SeS", "SSe")
    inner = s[s.y_px.between(5, 250) & s.x_px.between(5, 250)]
    med = {sp: np.median([_peak(twin.image, y, x) for y, x in g[["y_px", "x_px"]].to_numpy()])
           for sp, g in inner.groupby("species")}
    for sp in ("W", "S2", "SSe", "SeS", "Se2"):
        want = column_cross_section(sp, HAADF80) / column_cross_section("Mo", HAADF80)
        assert med[sp] / med["Mo"] == pytest.approx(want, rel=0.02), sp


def test_scale_and_per_content_factors_and_the_z_power_fallback():
    base = ImagingParams(gamma=None, microscope=HAADF80)
    slots = np.array([[42, 0], [16, 16], [16, 34], [0, 0]])
    plain = slot_cross_sections(slots, base)
    scaled = slot_cross_sections(slots, dataclasses.replace(base, cross_section_scale=2.0,
                                                         content_factors=(("S2", 1.1),)))
    assert np.allclose(scaled[:3] / plain[:3], [2.0, 2.2, 2.0]) and scaled[3] == 0.0
    assert plain[3] == 0.0 and plain[0] == pytest.approx(column_cross_section("Mo", HAADF80))
    # an S+Se column by its order (slot 0: the exit side), and a factor on 'SSe' holds for both orders
    pair = np.array([[34, 16], [16, 34]])
    ordered = slot_cross_sections(pair, base)
    assert ordered.tolist() == [column_cross_section("SeS", HAADF80), column_cross_section("SSe", HAADF80)]
    assert ordered[0] > 1.05 * ordered[1]
    factored = slot_cross_sections(pair, dataclasses.replace(base, content_factors=(("SSe", 1.1),)))
    assert np.allclose(factored / ordered, 1.1)
    zpower = ImagingParams(gamma=1.7, cross_section=1e-4)
    assert slot_cross_sections(slots, zpower)[1] == pytest.approx(1e-4 * 2 * 16**1.7)
    assert content_cross_section("SSe", zpower) == pytest.approx(1e-4 * (16**1.7 + 34**1.7))
    # the Z-contrast model stays the default until the shipped models are retrained on the table
    assert ImagingParams().column_model == "zpower" and ImagingParams(gamma=None).column_model == "table"


def test_imaging_params_round_trip_through_a_plain_dict():
    im = random_imaging(np.random.default_rng(3), column_model="table")
    again = ImagingParams(**json.loads(json.dumps(im.as_dict())))
    assert again == im
    assert isinstance(again.microscope, MicroscopeSettings)


def test_random_imaging_draws_microscopes_widely_and_stays_near_the_table():
    rng = np.random.default_rng(0)
    draws = [random_imaging(rng, column_model="table") for _ in range(300)]
    kv = np.array([d.microscope.energy_kV for d in draws])
    assert kv.min() == 60 and kv.max() == 300 and len(np.unique(kv)) > 100
    inner = np.array([d.microscope.detector_inner_mrad for d in draws])
    outer = np.array([d.microscope.detector_outer_mrad for d in draws])
    assert inner.min() < 35 and inner.max() > 90 and outer.min() < 160 and outer.max() > 280
    assert all(d.column_model == "table" for d in draws)
    factors = np.concatenate([[f for _, f in d.content_factors] for d in draws])
    assert 0.02 < factors.std() < 0.04 and factors.min() >= 0.9 and factors.max() <= 1.1
    thermal = np.mean([d.microscope.frozen_phonons > 0 for d in draws])
    assert 0.6 < thermal < 0.9
    for d in draws[:20]:
        table = probe_shape(d.microscope).fwhm_A
        assert 0.85 * table < d.probe_fwhm < 1.2 * table
    twin = simulate_twin("Janus-MoSSe", (64, 64), 0.15, seed=1, imaging=draws[0])
    assert np.isfinite(twin.image).all()
    old = random_imaging(np.random.default_rng(0), column_model="zpower")
    assert old.column_model == "zpower" and 1.4 <= old.gamma <= 2.0


def test_calibrated_imaging_takes_probe_and_columns_from_the_table():
    s = MicroscopeSettings(energy_kV=200, convergence_mrad=25, detector_inner_mrad=80, detector_outer_mrad=250,
                           source_size_A=0.4)
    im = calibrated_imaging(s, dose=1e5)
    shape = probe_shape(s)
    assert (im.probe_fwhm, im.tail_fraction, im.tail_width) == (shape.fwhm_A, shape.tail_fraction, shape.tail_width_A)
    assert im.microscope == s and im.dose == 1e5 and im.gamma is None


def test_one_clean_twin_gives_several_doses_with_the_same_truth():
    clean = simulate_twin("WSe2", (96, 96), 0.12, seed=4, imaging=ImagingParams(dose=None), defects={"V_X1": 0.05})
    low, high = with_dose(clean, 1e4, seed=1), with_dose(clean, 1e6, seed=1)
    for twin in (low, high):
        assert twin.sites.equals(clean.sites) and twin.cells.equals(clean.cells)
    area = clean.pixel_size**2
    assert np.allclose(high.expected, clean.image * 1e6 * area, rtol=1e-5)
    # Poisson: variance of counts equals their mean
    resid = (low.image - low.expected) / np.sqrt(np.maximum(low.expected, 1e-9))
    assert abs(resid[low.expected > 5].std() - 1.0) < 0.05
    with pytest.raises(ValueError, match="noise-free"):
        with_dose(low, 1e5)


@pytest.mark.parametrize("kv, inner, outer, alpha", [(60, 50, 200, 28), (80, 70, 200, 30), (200, 75, 180, 22)])
def test_3d_dopants_mn_co_sit_between_cr_and_nb_in_the_table(kv, inner, outer, alpha):
    s = MicroscopeSettings(energy_kV=kv, convergence_mrad=alpha, detector_inner_mrad=inner, detector_outer_mrad=outer)
    sig = {el: column_cross_section(el, s) for el in ("V", "Cr", "Mn", "Co", "Nb")}
    assert {"Mn", "Co"} <= set(load_table().contents)
    assert sig["V"] < sig["Cr"] < sig["Mn"] < sig["Co"] < sig["Nb"]
    # Z^gamma between neighbours: Co (27) over Mn (25) near (27/25)^1.3-2.0, not a table slip
    assert (27 / 25) ** 1.2 < sig["Co"] / sig["Mn"] < (27 / 25) ** 2.2


def test_fast_twin_places_a_stated_mn_dopant_dimmer_than_w_and_brighter_than_an_empty_site():
    imaging = calibrated_imaging(HAADF80, dose=None, background=0.0, texture=0.0, line_jitter=0.0)
    twin = simulate_twin("WSe2+Mn", (256, 256), 0.12, rotation_deg=0.0, seed=3, imaging=imaging,
                         defects={"dopant_M": 0.08, "V_M": 0.05})
    s = twin.sites
    metal = s[(s.sublattice == "M") & s.y_px.between(5, 250) & s.x_px.between(5, 250)]
    assert set(metal.loc[metal.defect == "dopant_M", "species"]) == {"Mn"}
    peak = {sp: np.array([_peak(twin.image, y, x) for y, x in g[["y_px", "x_px"]].to_numpy()])
            for sp, g in metal.groupby("species")}
    assert len(peak["Mn"]) >= 3 and len(peak[""]) >= 2
    assert peak["W"].min() > peak["Mn"].max() and peak["Mn"].min() > peak[""].max()
    # the Mn column's excess over an empty site follows the table (Z 25 against W's 74)
    want = column_cross_section("Mn", HAADF80) / column_cross_section("W", HAADF80)
    got = (np.median(peak["Mn"]) - np.median(peak[""])) / (np.median(peak["W"]) - np.median(peak[""]))
    assert got == pytest.approx(want, rel=0.15)
