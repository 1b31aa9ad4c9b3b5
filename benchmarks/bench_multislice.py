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

``--library DIR`` also renders the truth of every image of a multislice library
(``scripts/build_multislice_library.py``) with the fast model and compares per column with
the library's clean multislice image (no multislice run needed; ``--skip-fresh`` for only that).

Needs abTEM. About 10-30 minutes on the 2-core development machine (``--quick``: a few).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from napari_stem_defects.materials import ATOMIC_NUMBER
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.simulate.column_calibration import column_cross_section_multislice, configure_abtem
from napari_stem_defects.simulate.cross_sections import column_cross_section
from napari_stem_defects.simulate.imaging import content_cross_section, render
from napari_stem_defects.simulate.imaging_conditions import calibrated_imaging
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


def library_similarity(root: Path) -> None:
    """Fast-model images of a multislice library's own truth against its clean multislice images."""
    import pandas as pd
    from scipy.ndimage import gaussian_filter

    print(f"\n## 2b. Fast model vs the multislice library {root} (its truth rendered by the fast model)\n")
    print("| setting | material | species | columns | calibrated fast: median / p90 abs error | "
          "Z^1.7 fast (fitted scale): median / p90 |")
    print("|---|---|---|---|---|---|")
    totals: dict[str, list] = {"table": [], "zpower": []}
    for clean_path in sorted(root.glob("*/*/clean.npy")):
        folder = sorted(clean_path.parent.glob("dose_*"))[0]
        meta = json.loads((folder / "twin.json").read_text())
        sites = pd.read_csv(folder / "sites.csv", keep_default_na=False)
        imaging = ImagingParams(**meta["imaging"])
        px = float(meta["pixel_size_A"][0])
        clean = np.load(clean_path).astype(float) - imaging.background
        h, w = clean.shape
        quiet = dict(dose=None, background=0.0, texture=0.0, line_jitter=0.0, drift=(0.0, 0.0))
        cal = calibrated_imaging(imaging.microscope, **quiet)
        pos = sites[["y_px", "x_px"]].to_numpy()
        rng = np.random.default_rng(0)
        sigma = np.array([content_cross_section(sp, cal) for sp in sites["species"]])  # the current table
        fast, _ = render(pos, sigma, (h, w), px, cal, rng)
        old_params = dataclasses.replace(cal, gamma=1.7, cross_section=1.0, probe_fwhm=1.0, tail_fraction=0.1,
                                         tail_width=1.5)
        z = np.array([zpower(sp) if sp else 0.0 for sp in sites["species"]])
        old, _ = render(pos, z, (h, w), px, old_params, rng)
        nn = meta["lattice_constant_A"] / np.sqrt(3) / px
        edge = 3.0 / px + nn
        inner = sites[sites.y_px.between(edge, h - 1 - edge) & sites.x_px.between(edge, w - 1 - edge)
                      & (sites.species != "")]
        # the library's support background is unknown here: each model gets its own smooth estimate of
        # it (the 2.5 Å Gaussian-smoothed difference image); the fine amorphous texture stays in
        c2 = column_sums(old.astype(float), inner, 0.45 * nn)
        scale = np.median(column_sums(clean, inner, 0.45 * nn) / c2)
        ref1 = column_sums(clean - gaussian_filter(clean - fast, 2.5 / px), inner, 0.45 * nn)
        ref2 = column_sums(clean - gaussian_filter(clean - scale * old, 2.5 / px), inner, 0.45 * nn)
        c1 = column_sums(fast.astype(float), inner, 0.45 * nn)
        c2 = c2 * np.median(ref2 / c2)
        setting, material = clean_path.parent.parent.name, clean_path.parent.name
        for sp in sorted(inner.species.unique()):
            m = (inner.species == sp).to_numpy()
            e1, e2 = np.abs(c1[m] / ref1[m] - 1), np.abs(c2[m] / ref2[m] - 1)
            totals["table"] += list(e1)
            totals["zpower"] += list(e2)
            print(f"| {setting} | {material} | {sp} | {m.sum()} | {np.median(e1):.1%} / {np.percentile(e1, 90):.1%} "
                  f"| {np.median(e2):.1%} / {np.percentile(e2, 90):.1%} |")
    if totals["table"]:
        t, zz = np.array(totals["table"]), np.array(totals["zpower"])
        print(f"| all | | | {len(t)} | {np.median(t):.1%} / {np.percentile(t, 90):.1%} | "
              f"{np.median(zz):.1%} / {np.percentile(zz, 90):.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one setting each")
    parser.add_argument("--library", default=None, help="also compare with a multislice library "
                        "(scripts/build_multislice_library.py output)")
    parser.add_argument("--skip-fresh", action="store_true", help="only the library comparison")
    args = parser.parse_args()
    configure_abtem(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    if not args.skip_fresh:
        table_accuracy(args.quick)
        image_similarity(args.quick)
    if args.library:
        library_similarity(Path(args.library))


if __name__ == "__main__":
    main()
