"""Composite twins (simulate_sample): every phenomenon against its exact construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_stem_defects.cell_convention import screen_angle
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import (
    CELL_COLUMNS,
    SAMPLE_CELL_COLUMNS,
    SAMPLE_SITE_COLUMNS,
    SITE_COLUMNS,
    Amorphous,
    Disc,
    Grain,
    HalfPlane,
    Hole,
    ImagingParams,
    Mask,
    MirrorRegion,
    PhaseRegion,
    Rect,
    simulate_sample,
)
from napari_stem_defects.simulate.sample import PHASE_DEFECTS
from napari_stem_defects.vocabulary import INCOMPLETE, PHASE_CODES

PX = 0.12
NN = parse_material("MoS2").a / np.sqrt(3) / PX  # metal-chalcogen distance in pixels (15.2)
CLEAN = ImagingParams(dose=None, background=0.0, texture=0.0, tail_fraction=0.0, line_jitter=0.0)
GB_LINE = HalfPlane.along((0.0, 380.0), -80.0)  # right of a line from (0, 380) running down, 10 deg off vertical
MIRROR = HalfPlane.along((150.0, 0.0), 7.0)  # above a line along a1 of the first grain
T1 = Disc((395.0, 125.0), 95.0)
HOLE = Disc((280.0, 250.0), 62.0)
PATCH = Disc((110.0, 450.0), 50.0)
MASK = Rect(440.0, 280.0, 500.0, 370.0)
REGIONS = [
    Grain(None, rotation_deg=7.0),
    MirrorRegion(MIRROR),
    Grain(GB_LINE, rotation_deg=25.0),
    PhaseRegion(T1, "1T"),
    Hole(HOLE),
    Amorphous(PATCH, contamination=4.0),
    Mask(MASK),
]
DEFECTS = {"V_X1": 0.05, "V_X2": 0.02, "V_M": 0.02, "V_X1+V_M": 0.01, "sub_X": 0.02, "M_X": 0.01, "adatom": 0.01}


@pytest.fixture(scope="module")
def twin():
    return simulate_sample("MoS2", (512, 512), PX, regions=REGIONS, defects=DEFECTS, imaging=CLEAN, seed=5)


def _yx(table: pd.DataFrame) -> np.ndarray:
    return table[["y_px", "x_px"]].to_numpy()


def _domains(twin) -> pd.DataFrame:
    return pd.DataFrame(twin.extra["domains"]).set_index("domain")


def _frac(points: np.ndarray, dom: pd.Series) -> np.ndarray:
    """Fractional lattice coordinates of points in a domain's grain lattice, mod 1."""
    basis = np.stack([dom["a1_px"], dom["a2_px"]], axis=1)
    f = np.linalg.solve(basis, (points - np.asarray(dom["origin_px"])).T).T
    return f - np.floor(f + 1e-6)


def _partner_positions(twin) -> tuple[np.ndarray, np.ndarray]:
    """Metal site and partner position of every cell (the centre is their midpoint)."""
    sites = twin.sites.set_index("site_id")
    m = _yx(sites.loc[twin.cells["m_site_id"]])
    return m, 2 * _yx(twin.cells) - m


def _to_other_domains(points: np.ndarray, domain: np.ndarray, sites: pd.DataFrame) -> np.ndarray:
    """Distance of each point to the nearest site of a domain other than its own."""
    out = np.full(len(points), np.inf)
    for k in np.unique(domain):
        mine = domain == k
        out[mine] = cKDTree(_yx(sites[sites["domain"] != k])).query(points[mine])[0]
    return out


