"""Real samples: phases, boundaries, holes and masks, on composite twins with exact truth and on real images.

Part 1, composite twins (`simulate_sample`: tilt grain boundaries, mirror twin domains, 1T/1T' regions,
holes, amorphous patches, NaN masks), against their exact truth (the oracle):

- phase-map pixel accuracy and per-phase recall;
- occupied-column F1 per phase;
- interior cells: class agreement with the truth's cell at the same metal site, and counts per class
  against the truth's counts (within their Poisson error?);
- cells whose metal and partner are more than 1.3 nn apart and not marked as boundary cells (must be 0;
  a cell never pairs columns of two domains by construction).

Part 2, the real images in ``../shared/data/real/``:

- MoSe2_GB_mono.tif: occupied-column F1 against its reference positions (1294 columns; positions within
  0.5 nn of the image edge, which the reference leaves out, are not scored), cells spanning a boundary;
- WS2Te2_alloy_0040_1_Cut.tif: share of its lower region found as 1T, and the recall of the columns an
  independent detector finds there (difference-of-Gaussians peaks, :func:`dog_reference`) by our sites;
- MoWSSe_3D_Stack_align2_original.png: in the patch y 740-940, x 260-660, detected peaks that no site,
  hole or amorphous patch explains ("discarded real peaks");
- every real TMD image: site/cell contradictions (:func:`~napari_stem_defects.cells.joint.contradictions`).

Part 3: time of the whole column detection of a 2048^2 twin.

Usage::

    .venv/bin/python benchmarks/bench_real_samples.py [--twins 4] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from napari_stem_defects.analyze import analyze_image
from napari_stem_defects.cells.joint import contradictions
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.columns.evaluate import match_points
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import ImagingParams
from napari_stem_defects.simulate.presets import mos2_real_sample
from napari_stem_defects.simulate.regions import random_regions
from napari_stem_defects.simulate.sample import simulate_sample
from napari_stem_defects.vocabulary import CELL_CLASSES, PHASE_CODES, PHASE_OF_CODE

REAL = [("MoS2_Se-implanted_60kV_HAADF.dm3", "MoS2+Se"), ("MoSe2_80K_small_region.tif", "MoSe2"),
        ("MoSe2_GB_mono.tif", "MoSe2"), ("MoTe2_sample_1.jpg", "MoTe2"),
        ("MoWSSe_3D_Stack_align2_original.png", "MoWSSe"), ("WS2Te2_alloy_0040_1_Cut.tif", "W(S,Te)2"),
        ("WSSe_partial_SuperScan_HAADF_12_corrected.tif", "WSSe"),
        ("WSSe_partial_SuperScan_HAADF_3_corrected.tif", "WSSe"), ("WSe2_full_SuperScan_HAADF_14_corrected.tif", "WSe2")]
DEFECTS = {"V_X1": 0.03, "V_X2": 0.008, "V_M": 0.006, "V_X1+V_M": 0.003, "adatom": 0.004}


def occupied(sites: pd.DataFrame) -> pd.DataFrame:
    """Lattice columns that hold atoms (not empty sites, not hollow-site adatoms)."""
    species = sites["species"].astype(str)
    return sites[(sites["sublattice"] != "H") & (species != "") & (species != "empty")]


def f1(pred: np.ndarray, ref: np.ndarray, radius: float) -> tuple[float, float, float]:
    """Precision, recall and F1 of matched positions."""
    if len(pred) == 0 or len(ref) == 0:
        return 0.0, 0.0, 0.0
    i, _ = match_points(pred, ref, radius)
    p, r = len(i) / len(pred), len(i) / len(ref)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def twin_scores(twin, analysis) -> dict[str, float]:
    """Scores of one analysis against a composite twin's truth."""
    result, cells = analysis.columns[0], analysis.cells[0]
    truth, tcells, nn = twin.sites, twin.cells, twin.nn_px
    phase, _ = (m[0] for m in analysis.phase_maps())
    true_phase = twin.extra["phase_map"]
    out = {"pixel_acc": float((phase == true_phase).mean())}
    for name in ("2H", "1T", "hole", "amorphous", "masked"):
        code = PHASE_CODES[name]
        if (true_phase == code).any():
            out[f"recall_{name}"] = float((phase[true_phase == code] == code).mean())
    for ph in ("2H", "1T"):
        t, p = occupied(truth[truth["phase"] == ph]), occupied(result.sites[result.sites["phase"] == ph])
        if len(t):
            out[f"F1_{ph}"] = f1(p[["y_px", "x_px"]].to_numpy(), t[["y_px", "x_px"]].to_numpy(), nn / 3)[2]
    metal = truth.set_index("site_id").loc[tcells["m_site_id"], ["y_px", "x_px"]].to_numpy()
    i, j = match_points(cells[["m_y_px", "m_x_px"]].to_numpy(), metal, nn / 3)
    ours, theirs = cells.iloc[i], tcells.iloc[j]
    interior = (~ours["boundary"].to_numpy(bool) & ~theirs["boundary"].to_numpy(bool)
                & ours["class"].isin(CELL_CLASSES).to_numpy() & theirs["class"].isin(CELL_CLASSES).to_numpy())
    out["interior_cells"] = int(interior.sum())
    out["class_agreement"] = float((ours["class"].to_numpy()[interior] == theirs["class"].to_numpy()[interior]).mean())
    for cls in ("V_X1", "V_X2", "V_M", "V_X1+V_M", "adatom"):
        out[f"n_{cls}"] = int((ours["class"].to_numpy()[interior] == cls).sum())
        out[f"true_{cls}"] = int((theirs["class"].to_numpy()[interior] == cls).sum())
    complete = cells["x_site_id"].to_numpy() >= 0
    dm = cells[["m_y_px", "m_x_px"]].to_numpy()[complete]
    dx = cells[["x_y_px", "x_x_px"]].to_numpy()[complete]
    stretched = np.linalg.norm(dx - dm, axis=1) > 1.3 * result.nn_px
    out["cells_spanning"] = int((stretched & ~cells["boundary"].to_numpy(bool)[complete]).sum())
    return out


