"""The analysis on specimens as real samples look: grains, mirror domains, 1T regions, holes, masks (exact truth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.analyze import analyze_image
from napari_stem_defects.cells.joint import contradictions
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.columns.evaluate import match_points
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.simulate import ImagingParams
from napari_stem_defects.simulate.presets import PRESETS
from napari_stem_defects.simulate.regions import Disc, Grain, HalfPlane, Hole, Mask, MirrorRegion, PhaseRegion, Rect
from napari_stem_defects.simulate.sample import simulate_sample
from napari_stem_defects.vocabulary import CELL_CLASSES, PHASE_CODES

DEFECTS = {"V_X1": 0.04, "V_X2": 0.01, "V_M": 0.01, "V_X1+V_M": 0.006}


def _analyse(twin, classifier="physics", **kwargs):
    image = StemImage(twin.image, (twin.pixel_size, twin.pixel_size), "sample", {})
    return analyze_image(image, material=twin.material.name, classifier=classifier, **kwargs)


def _matched(analysis, twin):
    """Our cells and the truth's cell at the same metal site."""
    cells, truth = analysis.cells[0], twin.cells
    metal = twin.sites.set_index("site_id").loc[truth["m_site_id"], ["y_px", "x_px"]].to_numpy()
    i, j = match_points(cells[["m_y_px", "m_x_px"]].to_numpy(), metal, twin.nn_px / 3)
    return cells.iloc[i].reset_index(drop=True), truth.iloc[j].reset_index(drop=True)


@pytest.fixture(scope="module")
def grains_and_mirror():
    """Two grains 20 degrees apart, a mirror twin domain in the first, point defects off the boundaries."""
    regions = [Grain(None, rotation_deg=5.0), MirrorRegion(HalfPlane.along((150.0, 0.0), 5.0)),
               Grain(HalfPlane.along((0.0, 330.0), -80.0), rotation_deg=25.0)]
    return simulate_sample("MoS2", (448, 448), 0.12, regions=regions, defects=DEFECTS, seed=31,
                           imaging=ImagingParams(dose=5e5))


@pytest.fixture(scope="module")
def phases_holes_masks():
    """A 1T region, a hole and a NaN mask in one 2H grain."""
    regions = [Grain(None, rotation_deg=-20.0), PhaseRegion(Disc((300.0, 140.0), 100.0), "1T"),
               Hole(Disc((120.0, 330.0), 70.0)), Mask(Rect(330.0, 300.0, 440.0, 440.0))]
    return simulate_sample("WSe2", (448, 448), 0.12, regions=regions, defects=DEFECTS, seed=32,
                           imaging=ImagingParams(dose=5e5))


def test_grains_and_mirror_domains_get_their_own_lattices_and_cells(grains_and_mirror):
    twin = grains_and_mirror
    result = detect_columns(twin.image, material="MoS2", pixel_size=0.12)
    big = [d for d in result.domains if d["n_sites"] >= 100]
    assert len(big) == 3 and {d["grain"] for d in big} == {0, 1}  # grain 0 holds two mirror domains
    # every truth column is found, whatever its grain or domain
    truth = twin.sites[(twin.sites["sublattice"] != "H") & (twin.sites["species"] != "")]
    ours = result.sites[(result.sites["sublattice"] != "H") & (result.sites["species"] != "empty")]
    _, found = match_points(ours[["y_px", "x_px"]].to_numpy(), truth[["y_px", "x_px"]].to_numpy(), twin.nn_px / 3)
    assert len(found) >= 0.98 * len(truth)
    analysis = _analyse(twin)
    ours, theirs = _matched(analysis, twin)
    assert (ours["domain"].groupby(theirs["domain"]).nunique() == 1).mean() >= 0.9  # domains follow the truth's
    interior = ~ours["boundary"] & ~theirs["boundary"] & ours["class"].isin(CELL_CLASSES) & theirs["class"].isin(
        CELL_CLASSES)
    assert interior.sum() > 150
    assert (ours.loc[interior, "class"] == theirs.loc[interior, "class"]).mean() >= 0.98
    for cls in ("V_X1+V_M", "V_M", "V_X1"):  # one convention: combined vacancies stay one cell, in every domain
        assert (ours.loc[interior, "class"] == cls).sum() == (theirs.loc[interior, "class"] == cls).sum(), cls
    # a cell never pairs columns of two domains; the cells along the boundaries are marked
    cells = analysis.cells[0]
    complete = cells["x_site_id"] >= 0
    step = np.hypot(cells["x_y_px"] - cells["m_y_px"], cells["x_x_px"] - cells["m_x_px"]) / result.nn_px
    assert not ((step > 1.3) & complete & ~cells["boundary"]).any()
    site_domain = analysis.columns[0].sites.set_index("site_id")["domain"]
    paired = cells[complete]
    assert (site_domain.loc[paired["m_site_id"]].to_numpy() == site_domain.loc[paired["x_site_id"]].to_numpy()).all()
    # the truth also marks cells at the image edge, which are no boundary of ours: compare inside
    inner = ((ours[["m_y_px", "m_x_px"]] > 2 * twin.nn_px) & (ours[["m_y_px", "m_x_px"]] < 448 - 2 * twin.nn_px)).all(axis=1)
    ours_b, theirs_b = ours["boundary"][inner], theirs["boundary"][inner]
    assert theirs_b[ours_b].mean() >= 0.5 and ours_b[theirs_b].mean() >= 0.6


