"""Digital-twin speed: seconds per twin by image size, against a plain per-atom Gaussian renderer.

Run: .venv/bin/python benchmarks/bench_simulator.py
Prints two tables. The peer of the first is the textbook approach (one Gaussian evaluated per
column over a local window, summed in a Python loop, as atomap's test-data maker does), timed in
the same run on the same columns. The second times composite samples (simulate_sample: two grains,
a mirror twin, a 1T' region, a hole, an amorphous patch with contamination, a NaN mask, all truth
tables and maps) against a plain one-grain twin of the same size, interleaved, best of 3.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from napari_stem_defects.simulate import (
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
    simulate_twin,
)
from napari_stem_defects.simulate.imaging import render


def naive_render(positions: np.ndarray, weights: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """One Gaussian per column over a +-4 sigma window (the usual per-atom loop)."""
    out = np.zeros(shape)
    r = int(np.ceil(4 * sigma))
    for (y, x), w in zip(positions, weights):
        iy, ix = int(round(y)), int(round(x))
        y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, shape[0]), max(ix - r, 0), min(ix + r + 1, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] += w * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return out


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"{'size':>10} {'columns':>8} {'full twin s':>12} {'our render s':>13} {'per-atom loop s':>16} "
          f"{'speed-up':>9} {'max rel diff':>13}")
    plain = ImagingParams(dose=None, tail_fraction=0.0, background=0.0, texture=0.0)
    for n in (512, 1024, 2048):
        t0 = time.perf_counter()
        twin = simulate_twin("MoS2", (n, n), 0.125, seed=0, defects={"V_X1": 0.03},
                             imaging=ImagingParams(dose=1e5, line_jitter=0.1))
        t_twin = time.perf_counter() - t0
        pos = twin.sites[["y_px", "x_px"]].to_numpy()
        w = twin.sites["cross_section_A2"].to_numpy()
        t0 = time.perf_counter()
        ours, _ = render(pos, w, (n, n), 0.125, plain, np.random.default_rng(0))
        t_ours = time.perf_counter() - t0
        sigma = plain.probe_fwhm / 2.3548 / 0.125
        t0 = time.perf_counter()
        peer = naive_render(pos, w, (n, n), sigma) / (2 * np.pi * sigma**2 * 0.125**2)
        t_peer = time.perf_counter() - t0
        diff = np.abs(ours - peer).max() / peer.max()
        print(f"{n:>5}x{n:<4} {len(pos):>8} {t_twin:>12.3f} {t_ours:>13.3f} {t_peer:>16.3f} "
              f"{t_peer / t_ours:>9.1f} {diff:>13.4f}")
    print("full twin = lattice, defects, probe with tail, background, jitter, Poisson noise, labels;")
    print("render columns: the same noise-free Gaussian-probe image by both methods (diff = agreement).")
    print("target: a 1024x1024 twin well under 1 s")
    composite_table()


def composite_regions(n: int) -> list:
    """The layout of the mos2_real_sample preset, scaled to an n x n image."""
    k = n / 1024
    return [Grain(None, rotation_deg=7.0), MirrorRegion(HalfPlane.along((330 * k, 0.0), 7.0)),
            Grain(HalfPlane.along((0.0, 760 * k), -80.0), rotation_deg=25.0),
            PhaseRegion(Disc((780 * k, 300 * k), 150 * k), "1T", distorted=True),
            Hole(Disc((500 * k, 470 * k), 80 * k)), Amorphous(Disc((250 * k, 880 * k), 110 * k), contamination=6.0),
            Mask(Rect(840 * k, 820 * k, 980 * k, 990 * k))]


def composite_table() -> None:
    print()
    print(f"{'size':>10} {'plain twin s':>13} {'composite s':>12} {'ratio':>6} {'domains':>8} {'sites':>7} "
          f"{'boundary cells':>15}")
    imaging = ImagingParams(dose=2e5, line_jitter=0.08)
    defects = {"V_X1": 0.03, "V_M": 0.005}
    for n in (512, 1024, 2048):
        t_plain, t_comp = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            simulate_twin("MoS2", (n, n), 0.12, seed=0, defects=defects, imaging=imaging)
            t_plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            twin = simulate_sample("MoS2", (n, n), 0.12, regions=composite_regions(n), seed=0, defects=defects,
                                   imaging=imaging)
            t_comp.append(time.perf_counter() - t0)
        print(f"{n:>5}x{n:<4} {min(t_plain):>13.3f} {min(t_comp):>12.3f} {min(t_comp) / min(t_plain):>6.2f} "
              f"{twin.sites['domain'].nunique():>8} {len(twin.sites):>7} {int(twin.cells['boundary'].sum()):>15}")
    print("composite = grains, mirror twin, 1T', hole, amorphous patch, mask, exact tables, phase and domain maps;")
    print("target: a 1024x1024 composite twin in about a second on 2 cores")


if __name__ == "__main__":
    main()