def part_twins(n: int) -> None:
    """Composite twins: the preset and ``n`` random layouts (MoS2, WSe2 and MoTe2)."""
    rows = []
    cases = [("mos2_real_sample (preset)", mos2_real_sample(), "MoS2")]
    for k in range(n):
        material = ("MoS2", "WSe2", "MoTe2")[k % 3]
        rng = np.random.default_rng(7300 + k)
        pixel = float(rng.uniform(0.10, 0.14))
        regions = random_regions((768, 768), pixel, parse_material(material).a, rng)
        twin = simulate_sample(material, (768, 768), pixel, regions=regions, defects=DEFECTS, seed=7300 + k,
                               imaging=ImagingParams(dose=float(rng.choice([5e4, 2e5, 1e6]))))
        cases.append((f"random layout {k} {material}", twin, material))
    for name, twin, material in cases:
        start = time.perf_counter()
        analysis = analyze_image(StemImage(twin.image, (twin.pixel_size,) * 2, name, {}), material=material,
                                 classifier="cnn", force=True)
        scores = twin_scores(twin, analysis)
        scores["seconds"] = time.perf_counter() - start
        scores["case"] = name
        rows.append(scores)
    table = pd.DataFrame(rows).set_index("case")
    cols = [c for c in ("pixel_acc", "recall_2H", "recall_1T", "recall_hole", "recall_amorphous", "recall_masked",
                        "F1_2H", "F1_1T", "interior_cells", "class_agreement", "cells_spanning", "seconds")
            if c in table]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print("\n== Composite twins: phase map, columns per phase, interior cells ==")
        print(table[cols].to_string())
        print("\n== Interior cells per class: found / true (Poisson 95 % range of the truth) ==")
        for name, row in table.iterrows():
            parts = []
            for cls in ("V_X1", "V_X2", "V_M", "V_X1+V_M", "adatom"):
                t, f = row[f"true_{cls}"], row[f"n_{cls}"]
                lo, hi = max(0.0, t - 1.96 * np.sqrt(max(t, 1))), t + 1.96 * np.sqrt(max(t, 1))
                parts.append(f"{cls} {f:.0f}/{t:.0f}{'' if lo <= f <= hi else ' (!)'}")
            print(f"{name:32s} " + ", ".join(parts))


