"""Lattice analysis on twins with known strain fields: strain RMSE by dose, relaxation by class averaging, speed.

Run (about 10 min on 2 cores at 2048 x 2048; ``--quick`` for 512 x 512 and two doses)::

    python benchmarks/bench_lattice.py [--size 2048] [--quick]

Sections:

1. **Strain RMSE against the truth** (per detected metal site, and of the smooth map (Gaussian of one nn)
   read at the sites; exx/eyy/exy together, in %; sites within two
   lattice constants of the border left out) for a uniform 1 % exx, a linear gradient of exx (-1.5 % to +1.5 %
   across the image) and a point-defect relaxation around V_M (u_r = A a/r exp(-(r/3a)^2), A = -0.3 px =
   -3.6 pm; peaks on the vacancies themselves left out), at 1e4, 1e5 and 1e6 e/Å^2. **Ours**: :func:`napari_stem_defects.lattice.strain.measure_strain`
   (per-domain reference lattice from the lattice indices, local fit over 19 cells; the uniform field against
   the nominal lattice). **Baseline, named "nearest-neighbour"**: the Atomap-style estimate from the raw detected
   metal peaks: each peak's six nearest metal peaks, matched to the ideal neighbour vectors of the same
   reference basis, least-squares deformation (no lattice indices, no wider window).
2. **Relaxation by class averaging**: the first metal shell's radial displacement around V_M from
   :func:`~napari_stem_defects.lattice.class_average.class_average` against the truth (the twin's own positions),
   and its error bar, by number averaged (dose 1e5).
3. **Time** of strain + maps + profiles + class averages for the whole image (about 15k sites at 2048).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial import cKDTree

from napari_stem_defects.columns import ColumnDetectionError, detect_columns
from napari_stem_defects.lattice.class_average import class_average, relaxation_summary
from napari_stem_defects.lattice.profiles import defect_profiles
from napari_stem_defects.lattice.strain import (
    measure_strain,
    metal_rows,
    strain_from_gradient,
    strain_maps,
)
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.lattice.evaluate import true_shell_relaxation, true_strain
from napari_stem_defects.simulate.strain_field import PointRelaxation, StrainGradient, UniformStrain
from napari_stem_defects.simulate.twin import with_dose

PX = 0.12


def nearest_neighbour_strain(yx: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """Baseline: strain of every peak from its six nearest peaks, matched to the ideal neighbour vectors."""
    ideal = np.array([a1, a2, a2 - a1, -a1, -a2, a1 - a2])  # (6, 2) y, x
    tree = cKDTree(yx)
    _, idx = tree.query(yx, k=7)
    out = np.full((len(yx), 4), np.nan)
    ref_xy = ideal[:, ::-1]
    for n in range(len(yx)):
        vec = yx[idx[n, 1:]] - yx[n]
        match = np.argmin(np.linalg.norm(vec[:, None, :] - ideal[None], axis=2), axis=1)
        if len(set(match.tolist())) < 4:
            continue
        meas_xy = vec[:, ::-1]
        f, *_ = np.linalg.lstsq(ref_xy[match], meas_xy, rcond=None)  # meas = ref @ f  -> F = f.T
        out[n] = strain_from_gradient((f.T - np.eye(2))[None])[0]
    return out


def _rmse(measured: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(measured).all(axis=1)
    return float(np.sqrt(np.mean((measured[ok, :3] - truth[ok, :3]) ** 2))) * 100


def strain_table(size: int, doses: list[float]) -> list[dict]:
    a_px = 3.16 / PX
    fields = {"uniform 1 %": (UniformStrain(exx=0.01, centre=(size / 2, size / 2)), "material", {}),
              "gradient +-1.5 %": (StrainGradient(0.03, size / 2, size), "domain", {}),
              "point relaxation": (PointRelaxation("V_M", -0.3, a_px), "domain", {"V_M": 0.01})}
    rows = []
    for name, (field, reference, defects) in fields.items():
        clean = simulate_twin("MoS2", (size, size), PX, rotation_deg=10, defects=defects,
                              imaging=ImagingParams(dose=None), seed=11, displacement=field)
        cells = clean.cells
        centres = clean.lattice.metal_positions(cells[["i", "j"]].to_numpy())
        classes = cells["class"].to_numpy()
        for dose in doses:
            twin = with_dose(clean, dose, seed=1)
            try:
                result = detect_columns(twin.image, material="MoS2", pixel_size=PX)
            except ColumnDetectionError as err:
                rows.append({"field": name, "dose": dose, "error": str(err)})
                continue
            sites = result.sites
            metal = metal_rows(sites)
            yx = sites.loc[metal, ["y_px", "x_px"]].to_numpy(float)
            inner = ((yx > 2 * a_px) & (yx < size - 2 * a_px)).all(axis=1)
            if defects:  # a peak detected on a vacancy itself sits on the field's 1/r centre: no truth there
                near, _ = cKDTree(centres[classes == "V_M"]).query(yx) if (classes == "V_M").any() else (None, None)
                inner &= near > 0.5 * a_px if near is not None else True
            truth = true_strain(field, yx, centres, classes)
            ours = measure_strain(sites, reference, a_px=twin.material.a / PX)
            ref = next(iter(ours.references.values()))
            mine = ours.table.loc[metal, ["exx", "eyy", "exy", "rotation_deg"]].to_numpy()
            base = nearest_neighbour_strain(yx, ref.a1, ref.a2)
            maps = strain_maps(sites, ours.table, (size, size), result.nn_px)
            at = np.clip(np.rint(yx[inner]).astype(int), 0, size - 1)
            sampled = maps[:, at[:, 0], at[:, 1]].T
            rows.append({"field": name, "dose": dose, "sites": int(inner.sum()),
                         "ours_rmse_pct": _rmse(mine[inner], truth[inner]),
                         "ours_map_rmse_pct": _rmse(sampled, truth[inner]),
                         "nn_baseline_rmse_pct": _rmse(base[inner], truth[inner]),
                         "ours_median_exx_pct": float(np.nanmedian(mine[inner, 0]) * 100),
                         "truth_median_exx_pct": float(np.median(truth[inner, 0]) * 100),
                         "map_finite_pct": float(np.isfinite(maps[0]).mean() * 100)})
            print(rows[-1], flush=True)
    return rows


def relaxation_table(size: int) -> tuple[list[dict], dict]:
    a_px = 3.16 / PX
    field = PointRelaxation("V_M", -0.3, a_px)
    twin = simulate_twin("MoS2", (size, size), PX, rotation_deg=10, defects={"V_M": 0.01, "V_X2": 0.02},
                         imaging=ImagingParams(dose=1e5), seed=12, displacement=field)
    result = detect_columns(twin.image, material="MoS2", pixel_size=PX)
    sites = twin.sites.set_index("site_id")
    vm = twin.cells[twin.cells["class"] == "V_M"]
    centres = sites.loc[vm["m_site_id"], ["y_px", "x_px"]].to_numpy()
    rows = []
    n_all = len(centres)
    for n in sorted({4, 16, 64, n_all}):
        if n > n_all:
            continue
        pick = centres[:n]
        truth = true_shell_relaxation(twin, pick)
        avg = class_average(twin.image, result.sites, pick, "V_M", a_px, PX * 100)
        mean, err, _ = relaxation_summary(avg)
        rows.append({"n_averaged": n, "measured_pm": mean, "error_pm": err, "truth_pm": truth,
                     "deviation_pm": mean - truth, "snr": avg.snr})
        print(rows[-1], flush=True)
    # time the whole analysis of one frame
    t0 = time.perf_counter()
    strain = measure_strain(result.sites, "domain")
    t1 = time.perf_counter()
    strain_maps(result.sites, strain.table, (size, size), result.nn_px)
    t2 = time.perf_counter()
    x_centres = sites.loc[twin.cells.loc[twin.cells["class"] == "V_X2", "x_site_id"], ["y_px", "x_px"]].to_numpy()
    defect_profiles(result.sites, strain.table, {"V_M": centres, "V_X2": x_centres}, a_px, PX * 100)
    t3 = time.perf_counter()
    class_average(twin.image, result.sites, centres, "V_M", a_px, PX * 100)
    class_average(twin.image, result.sites, x_centres, "V_X2", a_px, PX * 100)
    t4 = time.perf_counter()
    timing = {"sites": len(result.sites), "strain_s": t1 - t0, "maps_s": t2 - t1, "profiles_s": t3 - t2,
              "class_averages_s": t4 - t3, "total_s": t4 - t0}
    return rows, timing


def _markdown(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                                     for k in keys) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="twin side in pixels (default 2048)")
    parser.add_argument("--quick", action="store_true", help="512 x 512, doses 1e5 and 1e6")
    args = parser.parse_args(argv)
    size = 512 if args.quick else args.size
    doses = [1e5, 1e6] if args.quick else [1e4, 1e5, 1e6]
    print(f"## Strain RMSE against the truth ({size} x {size}, {PX} Å/px, MoS2)\n")
    print(_markdown(strain_table(size, doses)))
    rows, timing = relaxation_table(size)
    print("\n## First-shell relaxation around V_M by class averaging (truth from the twin, dose 1e5)\n")
    print(_markdown(rows))
    print(f"\n## Time ({size} x {size}, one frame)\n")
    print(_markdown([timing]))


if __name__ == "__main__":
    main()