def test_tables_keep_the_contract_and_add_their_columns_after_it(twin):
    assert tuple(twin.sites.columns) == SAMPLE_SITE_COLUMNS
    assert tuple(twin.cells.columns) == SAMPLE_CELL_COLUMNS
    assert SAMPLE_SITE_COLUMNS[: len(SITE_COLUMNS)] == SITE_COLUMNS
    assert SAMPLE_CELL_COLUMNS[: len(CELL_COLUMNS)] == CELL_COLUMNS
    assert twin.image.shape == twin.extra["phase_map"].shape == twin.extra["domain_map"].shape == (512, 512)
    assert twin.extra["phase_map"].dtype == np.uint8 and twin.extra["domain_map"].dtype == np.int32
    json.dumps(twin.metadata)  # the regions and domains are JSON-friendly; the maps stay out of the metadata


def test_sites_carry_the_domain_and_phase_of_their_region(twin):
    doms = _domains(twin)
    assert len(doms) == 4 and list(doms.index) == list(range(4))
    p = _yx(twin.sites)
    in_b = GB_LINE.contains(p)
    grain = doms.loc[twin.sites["domain"], "grain"].to_numpy()
    mirror = doms.loc[twin.sites["domain"], "mirror"].to_numpy()
    np.testing.assert_array_equal(grain, in_b.astype(int))
    one_t = T1.contains(p) & ~in_b
    np.testing.assert_array_equal(twin.sites["phase"].to_numpy() == "1T", one_t)
    np.testing.assert_array_equal(mirror, MIRROR.contains(p) & ~in_b & ~one_t)
    assert (doms.loc[twin.sites["domain"], "phase"].to_numpy() == twin.sites["phase"].to_numpy()).all()
    # every site lies on its grain's lattice: metals on lattice points, X on a third of the diagonal
    for d, dom in doms.iterrows():
        s = twin.sites[twin.sites["domain"] == d]
        f = _frac(_yx(s), dom)
        on = {"M": [0, 0], "X": [1 / 3, 1 / 3] if not dom["mirror"] else [2 / 3, 2 / 3], "H": [2 / 3, 2 / 3]}
        for sub, target in on.items():
            got = f[(s["sublattice"] == sub).to_numpy()]
            if dom["phase"] == "1T" and sub == "X":  # both non-metal cosets hold a column
                first, second = (np.isclose(got, c, atol=1e-6).all(axis=1) for c in (1 / 3, 2 / 3))
                assert (first | second).all() and abs(first.sum() - second.sum()) < 0.2 * len(got)
            else:
                dist = np.minimum(np.abs(got - target), 1 - np.abs(got - target))
                assert (dist < 1e-6).all(), (d, sub)


def test_mirror_domain_has_its_x2_columns_on_the_other_coset(twin):
    doms = _domains(twin)
    mirror, normal = doms.index[doms["mirror"]][0], doms.index[(doms["grain"] == 0) & ~doms["mirror"]
                                                                & (doms["phase"] == "2H")][0]
    for d, coset in ((normal, 1 / 3), (mirror, 2 / 3)):
        x = twin.sites[(twin.sites["domain"] == d) & (twin.sites["sublattice"] == "X")]
        assert len(x) > 50
        np.testing.assert_allclose(_frac(_yx(x), doms.loc[d]), coset, atol=1e-6)
    # same metal lattice on both sides of the twin boundary
    for d in (normal, mirror):
        m = twin.sites[(twin.sites["domain"] == d) & (twin.sites["sublattice"] == "M")]
        f = _frac(_yx(m), doms.loc[mirror])
        assert (np.minimum(f, 1 - f) < 1e-6).all()


