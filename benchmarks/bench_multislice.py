"""How well the fast twins reproduce multislice: the cross-section table and the images.

Run: PYTHONPATH=src python benchmarks/bench_multislice.py [--quick]

1. **Table vs fresh multislice** at microscope settings that are NOT on the table's grid
   (energies between grid energies, convergence and detector angles in between): every
   column content's integrated cross-section from the shipped table against a fresh
   abTEM run (the table's own protocol, new seeds), next to the named peer, the old
   fast-twin model ``c * sum(Z ** 1.7)`` with its scale c fitted to the fresh values
   of that setting (its best case).
2. **Fast twin vs multislice twin** of the same seed (same atoms) at two settings:
   per-column integrated intensity (a disc of 0.45 nearest-neighbour distances around
   each site, noise-free images) of the calibrated fast twin against the multislice
   twin, median and 90th percentile of the relative error per species, next to the old
   Z^1.7 fast twin (its scale fitted to the multislice image, probe 1 Å FWHM).

Needs abTEM. About 10 minutes on the 2-core development machine (``--quick``: 3).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from napari_stem_defects.materials import ATOMIC_NUMBER
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.column_calibration import column_cross_section_multislice, configure_abtem
from napari_stem_defects.simulate.cross_sections import column_cross_section
from napari_stem_defects.simulate.imaging import calibrated_imaging
from napari_stem_defects.simulate.microscope import MicroscopeSettings
from napari_stem_defects.simulate.multislice import simulate_multislice_twin
from napari_stem_defects.simulate.structure import column_elements

OFF_GRID = (
    MicroscopeSettings(energy_kV=90, convergence_mrad=27, detector_inner_mrad=55, detector_outer_mrad=190),
    MicroscopeSettings(energy_kV=140, convergence_mrad=22, detector_inner_mrad=65, detector_outer_mrad=210,
                       frozen_phonons=8),
    MicroscopeSettings(energy_kV=250, convergence_mrad=18, detector_inner_mrad=45, detector_outer_mrad=160,
                       frozen_phonons=8),
)
CONTENTS = ("S", "Se", "Te", "Mo", "W", "Nb", "Re", "S2", "SSe", "Se2", "Te2")
IMAGE_SETTINGS = (
    MicroscopeSettings(energy_kV=60, convergence_mrad=30, detector_inner_mrad=55, detector_outer_mrad=200,
                       source_size_A=0.4),
    MicroscopeSettings(energy_kV=200, convergence_mrad=22, detector_inner_mrad=75, detector_outer_mrad=180,
                       source_size_A=0.35),
)


def zpower(content: str, gamma: float = 1.7) -> float:
    return float(sum(ATOMIC_NUMBER[e] ** gamma for e in column_elements(content)))


def table_accuracy(quick: bool) -> None:
    print("\n## 1. Table vs fresh multislice at settings off the table's grid\n")
    print("| setting | content | fresh Å^2 | table Å^2 | table error | Z^1.7 (fitted scale) error |")
    print("|---|---|---|---|---|---|")
    summary = []
    for s in OFF_GRID[:1] if quick else OFF_GRID:
        t0 = time.perf_counter()
        fresh = {c: column_cross_section_multislice(c, s, configurations=8 if s.frozen_phonons else 4, seed=12345)
                 for c in CONTENTS}
        table = {c: column_cross_section(c, s) for c in CONTENTS}
        z = np.array([zpower(c) for c in CONTENTS])
        f = np.array([fresh[c] for c in CONTENTS])
        scale = np.exp(np.mean(np.log(f / z)))  # best single scale, in log space
        errs_t, errs_z = [], []
        for c, zc in zip(CONTENTS, z):
            et, ez = table[c] / fresh[c] - 1, scale * zc / fresh[c] - 1
            errs_t.append(abs(et))
            errs_z.append(abs(ez))
            print(f"| {s.describe()} | {c} | {fresh[c]:.5f} | {table[c]:.5f} | {et:+.1%} | {ez:+.1%} |")
        summary.append((s.describe(), np.mean(errs_t), np.max(errs_t), np.mean(errs_z), np.max(errs_z),
                        time.perf_counter() - t0))
    print("\n| setting | table mean abs error | table max | Z^1.7 mean abs error | Z^1.7 max | seconds |")
    print("|---|---|---|---|---|---|")
    for row in summary:
        print(f"| {row[0]} | {row[1]:.1%} | {row[2]:.1%} | {row[3]:.1%} | {row[4]:.1%} | {row[5]:.0f} |")


def column_sums(image: np.ndarray, sites, radius_px: float) -> np.ndarray:
    h, w = image.shape
    r = int(np.ceil(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    out = []
    for y, x in sites[["y_px", "x_px"]].to_numpy():
        iy, ix = int(round(y)), int(round(x))
        disc = (yy + iy - y) ** 2 + (xx + ix - x) ** 2 <= radius_px**2
        out.append(image[iy - r : iy + r + 1, ix - r : ix + r + 1][disc].sum())
    return np.array(out)


def image_similarity(quick: bool) -> None:
    print("\n## 2. Fast twin vs multislice twin (same seed, same atoms, noise-free)\n")
    print("| setting | material | species | columns | calibrated fast: median / p90 abs error | "
          "Z^1.7 fast (fitted scale): median / p90 |")
    print("|---|---|---|---|---|---|")
    cases = [("MoS2", 0), ("WSe2", 1)] if not quick else [("MoS2", 0)]
    for material, k in cases:
        s = IMAGE_SETTINGS[k]
        shape, px = (112, 112), 0.12
        kwargs = dict(material=material, shape=shape, pixel_size=px, rotation_deg=7.0, seed=21,
                      defects={"V_X1": 0.05, "V_M": 0.03, "dopant_M": 0.03})
        quiet = dict(dose=None, background=0.0, texture=0.0)
        t0 = time.perf_counter()
        ms = simulate_multislice_twin(**kwargs, imaging=calibrated_imaging(s, **quiet))
        t_ms = time.perf_counter() - t0
        fast = simulate_twin(**kwargs, imaging=calibrated_imaging(s, **quiet))
        old = simulate_twin(**kwargs, imaging=calibrated_imaging(s, gamma=1.7, cross_section=1.0, probe_fwhm=1.0,
                                                                 tail_fraction=0.1, tail_width=1.5, **quiet))
        sites = ms.sites
        nn = ms.nn_px
        inner = sites[sites.y_px.between(nn, shape[0] - 1 - nn) & sites.x_px.between(nn, shape[1] - 1 - nn)
                      & (sites.species != "")]
        ref = column_sums(ms.image, inner, 0.45 * nn)
        cal = column_sums(fast.image, inner, 0.45 * nn)
        zold = column_sums(old.image, inner, 0.45 * nn)
        zold *= np.exp(np.median(np.log(ref / zold)))
        for sp in sorted(inner.species.unique()):
            m = (inner.species == sp).to_numpy()
            e1, e2 = np.abs(cal[m] / ref[m] - 1), np.abs(zold[m] / ref[m] - 1)
            print(f"| {s.describe()} | {material} | {sp} | {m.sum()} | {np.median(e1):.1%} / "
                  f"{np.percentile(e1, 90):.1%} | {np.median(e2):.1%} / {np.percentile(e2, 90):.1%} |")
        print(f"| (multislice {t_ms:.0f} s) | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one setting each")
    args = parser.parse_args()
    configure_abtem(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    table_accuracy(args.quick)
    image_similarity(args.quick)


if __name__ == "__main__":
    main()