def dog_reference(image: np.ndarray, nn_px: float) -> np.ndarray:
    """Column positions an independent detector finds: maxima of a difference of Gaussians (0.15 nn and 0.5 nn)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max

    img = np.asarray(image, float)
    dog = ndimage.gaussian_filter(img, 0.15 * nn_px) - ndimage.gaussian_filter(img, 0.5 * nn_px)
    return peak_local_max(dog, min_distance=max(1, int(0.35 * nn_px)), threshold_abs=0.0,
                          exclude_border=max(1, int(0.5 * nn_px))).astype(float)


def part_real(shared: Path, configs: tuple[str, ...] = ("intensity:cnn", "context:cnn+columns")) -> None:
    """The real images: reference F1, the 1T region, the shifted patch, contradictions."""
    real = shared / "real"
    print("\n== MoSe2_GB_mono.tif against its reference positions ==")
    image = read_stem_file(real / "MoSe2_GB_mono.tif")[0]
    ref = pd.read_csv(real / "MoSe2_GB_mono_points.csv")[["y_row_px", "x_col_px"]].to_numpy(float)
    for method in ("classical", "deep"):
        analysis = analyze_image(image, material="MoSe2", method=method, classifier="cnn")
        result, cells = analysis.columns[0], analysis.cells[0]
        nn = result.nn_px
        h, w = image.data.shape
        edge = 0.5 * nn

        def inner(p: np.ndarray) -> np.ndarray:
            return (p[:, 0] >= edge) & (p[:, 0] <= h - 1 - edge) & (p[:, 1] >= edge) & (p[:, 1] <= w - 1 - edge)

        pred = occupied(result.sites)[["y_px", "x_px"]].to_numpy()
        p, r, f = f1(pred[inner(pred)], ref[inner(ref)], nn / 3)
        complete = cells["x_site_id"].to_numpy() >= 0
        span = np.linalg.norm(cells[["x_y_px", "x_x_px"]].to_numpy()[complete]
                              - cells[["m_y_px", "m_x_px"]].to_numpy()[complete], axis=1) > 1.3 * nn
        print(f"{method:9s} precision {p:.4f} recall {r:.4f} F1 {f:.4f}; cells spanning a boundary {int(span.sum())}; "
              f"boundary cells {int(cells['boundary'].sum())}; domains {len(result.domains)}")

    print("\n== WS2Te2_alloy_0040_1_Cut.tif: the lower region ==")
    image = read_stem_file(real / "WS2Te2_alloy_0040_1_Cut.tif")[0]
    for method in ("classical", "deep"):
        result = detect_columns(image.data, material="W(S,Te)2", method=method)
        from napari_stem_defects.columns.phase_map import phase_maps

        phase, _ = phase_maps(result.sites, image.data.shape, result.regions)
        h = image.data.shape[0]
        lower = np.zeros_like(phase, bool)
        lower[int(0.75 * h):] = True  # below every part of the 2H/1T interface
        share_1t = float((phase[lower] == PHASE_CODES["1T"]).mean())
        ref = dog_reference(image.data, result.nn_px)
        ref = ref[ref[:, 0] >= 0.75 * h]
        sites = result.sites[result.sites["sublattice"] != "H"]
        pos = sites[["y_px", "x_px"]].to_numpy()
        _, j = match_points(pos, ref, result.nn_px / 3)
        occ = occupied(result.sites)[["y_px", "x_px"]].to_numpy()
        _, jo = match_points(occ, ref, result.nn_px / 3)
        n_1t = int((result.sites["phase"] == "1T").sum())
        print(f"{method:9s} lower quarter found 1T: {share_1t:.3f}; independent peaks there {len(ref)}, recalled by "
              f"sites {len(j) / len(ref):.3f}, by occupied sites {len(jo) / len(ref):.3f}; 1T sites {n_1t}")

    print("\n== MoWSSe_3D_Stack_align2_original.png: the patch y 740-940, x 260-660 ==")
    image = read_stem_file(real / "MoWSSe_3D_Stack_align2_original.png")[0]
    for method in ("classical", "deep"):
        result = detect_columns(image.data, material="MoWSSe", method=method)

        def patch(p: np.ndarray) -> np.ndarray:
            return (p[:, 0] >= 740) & (p[:, 0] <= 940) & (p[:, 1] >= 260) & (p[:, 1] <= 660)

        loose = result.unexplained
        rc = np.clip(np.rint(loose).astype(int), 0, np.array(image.data.shape) - 1) if len(loose) else np.zeros((0, 2), int)
        in_void = (result.regions[rc[:, 0], rc[:, 1]] > 0) if len(loose) else np.zeros(0, bool)
        sites = result.sites[patch(result.sites[["y_px", "x_px"]].to_numpy())]
        print(f"{method:9s} peaks in the patch {int(patch(result.peaks).sum())}, unexplained "
              f"{int(patch(loose).sum()) if len(loose) else 0} (in amorphous/hole areas "
              f"{int((patch(loose) & in_void).sum()) if len(loose) else 0}, discarded real peaks "
              f"{int((patch(loose) & ~in_void).sum()) if len(loose) else 0}); sites {len(sites)}, detected share "
              f"{sites['detected'].mean():.3f}")

    print("\n== Site/cell contradictions and defect shares, every real image (species by / cell classifier) ==")
    for name, material in REAL:
        image = read_stem_file(real / name)[0]
        for config in configs:
            column_classifier, classifier = config.split(":")
            analysis = analyze_image(image, material=material, classifier=classifier, force=True,
                                     column_classifier=column_classifier)
            sites, cells = analysis.columns[0].sites, analysis.cells[0]
            phases = analysis.summary()["phases"][0]
            counted = cells[cells["complete"].astype(bool) & ~cells["boundary"].astype(bool)]
            shares = counted["class"].value_counts(normalize=True)
            defects = ", ".join(f"{c} {100 * v:.1f} %" for c, v in shares.items() if c != "perfect" and v >= 0.005)
            print(f"{name:48s} {material:9s} {config:22s} contradictions "
                  f"{contradictions(sites, cells, material)}; cells {len(cells)} "
                  f"(boundary {int(cells['boundary'].sum())}, incomplete {int((cells['class'] == 'incomplete').sum())}); "
                  "phases " + ", ".join(f"{k} {v['fraction']:.3f}" for k, v in phases.items())
                  + f"; defects (>= 0.5 %): {defects or 'none'}")


def part_speed() -> None:
    """Whole column detection (map, peaks, refinement, grains, domains, sites, species) of a 2048^2 twin."""
    from napari_stem_defects.simulate import simulate_twin

    twin = simulate_twin("MoS2", shape=(2048, 2048), pixel_size=0.12, seed=11, defects={"V_X1": 0.03},
                         imaging=ImagingParams(dose=1e5))
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        result = detect_columns(twin.image, material="MoS2", pixel_size=0.12)
        best = min(best, time.perf_counter() - start)
    print(f"\n== Speed: detect_columns on 2048^2 ({len(result.sites)} sites): {best:.1f} s (best of 2) ==")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twins", type=int, default=4, help="random composite layouts besides the preset")
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--skip", nargs="*", default=(), choices=("twins", "real", "speed"))
    parser.add_argument("--configs", nargs="*", default=["intensity:cnn", "context:cnn+columns"],
                        metavar="COLUMN:CELL", help="column classifier and cell classifier pairs for the real "
                                                    "images' contradictions and defect shares")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if "twins" not in args.skip:
        part_twins(args.twins)
    if "real" not in args.skip:
        part_real(Path(args.shared), tuple(args.configs))
    if "speed" not in args.skip:
        part_speed()
    print("\nphase codes:", {v: k for k, v in PHASE_OF_CODE.items()})


if __name__ == "__main__":
    main()