def test_1t_cells_hold_three_single_columns(twin):
    doms = _domains(twin)
    d = doms.index[doms["phase"] == "1T"][0]
    step = np.asarray(doms.loc[d, "partner_step_px"])
    cells = twin.cells[(twin.cells["domain"] == d) & (twin.cells["class"] != INCOMPLETE)]
    assert len(cells) > 30
    sites = twin.sites.set_index("site_id")
    m, x, x2 = (_yx(sites.loc[cells[c]]) for c in ("m_site_id", "x_site_id", "x2_site_id"))
    np.testing.assert_allclose(x - m, np.broadcast_to(step, m.shape), atol=1e-6)
    np.testing.assert_allclose(x2 - m, np.broadcast_to(-step, m.shape), atol=1e-6)
    assert (sites.loc[cells["x_site_id"], "sublattice"] == "X").all()
    assert (sites.loc[cells["x2_site_id"], "sublattice"] == "X").all()
    perfect = cells[cells["class"] == "perfect"]
    assert (perfect["x_species"] == "S").all() and (perfect["x2_species"] == "S").all()
    one_t = twin.sites[twin.sites["domain"] == d]
    assert (one_t["n_atoms"] <= 1).all() and (one_t[one_t["sublattice"] == "X"]["species"].isin(["S", "Se", ""])).all()
    # all three honeycomb positions hold a column: away from the interface every column has six
    # neighbouring columns at one metal-chalcogen distance (three in 2H)
    columns = twin.sites[twin.sites["sublattice"] != "H"]
    tree = cKDTree(_yx(columns))
    inner = twin.cells[~twin.cells["boundary"]]
    for phase, n in (("1T", 6), ("2H", 3)):
        metals = sites.loc[inner.loc[inner["phase"] == phase, "m_site_id"]]
        # a grain boundary drops atoms up to 1.6 nn from a metal: look 2 nn away from other domains
        far = _to_other_domains(_yx(metals), metals["domain"].to_numpy(), columns) > 2 * NN
        counts = np.array([len(v) - 1 for v in tree.query_ball_point(_yx(metals)[far], 1.05 * NN)])
        assert len(counts) > 10 and (counts == n).all(), phase
    # 2H cells have no second column
    assert (twin.cells.loc[twin.cells["phase"] == "2H", "x2_site_id"] == -1).all()
    assert (twin.cells.loc[twin.cells["phase"] == "2H", "x2_species"] == "").all()


@pytest.mark.parametrize("drift", [(0.0, 0.0), (0.012, -0.015)])
@pytest.mark.parametrize("rotation", [7.0, -33.0, 58.0])
def test_cell_pairing_follows_the_convention_in_every_domain(drift, rotation):
    imaging = ImagingParams(dose=None, drift=drift)
    regions = [Grain(None, rotation_deg=rotation), MirrorRegion(HalfPlane.along((100.0, 0.0), rotation)),
               Grain(HalfPlane.along((0.0, 200.0), -85.0), rotation_deg=rotation + 19.0),
               PhaseRegion(Disc((220.0, 90.0), 60.0), "1T")]
    twin = simulate_sample("MoS2", (300, 300), PX, regions=regions, imaging=imaging, seed=2)
    assert twin.sites["domain"].nunique() == 4  # grain 0: 2H, mirror, 1T; grain 1: 2H
    complete = twin.cells["class"] != INCOMPLETE
    m, x = _partner_positions(twin)
    angle = screen_angle(x - m)
    assert ((angle >= -60) & (angle < 60))[complete.to_numpy()].all()
    one_t = complete.to_numpy() & (twin.cells["phase"] == "1T").to_numpy()  # six X neighbours: [-30, 30)
    assert one_t.sum() > 10 and ((angle >= -30) & (angle < 30))[one_t].all()
    # the partner is a site of the cell's own domain at one metal-chalcogen distance (drift aside)
    sites = twin.sites.set_index("site_id")
    part = twin.cells[complete]
    assert (sites.loc[part["x_site_id"], "domain"].to_numpy() == part["domain"].to_numpy()).all()
    np.testing.assert_allclose(np.hypot(*(x - m)[complete.to_numpy()].T), NN, rtol=0.04)
    # one step per domain, as listed in extra['domains']
    doms = _domains(twin)
    step = np.stack(doms.loc[part["domain"], "partner_step_px"].to_numpy())
    np.testing.assert_allclose((x - m)[complete.to_numpy()], step, atol=1e-6)