def test_phases_holes_and_masks_in_the_map_and_the_statistics(phases_holes_masks):
    twin = phases_holes_masks
    analysis = _analyse(twin, classifier="cnn")
    phase, domain = (m[0] for m in analysis.phase_maps())
    truth = twin.extra["phase_map"]
    assert (phase == truth).mean() >= 0.9
    for name, least in (("1T", 0.6), ("hole", 0.8), ("masked", 1.0), ("2H", 0.97)):  # a phase's rim row is 2H
        code = PHASE_CODES[name]
        assert (phase[truth == code] == code).mean() >= least, name
    sites = analysis.columns[0].sites
    from scipy import ndimage

    inside = np.rint(sites[["y_px", "x_px"]].to_numpy()).astype(int).clip(0, 447)
    void = np.isin(truth, [PHASE_CODES["hole"], PHASE_CODES["masked"]])
    deep = ndimage.distance_transform_edt(void) > twin.nn_px  # more than one column spacing inside
    assert not deep[inside[:, 0], inside[:, 1]].any()
    assert not ((sites["boundary"] == False) & void[inside[:, 0], inside[:, 1]]).any()  # noqa: E712 (rim sites: boundary)
    # 1T: three columns per cell, single chalcogens, classes from those columns
    one_t = analysis.cells[0][analysis.cells[0]["phase"] == "1T"]
    assert len(one_t) > 20 and ((one_t["x2_site_id"] >= 0) == (one_t["class"] != "incomplete")).all()
    assert set(sites.loc[(sites["phase"] == "1T") & (sites["sublattice"] == "X"), "species"]) <= {"Se", "empty", "S"}
    # concentrations over the crystal really seen: the interior counts are the truth's within Poisson error
    ours, theirs = _matched(analysis, twin)
    interior = ~ours["boundary"] & ~theirs["boundary"] & ours["class"].isin(CELL_CLASSES) & theirs["class"].isin(
        CELL_CLASSES)
    for cls in ("V_X1", "V_X2", "V_M"):
        n_true = int((theirs.loc[interior, "class"] == cls).sum())
        n_ours = int((ours.loc[interior, "class"] == cls).sum())
        assert abs(n_ours - n_true) <= 2 * np.sqrt(max(n_true, 1)), (cls, n_ours, n_true)
    summary = analysis.summary()
    assert summary["phases"][0]["hole"]["fraction"] == pytest.approx((truth == PHASE_CODES["hole"]).mean(), abs=0.02)
    total = summary["total"]  # the analysed area is crystal that was seen, never a hole or the mask
    crystal_nm2 = np.isin(truth, [PHASE_CODES["2H"], PHASE_CODES["1T"]]).sum() * 0.12**2 / 100
    assert 0.5 * crystal_nm2 < total["area_nm2"] < crystal_nm2
    assert summary["excluded_cells"][0]["boundary"] > 0 and summary["excluded_cells"][0]["incomplete"] > 0


def test_a_user_mask_leaves_no_sites_and_no_area(phases_holes_masks):
    twin = phases_holes_masks
    mask = np.zeros(twin.image.shape, bool)
    mask[:120, :120] = True
    analysis = _analyse(twin, mask=mask)
    sites = analysis.columns[0].sites
    assert not ((sites["y_px"] < 118) & (sites["x_px"] < 118)).any()
    phase, _ = (m[0] for m in analysis.phase_maps())
    assert (phase[:120, :120] == PHASE_CODES["masked"]).all()
    without = _analyse(twin)
    assert analysis.summary()["total"]["n_cells"] < without.summary()["total"]["n_cells"] - 15


