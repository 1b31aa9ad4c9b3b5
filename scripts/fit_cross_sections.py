"""Regenerate the calibrated column cross-section table shipped with the package.

Runs abTEM multislice on every column content the plugin uses, isolated in a periodic
box, for every beam energy of the grid; records the cross-section scattered beyond
each detector angle per incident plane-wave tilt (``column_calibration``), and the
HAADF image of an isolated Mo column per energy and convergence angle (a line scan)
for the probe shape. Then compresses everything into
``src/napari_stem_defects/simulate/data/column_cross_sections.json``.

Usage::

    PYTHONPATH=src python scripts/fit_cross_sections.py [--raw RAW.npz] [--out JSON] [--threads 1]

``--raw`` keeps the measurements (resumable: contents already in the file are not
rerun; ``--configurations`` must then match the counts the file was measured with).
Seeded (every content and energy has its own fixed seed), so a rerun gives the same
table. Run time on the 2-core development machine (1 thread) with the shipped table's
counts (``--configurations 4 8 8``): 13 minutes for the measurements, a few seconds for the fit.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from napari_stem_defects.simulate.column_calibration import (
    PROTOCOL,
    column_image_profile,
    configure_abtem,
    plane_wave_cross_sections,
)
from napari_stem_defects.simulate.cross_sections import (
    PAIR_CONTENTS,
    SINGLE_CONTENTS,
    TABLE_FILE,
    fit_probe_profile,
)
from napari_stem_defects.simulate.microscope import MicroscopeSettings

ENERGIES_KV = (60.0, 80.0, 100.0, 120.0, 160.0, 200.0, 300.0)
#: Angles of the raw measurement (fine) and of the shipped table.
RAW_THETA = np.arange(20.0, 355.0, 5.0)
#: Upper edge of the stored quantity: 'beyond' is the cross-section scattered between theta and TOP_MRAD.
TOP_MRAD = 350.0
TABLE_THETA = (30.0, 40.0, 50.0, 60.0, 75.0, 90.0, 110.0, 140.0, 180.0, 230.0, 300.0)
TABLE_TILTS = (0.0, 10.0, 20.0, 30.0, 40.0)
CONVERGENCES = (10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)
PROFILE_RADII = np.concatenate([np.arange(0.0, 1.5, 0.05), np.arange(1.5, 3.0, 0.1), np.arange(3.0, 7.01, 0.25)])
THERMAL_SIGMA_A = 0.07
#: Configurations averaged per measurement: sub-pixel offsets of the column (static), plus in-plane
#: thermal displacements (thermal; pairs need more: their interference term varies per configuration).
CONFIGURATIONS = {"static": 8, "thermal": 16, "thermal pair": 24}
BOX_A = 10.0
CUTOFF_MRAD = 400.0


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def measure(raw_path: Path) -> dict[str, np.ndarray]:
    """Run (or resume) every multislice measurement; returns the raw arrays."""
    raw = dict(np.load(raw_path)) if raw_path.exists() else {}
    jobs = [(c, "thermal") for c in SINGLE_CONTENTS] + [(c, v) for c in PAIR_CONTENTS for v in ("thermal", "static")]
    for content, variant in jobs:
        if all(f"beyond/{content}/{variant}/{kv:g}" in raw for kv in ENERGIES_KV):
            continue
        t0 = time.perf_counter()
        for kv in ENERGIES_KV:
            tilts, beyond = plane_wave_cross_sections(
                content, kv, RAW_THETA, tilt_max_mrad=max(TABLE_TILTS) + 1.0, box_A=BOX_A, cutoff_mrad=CUTOFF_MRAD,
                configurations=CONFIGURATIONS["thermal pair" if variant == "thermal" and content in PAIR_CONTENTS
                                              else variant],
                phonon_sigma_A=THERMAL_SIGMA_A if variant == "thermal" else 0.0,
                seed=_seed(content, variant, kv),
            )
            raw[f"beyond/{content}/{variant}/{kv:g}"] = beyond  # (tilt, theta) in Å^2
            raw[f"tilts/{kv:g}"] = tilts
        np.savez(raw_path, **raw)
        print(f"{content:>5} {variant:>7}: {time.perf_counter() - t0:6.1f} s", flush=True)
    if "profile/Mo" not in raw:
        t0 = time.perf_counter()
        profiles = np.zeros((len(ENERGIES_KV), len(CONVERGENCES), len(PROFILE_RADII)))
        for a, kv in enumerate(ENERGIES_KV):
            for b, alpha in enumerate(CONVERGENCES):
                inner = max(2.0 * alpha, alpha + 20.0)
                settings = MicroscopeSettings(energy_kV=kv, convergence_mrad=alpha, detector_inner_mrad=inner,
                                              detector_outer_mrad=200.0)
                profiles[a, b] = column_image_profile("Mo", settings, PROFILE_RADII)
        raw["profile/Mo"] = profiles
        np.savez(raw_path, **raw)
        print(f"probe profiles: {time.perf_counter() - t0:6.1f} s", flush=True)
    return raw


def compress(raw: dict[str, np.ndarray]) -> dict:
    """The shipped table: a smooth fit over energy of the cross-section beyond each angle, per tilt, and probes.

    For every content, variant, table tilt and table angle, ``ln(beyond)`` over the measured
    energies is fitted by a cubic in ``x = ln(E / 120 kV)`` (least squares): smooth in the
    energy by construction, and it averages the ~0.5 % (W at 80-100 kV: ~2 %) scatter that
    the sub-pixel sampling of the potential leaves in each measurement.
    """
    import abtem
    from scipy.interpolate import PchipInterpolator

    from napari_stem_defects.simulate.cross_sections import ENERGY_REFERENCE_KV, aperture_mean

    cols = [int(np.flatnonzero(RAW_THETA == t)[0]) for t in TABLE_THETA]
    x = np.log(np.array(ENERGIES_KV) / ENERGY_REFERENCE_KV)
    coefficients: dict[str, dict[str, list]] = {}
    residual: dict[str, dict[str, float]] = {}
    for content in SINGLE_CONTENTS + PAIR_CONTENTS:
        for variant in ("thermal", "static"):
            if f"beyond/{content}/{variant}/{ENERGIES_KV[0]:g}" not in raw:
                continue
            per_kv = []
            for kv in ENERGIES_KV:
                tilts = raw[f"tilts/{kv:g}"]
                full = raw[f"beyond/{content}/{variant}/{kv:g}"]
                top = int(np.flatnonzero(RAW_THETA == TOP_MRAD)[0])
                beyond = full[:, cols] - full[:, [top]]  # between theta and TOP_MRAD: no cutoff in it
                per_kv.append(PchipInterpolator(tilts, beyond, axis=0)(np.array(TABLE_TILTS)))
            logb = np.log(np.stack(per_kv))  # (kV, tilt, theta)
            flat = logb.reshape(len(ENERGIES_KV), -1)
            coef = np.polynomial.polynomial.polyfit(x, flat, 3)  # (4, tilt * theta)
            fitted = np.polynomial.polynomial.polyval(x, coef).T  # (kV, tilt * theta)
            residual.setdefault(content, {})[variant] = round(float(np.abs(fitted - flat).max() * 100), 2)
            coef = coef.T.reshape(len(TABLE_TILTS), len(TABLE_THETA), 4)
            coefficients.setdefault(content, {})[variant] = np.round(coef, 4).tolist()
    # probe: fit the line-scan image of an isolated Mo atom, its total fixed to the table's cross-section
    fwhm, tail, width, amp = (np.zeros((len(ENERGIES_KV), len(CONVERGENCES))) for _ in range(4))
    for a, kv in enumerate(ENERGIES_KV):
        tilts = raw[f"tilts/{kv:g}"]
        beyond = raw[f"beyond/Mo/thermal/{kv:g}"]
        for b, alpha in enumerate(CONVERGENCES):
            inner = max(2.0 * alpha, alpha + 20.0)
            pair = np.array([np.interp(t, RAW_THETA, row) for row in beyond for t in (inner, 200.0)]).reshape(-1, 2)
            total = float(aperture_mean(tilts, pair[:, 0] - pair[:, 1], alpha))
            fit = fit_probe_profile(PROFILE_RADII, raw["profile/Mo"][a, b], total=total)
            fwhm[a, b], tail[a, b], width[a, b], amp[a, b] = fit
    return {
        "format": "napari-stem-defects column cross-sections",
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "script": "scripts/fit_cross_sections.py",
        "abtem_version": abtem.__version__,
        "units": "beyond: Å^2 of incident beam (natural log in the fit); probe: Å",
        "method": (
            "Integrated scattering cross-section of an isolated column (StatSTEM's measure: the detected "
            "intensity integrated over the column's region, here the whole plane since the column is alone; "
            "equal to the box area times the aperture-disc mean of the fraction of each plane wave the detector "
            "collects), from abTEM multislice of plane waves through the column alone in a periodic "
            f"{BOX_A:g} Å box at {', '.join(f'{k:g}' for k in ENERGIES_KV)} kV. A pair of two different atoms "
            "is named in order: its first atom at +h on the beam's exit side, the second at -h where the beam "
            "enters ('SSe': Se meets the beam first; 'SeS': S does). 'beyond' is box area x the "
            "fraction of a plane wave tilted by tilt_mrad scattered between the detector angle theta_mrad and "
            f"{TOP_MRAD:g} mrad (the unscattered beam left out): "
            "ln(beyond) = sum_i c_i x^i with x = ln(E / 120 kV), c = beyond_coefficients[content][variant]"
            "[tilt][theta] (cubic least squares over the measured energies; largest residual in "
            "fit_residual_percent). A detector (inner, outer) and a convergence semi-angle alpha give "
            "sigma = aperture-disc mean over tilts <= alpha of beyond(inner) - beyond(outer), angles "
            "interpolated by a monotone cubic in ln(beyond), tilts by a monotone cubic. 'thermal': mean over "
            f"{CONFIGURATIONS['thermal']} (pairs {CONFIGURATIONS['thermal pair']}) frozen-phonon configurations "
            "(each with a random sub-pixel offset of the column) with in-plane rms displacement "
            f"{THERMAL_SIGMA_A} Å; 'static': mean over {CONFIGURATIONS['static']} sub-pixel positions of a static "
            "column; single atoms are the same in both (stored once, as 'thermal'). Probe: the fast twins' probe "
            "(Gaussian core of FWHM fwhm_A plus a 2D Poisson-kernel tail of fraction tail_fraction and width "
            "tail_width_A) least-squares fitted to the abTEM line-scan image of an isolated Mo atom (static, "
            "detector inner max(2 alpha, alpha + 20), outer 200 mrad, no source size; a source adds in "
            "quadrature to the core FWHM), its integral fixed to the table's cross-section."
        ),
        "protocol": {**PROTOCOL, "box_A": BOX_A, "cutoff_mrad": CUTOFF_MRAD,
                     "chalcogen_heights_A": {"S": 1.57, "Se": 1.67, "Te": 1.80},
                     "phonon_sigma_A": THERMAL_SIGMA_A, "configurations": CONFIGURATIONS},
        "energy_kV": list(ENERGIES_KV),
        "energy_reference_kV": ENERGY_REFERENCE_KV,
        "tilt_mrad": list(TABLE_TILTS),
        "theta_mrad": list(TABLE_THETA),
        "top_mrad": TOP_MRAD,
        "fit_residual_percent": residual,
        "beyond_coefficients": coefficients,
        "probe": {
            "energy_kV": list(ENERGIES_KV),
            "convergence_mrad": list(CONVERGENCES),
            "fwhm_A": np.round(fwhm, 4).tolist(),
            "tail_fraction": np.round(tail, 4).tolist(),
            "tail_width_A": np.round(width, 4).tolist(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", default="column_calibration_raw.npz", help="raw measurements (resumable)")
    parser.add_argument("--out", default=str(TABLE_FILE), help="table to write")
    parser.add_argument("--threads", type=int, default=1, help="FFT threads (default 1)")
    parser.add_argument("--configurations", type=int, nargs=3, metavar=("STATIC", "THERMAL", "PAIR"), default=None,
                        help="configurations per measurement: static, thermal single atoms, thermal pairs (default "
                             f"{' '.join(str(n) for n in CONFIGURATIONS.values())}); to add contents to a raw file "
                             "measured with other counts, give those (the shipped table: 4 8 8)")
    args = parser.parse_args()
    if args.configurations:
        CONFIGURATIONS.update(zip(("static", "thermal", "thermal pair"), args.configurations))
    configure_abtem(args.threads)
    t0 = time.perf_counter()
    raw = measure(Path(args.raw))
    table = compress(raw)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.1f} KB) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