def test_no_atoms_in_holes_and_the_hole_is_dark(twin):
    assert not HOLE.contains(_yx(twin.sites)).any()
    yy, xx = np.mgrid[:512, :512]
    r = np.hypot(yy - HOLE.centre[0], xx - HOLE.centre[1])
    crystal = twin.expected[(twin.extra["phase_map"] == PHASE_CODES["2H"])].mean()
    # probe FWHM 1 Å: 2 Å inside the edge nothing was scattered (no background in this twin)
    assert twin.expected[r < HOLE.radius - 2 / PX].max() < 1e-3 * crystal
    assert (twin.extra["phase_map"][r < HOLE.radius - 1] == PHASE_CODES["hole"]).all()
    # clean edge: the lattice runs up to the hole, no vacancy halo (every site 1 nn outside is occupied)
    rim = twin.sites[np.hypot(*(_yx(twin.sites) - HOLE.centre).T) < HOLE.radius + NN]
    assert len(rim) > 20 and (rim["n_atoms"] > 0).all()


def test_amorphous_patch_replaces_the_lattice_with_random_atoms(twin):
    assert not PATCH.contains(_yx(twin.sites)).any()
    yy, xx = np.mgrid[:512, :512]
    inner = np.hypot(yy - PATCH.centre[0], xx - PATCH.centre[1]) < PATCH.radius - 1.5 / PX
    assert (twin.extra["phase_map"][inner] == PHASE_CODES["amorphous"]).all()
    crystal = twin.expected[twin.extra["phase_map"] == PHASE_CODES["2H"]].mean()
    assert twin.expected[inner].mean() > 0.5 * crystal  # atoms there, and not on the lattice of the grain:
    maxima = (ndimage.maximum_filter(twin.expected, size=5) == twin.expected) & inner
    maxima &= twin.expected > 0.3 * twin.expected[inner].max()
    doms = _domains(twin)
    f = _frac(np.argwhere(maxima).astype(float), doms[doms["grain"] == 1].iloc[0])
    basis = np.stack([doms.loc[0, "a1_px"], doms.loc[0, "a2_px"]], axis=1)
    off = [min(np.hypot(*(basis @ (((fi - c + 0.5) % 1) - 0.5))) for c in ([0, 0], [1 / 3, 1 / 3], [2 / 3, 2 / 3]))
           for fi in f]
    assert len(off) > 8 and np.median(off) > 0.15 * NN
    # the contamination blob adds signal on the same random atoms
    plain = simulate_sample("MoS2", (512, 512), PX, regions=[*REGIONS[:5], Amorphous(PATCH), REGIONS[6]],
                            defects=DEFECTS, imaging=CLEAN, seed=5)
    assert twin.expected[inner].mean() > 1.2 * plain.expected[inner].mean()
    np.testing.assert_allclose(twin.expected[~inner & (np.hypot(yy - 110, xx - 450) > 80)],
                               plain.expected[~inner & (np.hypot(yy - 110, xx - 450) > 80)], rtol=1e-4, atol=1e-9)


def test_masks_are_nan_and_hold_no_sites(twin):
    masked = np.zeros((512, 512), bool)
    masked[440:500, 280:370] = True
    np.testing.assert_array_equal(np.isnan(twin.image), masked)
    np.testing.assert_array_equal(np.isnan(twin.expected), masked)
    pix = np.rint(_yx(twin.sites)).astype(int)
    assert not masked[pix[:, 0], pix[:, 1]].any()
    np.testing.assert_array_equal(twin.extra["phase_map"] == PHASE_CODES["masked"], masked)
    assert (twin.extra["domain_map"][masked] == 0).all()


