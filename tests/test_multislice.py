"""Multislice twins (abTEM) and the shipped table against fresh multislice runs on tiny cells."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("abtem")

from napari_stem_defects.cli import main  # noqa: E402
from napari_stem_defects.simulate import ImagingParams, simulate_twin  # noqa: E402
from napari_stem_defects.simulate.column_calibration import column_cross_section_multislice  # noqa: E402
from napari_stem_defects.simulate.cross_sections import column_cross_section, probe_shape  # noqa: E402
from napari_stem_defects.simulate.imaging import periodic_fraction  # noqa: E402
from napari_stem_defects.simulate.microscope import MicroscopeSettings  # noqa: E402
from napari_stem_defects.simulate.multislice import (  # noqa: E402
    fourier_upsample,
    periodic_image,
    simulate_multislice_twin,
)
from napari_stem_defects.simulate.structure import Supercell, unit_positions  # noqa: E402
from napari_stem_defects.simulate.twin import with_dose  # noqa: E402

#: 60 kV, a coarse detector range keeps the grids small (a few seconds per run).
TINY = MicroscopeSettings(energy_kV=60, convergence_mrad=25, detector_inner_mrad=60, detector_outer_mrad=160)
#: An even coarser one for whole twins (small convergence and outer angle: few plane waves, coarse grid).
COARSE = MicroscopeSettings(energy_kV=60, convergence_mrad=20, detector_inner_mrad=45, detector_outer_mrad=120)


@pytest.mark.parametrize("content", ["Mo", "S2"])
def test_fresh_isolated_column_matches_the_shipped_table(content):
    # the table's own protocol, fewer configurations: within 4 % (sub-pixel sampling spread ~2 %)
    fresh = column_cross_section_multislice(content, TINY, configurations=3, seed=11)
    assert fresh == pytest.approx(column_cross_section(content, TINY), rel=0.04)


def _voronoi_sums(image: np.ndarray, extent: tuple[float, float], columns: np.ndarray) -> np.ndarray:
    """Integrated intensity (Å^2) of each column's periodic Voronoi cell; image over one period."""
    ny, nx = image.shape
    y = (np.arange(ny) + 0.0) * extent[0] / ny
    x = (np.arange(nx) + 0.0) * extent[1] / nx
    yy, xx = np.meshgrid(y, x, indexing="ij")
    d = []
    for cy, cx in columns:
        dy = (yy - cy + extent[0] / 2) % extent[0] - extent[0] / 2
        dx = (xx - cx + extent[1] / 2) % extent[1] - extent[1] / 2
        d.append(dy**2 + dx**2)
    owner = np.argmin(np.stack(d), axis=0)
    area = extent[0] * extent[1] / (ny * nx)
    return np.array([image[owner == k].sum() * area for k in range(len(columns))])


def _tiny_lattice(metal: str, chalcogen: str, a: float, height: float) -> tuple[Supercell, list, np.ndarray,
                                                                             np.ndarray]:
    """Four unit cells of a 2H layer in a periodic box: the supercell, symbols, xyz and the column centres."""
    cell = Supercell(a=a, n1=2, n2=1)
    sites = unit_positions(cell.a, cell.cells())
    metals, chalcs = cell.wrap(sites["m"]), cell.wrap(sites["x"])
    symbols, xyz = [], []
    for (dy, dx) in metals:
        symbols.append(metal)
        xyz.append((dx, dy, 0.0))
    for (dy, dx) in chalcs:
        symbols += [chalcogen, chalcogen]
        xyz += [(dx, dy, height), (dx, dy, -height)]
    return cell, symbols, np.array(xyz), np.concatenate([metals, chalcs])


def test_tiny_periodic_mos2_lattice_matches_the_table_and_its_probe():
    cell, symbols, xyz, columns = _tiny_lattice("Mo", "S", 3.16, 1.57)  # 6.3 x 5.5 Å: 4 Mo and 4 S2 columns
    periodic, info = periodic_image(symbols, xyz, cell, TINY)
    extent = cell.extent
    fine = fourier_upsample(periodic, (121, 135), (extent[0] / periodic.shape[0], extent[1] / periodic.shape[1]))
    ms = _voronoi_sums(fine, extent, columns)
    mo_table, s2_table = column_cross_section("Mo", TINY), column_cross_section("S2", TINY)
    # the period's total is the sum of the columns' cross-sections (no probe model involved): within 6 %
    assert ms.sum() == pytest.approx(4 * (mo_table + s2_table), rel=0.06)
    # the split between Mo and S2 Voronoi cells also depends on the probe's tails (cross-talk): the fast
    # model with the table's cross-sections and probe, rendered periodically, splits it the same way
    shape = probe_shape(TINY)
    imaging = ImagingParams(gamma=None, microscope=TINY, probe_fwhm=shape.fwhm_A, tail_fraction=shape.tail_fraction,
                            tail_width=shape.tail_width_A)
    sigmas = np.r_[np.full(4, mo_table), np.full(4, s2_table)]
    fast = _voronoi_sums(periodic_fraction(columns, sigmas, extent, fine.shape, imaging), extent, columns)
    ratio_ms = ms[:4].sum() / ms[4:].sum()
    ratio_fast = fast[:4].sum() / fast[4:].sum()
    assert ratio_ms == pytest.approx(ratio_fast, rel=0.06)
    assert info["prism_interpolation"] == [1, 1]


