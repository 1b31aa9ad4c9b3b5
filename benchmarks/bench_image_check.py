"""Image check: verdicts on wrong files, wrong materials and wrong pixel sizes, against the calibration check.

For each case the table gives the verdict a user should get, the image check's verdict, and the verdict
of the named peer: the plain calibration check (`napari-stem-defects calibrate`, pixel size from the
lattice within 3 %), which is all the plugin had before. Then the check's own cost on 1024^2 and
2048^2 twins (the lattice measurement that column detection needs anyway is not counted).

Usage::

    .venv/bin/python benchmarks/bench_image_check.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from napari_stem_defects.calibration import LatticeNotFoundError, check_calibration
from napari_stem_defects.columns import columns_from_map, compute_detection_map
from napari_stem_defects.columns.pipeline import lattice_spacing
from napari_stem_defects.columns.result import ColumnDetectionError
from napari_stem_defects.image_check import check_image, check_lattice, sublattice_levels
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.simulate import ImagingParams, simulate_twin

REAL = [
    ("MoS2_Se-implanted_60kV_HAADF.dm3", "MoS2+Se"), ("MoSe2_80K_small_region.tif", "MoSe2"),
    ("MoSe2_GB_mono.tif", "MoSe2"), ("MoTe2_sample_1.jpg", "MoTe2"),
    ("MoWSSe_3D_Stack_align2_original.png", "MoWSSe"), ("WS2Te2_alloy_0040_1_Cut.tif", "W(S,Te)2"),
    ("WSSe_partial_SuperScan_HAADF_12_corrected.tif", "WSSe"), ("WSSe_partial_SuperScan_HAADF_3_corrected.tif", "WSSe"),
    ("WSe2_full_SuperScan_HAADF_14_corrected.tif", "WSe2"),
]


def verdict(image: np.ndarray, material: str, pixel_size, source: str = "file") -> str:
    """'accept', 'accept (lattice px)' or 'refuse: <first failed check>'."""
    img = np.asarray(image, dtype=np.float32)
    try:
        lattice, nn = lattice_spacing(img, material, pixel_size)
    except ColumnDetectionError:
        return "refuse: lattice" if not check_lattice(img, None, pixel_size).ok else "error"
    first = check_lattice(img, lattice, pixel_size)
    sites, fitted = None, None
    if first.ok:
        dmap = compute_detection_map(img, material=material, pixel_size=pixel_size, lattice=(lattice, nn))
        result = columns_from_map(img, dmap, material=material, pixel_size=pixel_size)
        sites, fitted = result.sites, (result.a1, result.a2)
    check = check_image(img, lattice, sites, nn, material, pixel_size, pixel_size_source=source, lattice_finding=first,
                        fitted=fitted)
    if check.ok:
        return "accept (lattice px)" if check.pixel_size_source == "lattice" else "accept"
    return "refuse: " + next(f.name for f in check.findings if not f.ok)


def peer(image: np.ndarray, material: str, pixel_size) -> str:
    """The calibration check alone: accept when the lattice fits the file's pixel size (or there is none)."""
    try:
        report = check_calibration(image, material, pixel_size)
    except (LatticeNotFoundError, ValueError):
        return "refuse: no lattice"
    if pixel_size is None:
        return "accept"
    return "accept" if report.ok else "refuse: spacing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = parser.parse_args()
    shared = Path(args.shared)
    warnings.filterwarnings("ignore")
    cases = []  # (case, expected, image, material, pixel size, source)
    for name, material in REAL:
        img = read_stem_file(shared / "real" / name)[0]
        cases.append((f"{name[:38]} as {material}", "accept", img.data, material, img.pixel_size, "file"))
    ws2te2 = read_stem_file(shared / "real" / "WS2Te2_alloy_0040_1_Cut.tif")[0]
    cases.append(("WS2Te2 alloy as WS2", "refuse", ws2te2.data, "WS2", None, "file"))
    for name in ("16_STOimage_1.ser", "Acquisition_18.emd", "example_Au_nanoparticle.emd"):
        img = read_stem_file(shared / "formats" / name)[0]
        cases.append((f"{name} as MoS2", "refuse", img.data, "MoS2", img.pixel_size, "file"))
    for seed, (material, dose) in enumerate([("MoS2", 1e5), ("MoS2", 1e4), ("WSe2", 1e5), ("MoTe2", 1e5)]):
        twin = simulate_twin(material, shape=(512, 512), pixel_size=0.12, rotation_deg=None, seed=100 + seed,
                             defects={"V_X1": 0.03, "V_M": 0.01}, imaging=ImagingParams(dose=dose))
        cases.append((f"{material} twin {dose:.0e} as {material}", "accept", twin.image, material, (0.12, 0.12), "file"))
        if material == "MoS2" and dose == 1e5:
            for wrong in ("WSe2", "MoTe2", "WS2", "MoSe2"):
                cases.append((f"MoS2 twin as {wrong}", "refuse", twin.image, wrong, (0.12, 0.12), "file"))
            for factor in (1.15, 1 / 1.15):
                px = 0.12 * factor
                cases.append((f"MoS2 twin, file px x{factor:.3f}", "accept (lattice px)", twin.image, "MoS2",
                              (px, px), "file"))
                cases.append((f"MoS2 twin, typed px x{factor:.3f}", "refuse", twin.image, "MoS2", (px, px), "typed"))
    print(f"{'case':58s} {'expected':20s} {'image check':22s} {'calibration check (peer)':24s}")
    right = right_peer = 0
    for case, expected, image, material, px, source in cases:
        ours = verdict(image, material, px, source)
        theirs = peer(image, material, px)
        right += ours.startswith(expected)
        right_peer += theirs.startswith(expected.split(" ")[0]) and (expected != "accept (lattice px)")
        print(f"{case:58s} {expected:20s} {ours:22s} {theirs:24s}")
    print(f"\nright verdicts: image check {right}/{len(cases)}, calibration check {right_peer}/{len(cases)}")

    print("\ncost of the check (strong spots + sublattice levels + decisions), 2 CPU threads:")
    for side in (1024, 2048):
        twin = simulate_twin("MoS2", shape=(side, side), pixel_size=0.12, seed=7, imaging=ImagingParams(dose=1e5))
        lattice, nn = lattice_spacing(twin.image, "MoS2", (0.12, 0.12))
        dmap = compute_detection_map(twin.image, material="MoS2", lattice=(lattice, nn))
        sites = columns_from_map(twin.image, dmap, material="MoS2").sites
        times = []
        for _ in range(3):
            start = time.perf_counter()
            check_image(twin.image, lattice, sites, nn, "MoS2", (0.12, 0.12))
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        sublattice_levels(twin.image, sites, nn)
        levels = time.perf_counter() - start
        print(f"  {side}x{side}: {min(times):.2f} s (of which sublattice levels {levels:.2f} s), {len(sites)} sites")


if __name__ == "__main__":
    main()