def test_boundary_flags_follow_their_definition(twin):
    m, x = _partner_positions(twin)
    cells = twin.cells
    one_t = (cells["phase"] == "1T").to_numpy()
    positions = [m, x, np.where(one_t[:, None], 2 * m - x, m)]
    pm = twin.extra["phase_map"]
    excluded = cKDTree(np.argwhere(np.isin(pm, [PHASE_CODES[k] for k in ("hole", "amorphous", "masked")])))
    s = twin.sites
    dist = np.full(len(cells), np.inf)
    for p in positions:
        d = np.minimum.reduce([p[:, 0] + 0.5, 511.5 - p[:, 0], p[:, 1] + 0.5, 511.5 - p[:, 1], excluded.query(p)[0]])
        d = np.minimum(d, _to_other_domains(p, cells["domain"].to_numpy(), s))
        dist = np.minimum(dist, d)
    limit = 1.5 * NN
    flag = cells["boundary"].to_numpy()
    assert flag[dist < limit - 1].all() and not flag[dist > limit + 1].any()
    assert 0.1 < flag.mean() < 0.6
    # point defects only off the boundaries, and only the kinds each phase can hold
    defective = ~cells["class"].isin(["perfect", INCOMPLETE])
    assert defective.sum() > 20 and not (defective & cells["boundary"]).any()
    assert cells.loc[defective & (cells["phase"] == "1T"), "class"].isin(PHASE_DEFECTS["1T"]).all()
    assert cells.loc[defective & (cells["phase"] == "1T"), "class"].nunique() >= 2


def test_cells_without_their_partner_are_incomplete_never_defects(twin):
    cells = twin.cells
    m, x = _partner_positions(twin)
    outside = (x[:, 0] < -0.5) | (x[:, 0] > 511.5) | (x[:, 1] < -0.5) | (x[:, 1] > 511.5)
    assert outside.sum() > 10
    assert (cells.loc[outside, "class"] == INCOMPLETE).all() and (cells.loc[outside, "x_site_id"] == -1).all()
    missing = (cells["x_site_id"] == -1) | ((cells["phase"] == "1T") & (cells["x2_site_id"] == -1))
    np.testing.assert_array_equal(missing, cells["class"] == INCOMPLETE)
    assert cells.loc[missing, "boundary"].all()
    assert (cells.loc[cells["x_site_id"] == -1, "x_species"] == "").all()


def test_sites_and_cells_tell_one_story(twin):
    sites = twin.sites.set_index("site_id")
    cells = twin.cells[twin.cells["class"] != INCOMPLETE]
    np.testing.assert_array_equal(sites.loc[cells["m_site_id"], "species"], cells["m_species"])
    np.testing.assert_array_equal(sites.loc[cells["x_site_id"], "species"], cells["x_species"])
    np.testing.assert_array_equal(sites.loc[cells["m_site_id"], "cell_id"], cells["cell_id"])
    np.testing.assert_array_equal(sites.loc[cells["x_site_id"], "cell_id"], cells["cell_id"])
    for cls, expect in (("V_X1", ("S", "V_X1")), ("V_M", ("", "V_M"))):
        sel = cells[(cells["class"] == cls) & (cells["phase"] == "2H")]
        col = "x_site_id" if cls == "V_X1" else "m_site_id"
        assert len(sel)
        held = sites.loc[sel[col]]
        assert (held["species"] == expect[0]).all() and (held["defect"] == expect[1]).all()
    one_t = cells[(cells["phase"] == "1T") & (cells["class"] == "V_X1")]
    assert len(one_t)
    first, second = (sites.loc[one_t[c]] for c in ("x_site_id", "x2_site_id"))
    assert set(first["defect"].to_numpy() + "|" + second["defect"].to_numpy()) <= {"V_X1|none", "none|V_X1"}
    assert ((first["n_atoms"].to_numpy() == 0) ^ (second["n_atoms"].to_numpy() == 0)).all()
    # adatoms only on 2H hollow sites of their cell's domain
    h = twin.sites[twin.sites["sublattice"] == "H"]
    assert len(h) and (h["phase"] == "2H").all() and (h["defect"] == "adatom").all()
    assert (twin.cells.set_index("cell_id").loc[h["cell_id"], "domain"].to_numpy() == h["domain"].to_numpy()).all()