def test_heavy_columns_scatter_alike_wherever_they_sit_on_the_potential_grid():
    # WSe2 at 60 kV, the lattice shifted across the potential's grid: with a cutoff just above the detector
    # (0.09 Å grid here) the W columns' intensities spread by 4 % (sd), on the twins' grid by < 1 %
    rng = np.random.default_rng(3)
    w_sums, ratios = [], []
    for shift in rng.uniform(0.0, 0.1, size=(6, 2)):
        cell, symbols, xyz, columns = _tiny_lattice("W", "Se", 3.28, 1.67)
        xyz[:, :2] += shift[::-1]
        periodic, info = periodic_image(symbols, xyz, cell, TINY)
        extent = cell.extent
        fine = fourier_upsample(periodic, (121, 135), (extent[0] / periodic.shape[0], extent[1] / periodic.shape[1]))
        sums = _voronoi_sums(fine, extent, (columns + shift) % np.array(extent))
        w_sums += list(sums[:4])
        ratios.append(sums[:4].sum() / sums[4:].sum())
    assert max(info["potential_sampling_A"]) <= 0.0301
    assert np.std(w_sums) / np.mean(w_sums) < 0.012
    # and the W / Se2 split is the table's (W and Se2 about equally bright at these low angles)
    expected = column_cross_section("W", TINY) / column_cross_section("Se2", TINY)
    assert np.mean(ratios) == pytest.approx(expected, rel=0.03)


def test_a_mixed_pair_scatters_more_with_its_heavy_atom_where_the_beam_leaves():
    # MoS2 at 80 kV (30 mrad, HAADF 70-200), one S+Se column in each order: the S the beam meets first
    # channels it onto the Se, so 'SeS' (Se on the exit side) outshines 'SSe' by 10 %, as the table says
    scope = MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70, detector_outer_mrad=200)
    cell, symbols, xyz, columns = _tiny_lattice("Mo", "S", 3.16, 1.57)
    first_x = 4  # atoms: 4 Mo, then two chalcogens (+h, -h) per X2 column
    symbols[first_x + 2], xyz[first_x + 2, 2] = "Se", 1.67  # second X2 column: Se at +h (exit side)
    symbols[first_x + 5], xyz[first_x + 5, 2] = "Se", -1.67  # third: Se at -h (the beam enters there)
    periodic, _ = periodic_image(symbols, xyz, cell, scope)
    extent = cell.extent
    fine = fourier_upsample(periodic, (121, 135), (extent[0] / periodic.shape[0], extent[1] / periodic.shape[1]))
    sums = _voronoi_sums(fine, extent, columns)
    exit_side, entrance = sums[5], sums[6]
    table = column_cross_section("SeS", scope) / column_cross_section("SSe", scope)
    assert table > 1.08 and exit_side / entrance == pytest.approx(table, rel=0.03)
    # and the Se-on-exit pair is as bright as a Mo column here (within 5 %): intensity alone cannot
    # tell it from a Mo antisite
    assert exit_side / sums[:4].mean() == pytest.approx(1.0, abs=0.05)


def test_multislice_twin_holds_the_fast_twins_atoms_and_tables(coarse_potential_grid):
    kwargs = dict(material="MoS2", shape=(56, 56), pixel_size=0.16, rotation_deg=None, seed=5,
                  defects={"V_X1": 0.3, "V_M": 0.15, "M_X": 0.15})
    imaging = ImagingParams(gamma=None, dose=None, microscope=COARSE, background=0.0, texture=0.0)
    ms = simulate_multislice_twin(**kwargs, imaging=imaging)
    fast = simulate_twin(**kwargs, imaging=imaging)
    assert ms.sites.equals(fast.sites) and ms.cells.equals(fast.cells)
    assert ms.extra["engine"] == "multislice" and ms.extra["rotation_deg"] == fast.extra["rotation_deg"]
    assert set(ms.cells["class"]) >= {"perfect", "V_X1", "V_M"}
    # the image is the multislice one: bright where the truth puts Mo (1.4 x S2 at these low angles), dark
    # on empty sites
    s = ms.sites
    inner = s[s.y_px.between(3, 52) & s.x_px.between(3, 52)]
    at = lambda g: np.array([ms.image[int(round(y)), int(round(x))] for y, x in g[["y_px", "x_px"]].to_numpy()])  # noqa: E731
    mo = at(inner[(inner.species == "Mo") & (inner.sublattice == "M")])
    s2, empty = at(inner[inner.species == "S2"]), at(inner[inner.species == ""])
    assert np.median(mo) > 1.15 * np.median(s2) > 3 * empty.max() > 0
    # one clean image, several doses, same truth
    noisy = with_dose(ms, 1e5, seed=2)
    assert noisy.sites.equals(ms.sites) and noisy.image.mean() == pytest.approx(ms.image.mean() * 1e5 * 0.16**2,
                                                                              rel=0.02)


def test_cli_writes_a_multislice_twin(tmp_path, coarse_potential_grid):
    rc = main(["simulate", "--engine", "multislice", "--material", "Janus-MoSSe", "--shape", "40", "40",
               "--pixel-size", "0.16", "--kv", "60", "--convergence", "20", "--detector", "45", "120",
               "--source-size", "0.4", "--dose", "1e5", "--seed", "3", "--out", str(tmp_path)])
    assert rc == 0
    meta = json.loads((tmp_path / "twin.json").read_text())
    assert meta["engine"] == "multislice"
    assert meta["imaging"]["microscope"]["energy_kV"] == 60 and meta["imaging"]["microscope"]["source_size_A"] == 0.4
    assert meta["imaging"]["dose"] == 1e5 and meta["multislice"]["abtem_version"]
    for name in ("image.tif", "sites.csv", "cells.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert main(["simulate", "--engine", "multislice", "--preset", "mos2_vacancies", "--out", str(tmp_path)]) == 2