@pytest.mark.parametrize("seed", [41, 42])
def test_sites_and_cells_never_contradict_on_random_specimens(seed):
    from napari_stem_defects.materials import parse_material
    from napari_stem_defects.simulate.regions import random_regions

    rng = np.random.default_rng(seed)
    material = ("MoS2", "WSe2")[seed % 2]
    regions = random_regions((384, 384), 0.12, parse_material(material).a, rng)
    twin = simulate_sample(material, (384, 384), 0.12, regions=regions, seed=seed, imaging=ImagingParams(dose=1e5),
                           defects={**DEFECTS, "sub_X": 0.01, "adatom": 0.01})
    analysis = _analyse(twin, classifier="cnn", force=True)
    assert contradictions(analysis.columns[0].sites, analysis.cells[0], material) == 0
    assert not analysis.cells[0]["class"][analysis.cells[0]["x_site_id"] < 0].isin(CELL_CLASSES).any()


@pytest.mark.parametrize("preset", ["mos2_vacancies", "wse2_low_dose"])
def test_the_samples_truth_counts_are_what_analyze_reports_noise_free(preset):
    twin = PRESETS[preset]()
    image = StemImage(twin.expected, (twin.pixel_size, twin.pixel_size), preset, {})
    analysis = analyze_image(image, material=twin.material.name, classifier="physics")
    counts = analysis.summary()["total"]["counts"]
    truth = twin.cells[twin.cells["x_site_id"] >= 0]["class"].value_counts()
    for cls in CELL_CLASSES[1:]:
        assert counts[cls] == int(truth.get(cls, 0)), cls
    table = pd.DataFrame(analysis.cells[0])
    assert (table["class"] == "incomplete").sum() > 0  # the border cells: no class, not counted


REAL_TMD = [("MoS2_Se-implanted_60kV_HAADF.dm3", "MoS2+Se"), ("MoSe2_80K_small_region.tif", "MoSe2"),
            ("MoSe2_GB_mono.tif", "MoSe2"), ("MoTe2_sample_1.jpg", "MoTe2"),
            ("MoWSSe_3D_Stack_align2_original.png", "MoWSSe"), ("WS2Te2_alloy_0040_1_Cut.tif", "W(S,Te)2"),
            ("WSSe_partial_SuperScan_HAADF_12_corrected.tif", "WSSe"), ("WSe2_full_SuperScan_HAADF_14_corrected.tif", "WSe2")]


@pytest.mark.parametrize("name, material", REAL_TMD)
def test_sites_and_cells_never_contradict_on_real_images(shared_data, name, material):
    from napari_stem_defects.io.rsciio_reader import read_stem_file

    image = read_stem_file(shared_data / "real" / name)[0]
    analysis = analyze_image(image, material=material, classifier="cnn")
    sites, cells = analysis.columns[0].sites, analysis.cells[0]
    assert contradictions(sites, cells, material) == 0
    assert not cells.loc[cells["x_site_id"] < 0, "class"].isin(CELL_CLASSES).any()  # border cells: incomplete
    complete = cells["x_site_id"] >= 0
    step = np.hypot(cells["x_y_px"] - cells["m_y_px"], cells["x_x_px"] - cells["m_x_px"])
    # a partner X column is one nn from its metal, the next X column two: 1.5 nn tells them apart on noisy
    # images (the Se-implanted MoS2's steps spread with sd 0.045 nn, one of 2100 at 1.30)
    assert not ((step > 1.5 * analysis.columns[0].nn_px) & complete & ~cells["boundary"]).any()


def test_the_real_mose2_grain_boundary_matches_its_reference(shared_data):
    from napari_stem_defects.io.rsciio_reader import read_stem_file

    image = read_stem_file(shared_data / "real" / "MoSe2_GB_mono.tif")[0]
    ref = pd.read_csv(shared_data / "real" / "MoSe2_GB_mono_points.csv")[["y_row_px", "x_col_px"]].to_numpy(float)
    result = detect_columns(image.data, material="MoSe2")
    nn = result.nn_px
    occupied = result.sites[(result.sites["sublattice"] != "H") & (result.sites["species"] != "empty")]
    pred = occupied[["y_px", "x_px"]].to_numpy()

    def inner(p):  # the reference leaves out the columns the image edge cuts
        return np.all((p >= 0.5 * nn) & (p <= np.array(image.data.shape) - 1 - 0.5 * nn), axis=1)

    i, _ = match_points(pred[inner(pred)], ref[inner(ref)], nn / 3)
    precision, recall = len(i) / inner(pred).sum(), len(i) / inner(ref).sum()
    assert 2 * precision * recall / (precision + recall) >= 0.99
    assert len([d for d in result.domains if d["n_sites"] > 100]) == 2  # the two sides of the boundary