def test_phase_and_domain_maps_agree_with_the_sites(twin):
    pm, dm = twin.extra["phase_map"], twin.extra["domain_map"]
    pix = np.rint(_yx(twin.sites)).astype(int)
    np.testing.assert_array_equal(dm[pix[:, 0], pix[:, 1]], twin.sites["domain"] + 1)
    np.testing.assert_array_equal(pm[pix[:, 0], pix[:, 1]], twin.sites["phase"].map(PHASE_CODES))
    assert (pm != PHASE_CODES["none"]).all()
    assert set(np.unique(pm)) == {PHASE_CODES[k] for k in ("2H", "1T", "hole", "amorphous", "masked")}
    # every crystal pixel: its nearest site's domain (ties within a pixel aside)
    rng = np.random.default_rng(0)
    crystal = np.argwhere(dm > 0)
    probe = crystal[rng.choice(len(crystal), 3000, replace=False)]
    tree = cKDTree(_yx(twin.sites))
    d, idx = tree.query(probe, k=2)
    clear = d[:, 1] - d[:, 0] > 1.5
    nearest = twin.sites["domain"].to_numpy()[idx[clear, 0]]
    np.testing.assert_array_equal(dm[probe[clear, 0], probe[clear, 1]], nearest + 1)
    assert ((dm > 0) == np.isin(pm, [PHASE_CODES["2H"], PHASE_CODES["1T"]])).all()


def test_grains_meet_without_overlapping_atoms(twin):
    p = _yx(twin.sites[twin.sites["sublattice"] != "H"])
    pairs = cKDTree(p).query_pairs(0.6 * NN)
    assert not pairs
    grain = _domains(twin).loc[twin.sites["domain"], "grain"].to_numpy()
    assert set(grain) == {0, 1}
    doms = _domains(twin)
    tilt = doms.loc[doms["grain"] == 1, "rotation_deg"].iloc[0] - doms.loc[0, "rotation_deg"]
    assert tilt == pytest.approx(18.0)


def test_1t_prime_rows_are_displaced_pairwise():
    regions = [Grain(None, rotation_deg=10.0, origin=(3.0, 4.0), phase="1T", distorted=True, distortion_A=0.15)]
    twin = simulate_sample("WSe2", (200, 200), 0.1, regions=regions, imaging=ImagingParams(dose=None), seed=1)
    assert set(twin.sites["phase"]) == {"1T"}
    dom = _domains(twin).loc[0]
    m = twin.cells
    ideal = np.asarray(dom["origin_px"]) + np.outer(m["i"], dom["a1_px"]) + np.outer(m["j"], dom["a2_px"])
    metal = _yx(twin.sites.set_index("site_id").loc[m["m_site_id"]])
    shift = metal - ideal
    a1 = np.asarray(dom["a1_px"]) / np.hypot(*dom["a1_px"])
    np.testing.assert_allclose(shift @ a1, 0, atol=1e-9)  # perpendicular to the rows
    sign = np.where(m["j"] % 2 == 0, 1, -1)
    np.testing.assert_allclose(np.hypot(*shift.T), 0.15 / 0.1, rtol=1e-9)
    perp = shift @ np.array([a1[1], -a1[0]])
    np.testing.assert_allclose(perp * sign, 1.5, rtol=1e-9)
    x = twin.sites[twin.sites["sublattice"] == "X"]
    f = _frac(_yx(x), dom)
    assert (np.isclose(f, 1 / 3, atol=1e-6).all(axis=1) | np.isclose(f, 2 / 3, atol=1e-6).all(axis=1)).all()


