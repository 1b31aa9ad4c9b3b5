"""Digital twins: ground truth agrees with the image, by construction and by measurement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_stem_defects.materials import ATOMIC_NUMBER, parse_material
from napari_stem_defects.simulate.cross_sections import column_cross_section
from napari_stem_defects.simulate import (
    CELL_CLASSES,
    DEFECT_TYPES,
    SITE_COLUMNS,
    ImagingParams,
    random_imaging,
    simulate_twin,
)

SHARP = dict(probe_fwhm=0.6, tail_fraction=0.0, background=0.0, texture=0.0, line_jitter=0.0)


def _peak(image: np.ndarray, y: float, x: float, r: int = 2) -> float:
    iy, ix = int(round(y)), int(round(x))
    return float(image[max(iy - r, 0) : iy + r + 1, max(ix - r, 0) : ix + r + 1].max())


def test_same_seed_same_twin_and_other_seed_differs():
    kwargs = dict(shape=(96, 128), defects={"V_X1": 0.05, "V_M": 0.02}, rotation_deg=None)
    a = simulate_twin("MoS2", seed=3, **kwargs)
    b = simulate_twin("MoS2", seed=3, **kwargs)
    c = simulate_twin("MoS2", seed=4, **kwargs)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.sites.equals(b.sites) and a.cells.equals(b.cells)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (96, 128) and a.image.dtype == np.float32
    assert list(a.sites.columns) == list(SITE_COLUMNS)


def test_sites_cover_the_field_of_view_on_a_honeycomb():
    twin = simulate_twin("WSe2", (200, 240), 0.1, rotation_deg=13.0, seed=1, imaging=ImagingParams(dose=None))
    s = twin.sites
    assert s["y_px"].between(-0.5, 199.5).all() and s["x_px"].between(-0.5, 239.5).all()
    m = s[s.sublattice == "M"][["y_px", "x_px"]].to_numpy()
    x = s[s.sublattice == "X"][["y_px", "x_px"]].to_numpy()
    # every metal's nearest chalcogen column sits a / sqrt(3) away
    d = np.sqrt(((m[:, None, :] - x[None, :, :]) ** 2).sum(-1)).min(axis=1)
    expected = parse_material("WSe2").a / np.sqrt(3) / 0.1
    interior = (m[:, 0] > 20) & (m[:, 0] < 180) & (m[:, 1] > 20) & (m[:, 1] < 220)
    np.testing.assert_allclose(d[interior], expected, rtol=1e-6)
    # density: one M and one X per cell of area sqrt(3)/2 a^2
    cell_area_px = np.sqrt(3) / 2 * (parse_material("WSe2").a / 0.1) ** 2
    assert abs(len(m) - 200 * 240 / cell_area_px) / len(m) < 0.05
    assert abs(len(m) - len(x)) / len(m) < 0.05


def test_every_occupied_site_is_a_local_maximum_at_high_dose():
    twin = simulate_twin(
        "MoS2", (256, 256), 0.1, rotation_deg=5.0, seed=2,
        defects={"V_X1": 0.05, "V_X2": 0.03, "V_M": 0.03, "adatom": 0.0},
        imaging=ImagingParams(dose=1e7),
    )
    smooth = ndimage.gaussian_filter(twin.image.astype(float), 1.0)
    occupied = twin.sites[twin.sites.n_atoms > 0]
    r = 4  # px, well inside the 18 px M-X spacing
    misses = 0
    for y, x in occupied[["y_px", "x_px"]].to_numpy():
        iy, ix = int(round(y)), int(round(x))
        y0, x0 = max(iy - r, 0), max(ix - r, 0)
        win = smooth[y0 : iy + r + 1, x0 : ix + r + 1]
        py, px = np.unravel_index(np.argmax(win), win.shape)
        misses += np.hypot(py + y0 - y, px + x0 - x) > 1.5
    assert misses == 0


def test_vacancies_are_dim_and_single_chalcogens_half_as_bright():
    twin = simulate_twin(
        "MoS2", (256, 256), 0.1, rotation_deg=0.0, seed=5,
        defects={"V_X1": 0.05, "V_X2": 0.05, "V_M": 0.05}, imaging=ImagingParams(gamma=None, dose=None, **SHARP),
    )
    img, s = twin.image, twin.sites
    peak = {key: np.array([_peak(img, y, x) for y, x in grp[["y_px", "x_px"]].to_numpy()])
            for key, grp in s.groupby("species")}
    assert {"Mo", "S2", "S", ""} <= set(peak)
    assert peak[""].max() < 0.05 * peak["S2"].min()
    ratio = np.median(peak["S"]) / np.median(peak["S2"])
    # a single S scatters about half as much as an S2 column; multislice (the calibrated table) says
    # how much more than half: the pair's two atoms scatter partly coherently
    settings = twin.imaging.microscope
    expect = column_cross_section("S", settings) / column_cross_section("S2", settings)
    assert 0.45 < expect < 0.56
    assert ratio == pytest.approx(expect, rel=0.03)


@pytest.mark.parametrize("gamma", [1.7, 2.0])
def test_column_intensities_follow_z_to_the_gamma(gamma):
    twin = simulate_twin(
        "MoWSSe", (256, 256), 0.08, rotation_deg=0.0, seed=7,
        imaging=ImagingParams(dose=None, gamma=gamma, **SHARP),
    )
    img, s = twin.image, twin.sites
    inner = s[s.y_px.between(5, 250) & s.x_px.between(5, 250)]
    med = {sp: np.median([_peak(img, y, x) for y, x in g[["y_px", "x_px"]].to_numpy()])
           for sp, g in inner.groupby("species")}
    z = ATOMIC_NUMBER
    expect = {"Mo": z["Mo"] ** gamma, "W": z["W"] ** gamma, "S2": 2 * z["S"] ** gamma,
              "SSe": z["S"] ** gamma + z["Se"] ** gamma, "Se2": 2 * z["Se"] ** gamma}
    for sp in ("W", "S2", "SSe", "Se2"):
        assert med[sp] / med["Mo"] == pytest.approx(expect[sp] / expect["Mo"], rel=0.02), sp


def test_poisson_statistics_at_the_given_dose():
    base = dict(material="MoS2", shape=(256, 256), pixel_size=0.12, seed=11, rotation_deg=0.0)
    low = simulate_twin(**base, imaging=ImagingParams(dose=1e4))
    high = simulate_twin(**base, imaging=ImagingParams(dose=1e5))
    # expected counts scale with dose exactly; electrons per pixel = dose * pixel area * fraction
    assert high.expected.sum() / low.expected.sum() == pytest.approx(10.0, rel=1e-5)
    lam = high.expected.astype(float)
    z = (high.image - lam) / np.sqrt(lam)
    assert abs(z.mean()) < 0.02
    assert z.var() == pytest.approx(1.0, abs=0.03)
    assert np.all(high.image == np.round(high.image))  # counts are integers without read noise


def test_detector_noise_gain_and_offset():
    twin = simulate_twin("MoS2", (128, 128), 0.12, seed=1,
                         imaging=ImagingParams(dose=1e5, read_noise=3.0, gain=2.0, offset=100.0))
    resid = (twin.image - 100.0) / 2.0 - twin.expected
    assert resid.var() == pytest.approx(twin.expected.mean() + 9.0, rel=0.05)


def test_defects_requested_are_placed_and_labelled_consistently():
    fractions = {k: 0.02 for k in DEFECT_TYPES}
    twin = simulate_twin("MoS2", (400, 400), 0.12, seed=9, defects=fractions, imaging=ImagingParams(dose=None))
    cells, sites = twin.cells, twin.sites
    assert set(cells["class"]) <= set(CELL_CLASSES)
    counts = cells["class"].value_counts()
    n = counts.sum()
    for kind in DEFECT_TYPES:
        assert counts.get(kind, 0) == pytest.approx(0.02 * n, abs=2), kind
    by_id = sites.set_index("site_id")
    for _, cell in cells.iterrows():
        m = by_id.loc[cell.m_site_id] if cell.m_site_id >= 0 else None
        x = by_id.loc[cell.x_site_id] if cell.x_site_id >= 0 else None
        k = cell["class"]
        if m is not None:
            want_m = {"V_M": "", "V_X1+V_M": "", "V_X2+V_M": "", "X_M": "S2", "dopant_M": "W"}.get(k, "Mo")
            assert m.species == want_m, (k, m.species)
        if x is not None:
            want_x = {"V_X1": "S", "V_X1+V_M": "S", "V_X2": "", "V_X2+V_M": "", "M_X": "Mo", "sub_X": "SSe"}.get(k, "S2")
            assert x.species == want_x, (k, x.species)
    adatoms = sites[sites.sublattice == "H"]
    assert len(adatoms) == counts["adatom"] and (adatoms.species == "Mo").all()
    assert set(sites.loc[sites.sublattice == "X", "defect"]) == {"none", "V_X1", "V_X2", "M_X", "sub_X"}
    assert set(sites.loc[sites.sublattice == "M", "defect"]) == {"none", "V_M", "X_M", "dopant_M"}


def test_alloy_and_janus_composition():
    alloy = simulate_twin("Mo0.7W0.3S1Se1", (800, 800), 0.12, seed=4, imaging=ImagingParams(dose=None))
    metals = alloy.sites.loc[alloy.sites.sublattice == "M", "species"].value_counts(normalize=True)
    assert metals["W"] == pytest.approx(0.3, abs=0.05)
    columns = alloy.sites.loc[alloy.sites.sublattice == "X", "species"].value_counts(normalize=True)
    assert columns["SSe"] == pytest.approx(0.5, abs=0.05)
    assert columns["S2"] == pytest.approx(0.25, abs=0.05)
    janus = simulate_twin("Janus-MoSSe", (128, 128), 0.12, seed=4, imaging=ImagingParams(dose=None))
    assert set(janus.sites.loc[janus.sites.sublattice == "X", "species"]) == {"SSe"}


def test_drift_moves_the_ground_truth_with_the_image():
    drift = (0.03, 0.02)
    twin = simulate_twin("MoS2", (256, 256), 0.1, seed=3, rotation_deg=0.0,
                         imaging=ImagingParams(dose=None, drift=drift, **SHARP))
    smooth = twin.image
    s = twin.sites[(twin.sites.n_atoms > 0) & twin.sites.y_px.between(10, 245) & twin.sites.x_px.between(10, 245)]
    # the centre of mass of each column's peak (window re-centred on it) equals its labelled position
    errs = []
    for y, x in s[["y_px", "x_px"]].to_numpy()[:200]:
        cy, cx = y, x
        for _ in range(3):
            iy, ix = int(round(cy)), int(round(cx))
            win = smooth[iy - 7 : iy + 8, ix - 7 : ix + 8].astype(float)
            yy, xx = np.mgrid[iy - 7 : iy + 8, ix - 7 : ix + 8]
            cy, cx = (win * yy).sum() / win.sum(), (win * xx).sum() / win.sum()
        errs.append(np.hypot(cy - y, cx - x))
    # (without drift in the labels, columns near the bottom would be off by up to 0.03 * 250 = 7 px)
    assert np.max(errs) < 0.1


def test_random_imaging_draws_wide_valid_conditions():
    rng = np.random.default_rng(0)
    draws = [random_imaging(rng) for _ in range(200)]
    doses = np.log10([d.dose for d in draws])
    assert doses.min() < 3.5 and doses.max() > 6.5
    # the Z-contrast model, kept for comparison (the default draws the calibrated table: test_cross_sections)
    zpower = [random_imaging(rng, column_model="zpower") for _ in range(200)]
    gammas = [d.gamma for d in zpower]
    assert min(gammas) < 1.5 and max(gammas) > 1.9
    twin = simulate_twin("MoTe2", (64, 64), 0.15, seed=1, imaging=draws[0])
    assert np.isfinite(twin.image).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shape=(4, 4)), "too small"),
        (dict(defects={"V_S": 0.1}), "unknown defect"),
        (dict(defects={"V_X1": 0.7, "V_M": 0.7}), "sum to at most 1"),
        (dict(material="MoO2"), "neither"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_twin(**{"material": "MoS2", **kwargs})