def test_same_seed_same_sample_and_the_regions_reproduce_it(twin):
    again = simulate_sample("MoS2", (512, 512), PX, regions=REGIONS, defects=DEFECTS, imaging=CLEAN, seed=5)
    np.testing.assert_array_equal(again.image, twin.image)
    assert again.sites.equals(twin.sites) and again.cells.equals(twin.cells)
    replay = simulate_sample("MoS2", (512, 512), PX, regions=twin.extra["regions"], defects=DEFECTS, imaging=CLEAN,
                             seed=5)
    assert replay.sites.equals(twin.sites) and replay.cells.equals(twin.cells)
    other = simulate_sample("MoS2", (512, 512), PX, regions=REGIONS, defects=DEFECTS, imaging=CLEAN, seed=6)
    assert not other.sites.equals(twin.sites)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_layouts_keep_every_convention(seed):
    twin = simulate_sample("WS2", (320, 320), 0.15, defects={"V_X1": 0.05, "V_M": 0.02}, seed=seed)
    again = simulate_sample("WS2", (320, 320), 0.15, defects={"V_X1": 0.05, "V_M": 0.02}, seed=seed)
    assert again.cells.equals(twin.cells) and again.extra["regions"] == twin.extra["regions"]
    complete = (twin.cells["class"] != INCOMPLETE).to_numpy()
    m, x = _partner_positions(twin)
    angle = screen_angle(x - m)[complete]
    assert ((angle >= -60) & (angle < 60)).all()
    pm, dm = twin.extra["phase_map"], twin.extra["domain_map"]
    pix = np.rint(_yx(twin.sites)).astype(int)
    np.testing.assert_array_equal(dm[pix[:, 0], pix[:, 1]], twin.sites["domain"] + 1)
    assert not np.isnan(twin.image[pm != PHASE_CODES["masked"]]).any()
    assert np.isnan(twin.image[pm == PHASE_CODES["masked"]]).all()
    assert not (twin.cells["boundary"] & ~twin.cells["class"].isin(["perfect", INCOMPLETE])).any()


def test_bad_layouts_are_refused_clearly():
    with pytest.raises(ValueError, match="at least one Grain"):
        simulate_sample(shape=(64, 64), regions=[Hole(Disc((5, 5), 3))])
    with pytest.raises(ValueError, match="kind"):
        simulate_sample(shape=(64, 64), regions=[{"kind": "crater"}])
    with pytest.raises(ValueError, match="phase"):
        simulate_sample(shape=(64, 64), regions=[Grain(phase="3R")])
    with pytest.raises(ValueError, match="unknown defect"):
        simulate_sample(shape=(64, 64), regions=[Grain()], defects={"V_S": 0.1})


def test_write_twin_writes_the_maps_and_the_cli_preset(tmp_path):
    from napari_stem_defects.cli import main

    assert main(["simulate", "--preset", "mos2_real_sample", "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "twin.json").read_text())
    assert meta["files"]["phase_map"] == "phase_map.npy" and meta["files"]["domain_map"] == "domain_map.npy"
    pm, dm = np.load(tmp_path / "phase_map.npy"), np.load(tmp_path / "domain_map.npy")
    assert pm.shape == dm.shape == (1024, 1024)
    # every phenomenon of the preset is there
    assert {PHASE_CODES[k] for k in ("2H", "1T", "hole", "amorphous", "masked")} <= set(np.unique(pm))
    domains = meta["domains"]
    assert {d["phase"] for d in domains} == {"2H", "1T"} and any(d["mirror"] for d in domains)
    assert len({d["grain"] for d in domains}) == 2 and meta["counts"]["boundary_cells"] > 100
    sites = pd.read_csv(tmp_path / "sites.csv", keep_default_na=False)
    cells = pd.read_csv(tmp_path / "cells.csv", keep_default_na=False)
    assert tuple(sites.columns) == SAMPLE_SITE_COLUMNS and tuple(cells.columns) == SAMPLE_CELL_COLUMNS
    pix = np.rint(sites[["y_px", "x_px"]].to_numpy()).astype(int)
    np.testing.assert_array_equal(dm[pix[:, 0], pix[:, 1]], sites["domain"] + 1)
    assert (cells["class"] == INCOMPLETE).sum() > 0 and meta["counts"]["cell_classes"]["V_X1"] > 10
    # a plain twin writes no maps
    from napari_stem_defects.simulate import simulate_twin
    from napari_stem_defects.simulate.export import write_twin

    paths = write_twin(simulate_twin("MoS2", (64, 64), seed=1), tmp_path / "plain")
    assert "phase_map" not in paths and not (tmp_path / "plain" / "phase_map.npy").exists()
