"""Unit-cell classification: accuracy on fresh twins, throughput, Shapes-layer build time, real images.

Run (about 10 min on 2 cores; ``--quick`` for a 1-minute smoke run)::

    python benchmarks/bench_cells.py            # prints markdown tables
    xvfb-run -a python benchmarks/bench_cells.py --screenshot-dir benchmarks/output   # + viewer screenshots

Sections:

1. **Held-out accuracy of the CNN** (the model card's tables, reproduced):
   :func:`napari_stem_defects.training.cell_cnn.heldout_metrics` on twins that
   were never training or validation seeds, from ground-truth positions with a
   detector-like error of up to 0.1 nn, each twin classified with its own
   class prior (``--prior image``, the default of ``classify_cells``).
1b. **Ideal observers** on the same twins (:mod:`napari_stem_defects.cells.evaluate`):
   the best V_X1 F1, and the best M_X and sub_X F1 between those two classes,
   any classifier of those images could reach on average, beside the CNN's.
2. **End to end, CNN against the physics baseline (the peer) on the same
   twins**: columns detected by ``detect_columns``, cells classified by both,
   each cell scored against the true contents of the sites it holds
   (:func:`napari_stem_defects.cells.physics.reference_classes`).
3. **Throughput** of both classifiers on a 2048 x 2048 twin with about 15,000
   cells, and the time napari takes to build the Shapes layer of those cells
   with the bermuda triangulation against its pure-python one.
4. **Real images** from ``../shared/data/real`` (no labels): class counts and
   concentrations by both classifiers, and (with a display) a screenshot of
   the classified viewer.

Twins use the "clean" imaging of the column benchmark unless ``--imaging random``:
amorphous texture up to 10^-3.5 (section 1b shows how visible a single atom stays under it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_stem_defects.composition import allowed_classes
from napari_stem_defects.cells.classify import classify_site_table
from napari_stem_defects.cells.cnn import PRIORS, classify_cells, load_cell_model
from napari_stem_defects.cells.evaluate import (ideal_antisite_evidence, ideal_pair_f1, ideal_vx1_evidence,
                                                ideal_vx1_f1)
from napari_stem_defects.cells.physics import classify_cells_physics, reference_classes
from napari_stem_defects.cells.statistics import defect_statistics
from napari_stem_defects.columns import ColumnDetectionError, detect_columns
from napari_stem_defects.simulate import CELL_CLASSES, ImagingParams, simulate_twin
from napari_stem_defects.training.cell_cnn import (
    TEST_DOSES, TEST_MATERIALS, class_metrics, heldout_metrics, heldout_twin, twin_cells, twin_nn_px,
)

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
#: Real images: material and pixel size (Å) from SOURCES.md (file calibration or the FFT check there).
REAL_IMAGES = {
    "MoS2_Se-implanted_60kV_HAADF.dm3": ("MoS2", None),
    "MoSe2_GB_mono.tif": ("MoSe2", 0.156),
    "MoSe2_80K_small_region.tif": ("MoSe2", 0.077),
    "WSe2_full_SuperScan_HAADF_14_corrected.tif": ("WSe2", 0.081),
    "MoTe2_sample_1.jpg": ("MoTe2", 0.090),
    "MoWSSe_3D_Stack_align2_original.png": ("MoWSSe", 0.15625),
}


def per_class_table(metrics: dict[float, dict], label: str) -> str:
    """Markdown: one row per class, precision / recall / F1 per dose."""
    doses = list(metrics)
    lines = [f"**{label}** (precision / recall / F1; support at the last dose)", "",
             "| class | " + " | ".join(f"{d:.0e}" for d in doses) + " | n |",
             "|---|" + "---|" * (len(doses) + 1)]
    for c in CELL_CLASSES:
        cols = []
        for d in doses:
            v = metrics[d]["per_class"][c]
            cols.append(f"{v['precision']:.3f} / {v['recall']:.3f} / {v['f1']:.3f}" if v["support"] else "-")
        if any(col != "-" for col in cols):
            lines.append(f"| {c} | " + " | ".join(cols) + f" | {metrics[doses[-1]]['per_class'][c]['support']} |")
    return "\n".join(lines)


def confusion_table(cm: np.ndarray) -> str:
    """Markdown confusion matrix (rows true, columns predicted), classes that occur only."""
    cm = np.asarray(cm)
    keep = [k for k in range(len(CELL_CLASSES)) if cm[k].sum() or cm[:, k].sum()]
    short = [CELL_CLASSES[k] for k in keep]
    lines = ["| true \\ predicted | " + " | ".join(short) + " |", "|---|" + "---|" * len(keep)]
    for k in keep:
        lines.append(f"| {CELL_CLASSES[k]} | " + " | ".join(str(int(cm[k, j])) for j in keep) + " |")
    return "\n".join(lines)


def lowest(m: dict) -> str:
    present = {c: v for c, v in m["per_class"].items() if v["support"] > 0}
    c = min(present, key=lambda k: present[k]["f1"])
    return f"{c} {present[c]['f1']:.3f}"


def section_heldout(model, args) -> dict:
    print("\n## 1. CNN on held-out twins (ground-truth positions + up to 0.1 nn error)\n")
    t0 = time.time()
    table = heldout_metrics(model, args.doses, args.materials, args.per, size=args.size, mode=args.mode,
                            imaging=args.imaging, prior=args.prior)
    print("| material | dose (e/Å²) | cells | accuracy | macro-F1 | lowest class F1 | target |")
    print("|---|---|---|---|---|---|---|")
    for mat, per_dose in table.items():
        for dose, m in per_dose.items():
            target = {1e5: 0.95, 1e6: 0.98}.get(dose)
            misses = [] if target is None or m["macro_f1"] >= target else [f"macro-F1 below {target}"]
            if dose == 1e5 and min(v["f1"] for v in m["per_class"].values() if v["support"]) < 0.9:
                misses.append("a class below 0.9")
            ok = "" if target is None else ("met" if not misses else "**not met**: " + ", ".join(misses))
            print(f"| {mat} | {dose:.0e} | {m['n_cells']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                  f"{lowest(m)} | {ok} |")
    for mat, per_dose in table.items():
        print("\n" + per_class_table(per_dose, mat))
        mid = 1e5 if 1e5 in per_dose else list(per_dose)[-1]
        print(f"\nconfusion, {mat} at {mid:.0e} (rows true, columns predicted):\n")
        print(confusion_table(per_dose[mid]["confusion"]))
    print(f"\n({time.time() - t0:.0f} s)")
    return table


def section_bound(args, table: dict | None) -> None:
    """V_X1, M_X and sub_X F1 of the CNN against the ideal observers (cells.evaluate) on the same held-out twins."""
    print("\n## 1b. The faintest distinctions: CNN against ideal observers\n")
    print("The ideal observer knows each twin's noise-free image and decides perfect vs V_X1 from the "
          "counts around the X2 column by the Poisson likelihood ratio, with the true class shares: "
          "an upper bound for any classifier of that image (`cells/evaluate.py`).\n")
    t0 = time.time()
    vx1_rows, antisite_rows = [], []
    for mat in args.materials:
        for dose in args.doses:
            twins = [heldout_twin(mat, dose, i, size=args.size, imaging=args.imaging)[0] for i in range(args.per)]
            cnn = None if table is None else table[mat][float(dose)]["per_class"]
            ev = pd.concat([ideal_vx1_evidence(t) for t in twins])
            vx1 = "-" if cnn is None else f"{cnn['V_X1']['f1']:.3f}"
            vx1_rows.append(f"| {mat} | {dose:.0e} | {len(ev)} | {vx1} | {ideal_vx1_f1(ev):.3f} |")
            ev = pd.concat([ideal_antisite_evidence(t) for t in twins])
            if ev.empty:
                continue
            f1 = ["-", "-"] if cnn is None else [f"{cnn[c]['f1']:.3f}" for c in ("M_X", "sub_X")]
            antisite_rows.append(f"| {mat} | {dose:.0e} | {len(ev)} | {f1[0]} | "
                                 f"{ideal_pair_f1(ev.assign(llr=-ev['llr']), 'M_X'):.3f} | {f1[1]} | "
                                 f"{ideal_pair_f1(ev, 'sub_X'):.3f} |")
    print("| material | dose (e/Å²) | perfect + V_X1 cells | V_X1 F1, CNN | V_X1 F1, ideal observer |")
    print("|---|---|---|---|---|")
    print("\n".join(vx1_rows))
    print("\nMetal antisite (M_X) against a substituted chalcogen (sub_X): both brighten the X2 column, "
          "and only the Z exponent tells them apart. The ideal observer decides between the contents the "
          "twin's own M_X and sub_X columns hold.\n")
    print("| material | dose (e/Å²) | M_X + sub_X cells | M_X F1, CNN | M_X F1, ideal | sub_X F1, CNN | "
          "sub_X F1, ideal |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(antisite_rows))
    print(f"\n({time.time() - t0:.0f} s)")


def section_end_to_end(model, args) -> None:
    print("\n## 2. End to end on the same twins: detected columns, CNN vs physics baseline\n")
    k = len(CELL_CLASSES)
    rows = []
    t0 = time.time()
    for mat in args.materials:
        for dose in args.doses:
            cms = {"cnn": np.zeros((k, k), int), "physics": np.zeros((k, k), int)}
            for i in range(args.per):
                twin, _ = heldout_twin(mat, dose, i, size=args.size, imaging=args.imaging)
                try:
                    result = detect_columns(twin.image, material=mat, pixel_size=twin.pixel_size)
                except ColumnDetectionError:
                    continue
                nn = twin_nn_px(twin)
                for name in cms:
                    cells = classify_site_table(twin.image, result.sites, mat, "physics" if name == "physics"
                                                else "cnn", posteriors=result.posteriors, nn_px=result.nn_px,
                                                model=model)
                    ref = reference_classes(cells, result.sites, twin.sites, nn, mat)
                    ok = (ref != "") & cells["complete"].to_numpy()
                    t = np.array([CELL_CLASSES.index(c) for c in ref[ok]], int)
                    p = np.array([CELL_CLASSES.index(c) for c in cells["class"].to_numpy()[ok]], int)
                    cms[name] += np.bincount(t * k + p, minlength=k * k).reshape(k, k)
            for name, cm in cms.items():
                m = class_metrics(cm)
                rows.append({"material": mat, "dose": dose, "classifier": name, "cells": m["n_cells"],
                             "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "lowest": lowest(m)})
    table = pd.DataFrame(rows)
    print("| material | dose (e/Å²) | cells | CNN accuracy | CNN macro-F1 | CNN lowest | "
          "physics accuracy | physics macro-F1 | physics lowest |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (mat, dose), g in table.groupby(["material", "dose"], sort=False):
        c, p = g[g.classifier == "cnn"].iloc[0], g[g.classifier == "physics"].iloc[0]
        print(f"| {mat} | {dose:.0e} | {c.cells} | {c.accuracy:.4f} | {c.macro_f1:.4f} | {c.lowest} | "
              f"{p.accuracy:.4f} | {p.macro_f1:.4f} | {p.lowest} |")
    print(f"\n({time.time() - t0:.0f} s)")


def section_speed(model, args) -> None:
    print("\n## 3. Throughput (this machine, one process) and Shapes-layer build\n")
    import torch

    size = 1024 if args.quick else 2048
    twin = simulate_twin("MoS2", (size, size), 0.18, rotation_deg=17.0, defects={"V_X1": 0.03, "V_M": 0.01},
                         imaging=ImagingParams(dose=1e5), seed=5)
    nn = twin_nn_px(twin)
    m, x, _ = twin_cells(twin)
    result = detect_columns(twin.image, material="MoS2", pixel_size=twin.pixel_size)
    sites = result.sites
    rows = []
    for threads in (1, torch.get_num_threads()) if torch.get_num_threads() > 1 else (1,):
        torch.set_num_threads(threads)
        classify_cells(twin.image, m[:500], x[:500], nn, "MoS2", model=model)  # warm-up
        best = min(_timed(lambda: classify_cells(twin.image, m, x, nn, "MoS2", model=model)) for _ in range(3))
        rows.append((f"CNN, {threads} thread(s)", len(m), best))
    best = min(_timed(lambda: classify_cells(twin.image, m, x, nn, "MoS2", model=model, z_contrast=False))
               for _ in range(3))
    rows.append((f"CNN without the Z-contrast check, {torch.get_num_threads()} thread(s)", len(m), best))
    best = min(_timed(lambda: classify_cells_physics(sites, result.posteriors, "MoS2")) for _ in range(2))
    rows.append(("physics baseline (from the site table)", int((sites.sublattice == "M").sum()), best))
    print("| classifier | cells | seconds | cells/s |")
    print("|---|---|---|---|")
    for name, n, sec in rows:
        print(f"| {name} | {n} | {sec:.2f} | {n / sec:,.0f} |")

    from napari.layers import Shapes
    from napari.utils.triangulation_backend import TriangulationBackend, set_backend

    from napari_stem_defects.cells.shapes_layer import cells_to_shapes_data

    cells = classify_site_table(twin.image, sites, "MoS2", "cnn", nn_px=result.nn_px, model=model)
    data, kwargs, _ = cells_to_shapes_data(cells, result.a1, result.a2)
    print(f"\n| Shapes layer of {len(cells)} cells | seconds |\n|---|---|")
    backends = [("bermuda (ours)", TriangulationBackend.bermuda)]
    if not args.quick:
        backends.append(("pure python (napari without a compiled backend)", TriangulationBackend.pure_python))
    for name, backend in backends:
        set_backend(backend)
        sec = _timed(lambda: Shapes(data, **kwargs))
        print(f"| {name} | {sec:.2f} |")
    set_backend(TriangulationBackend.fastest_available)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def section_real(model, args) -> None:
    print("\n## 4. Real images (no labels): counts and concentrations\n")
    if not REAL.exists():
        print(f"({REAL} not found; skipped)")
        return
    from napari_stem_defects.io.rsciio_reader import read_stem_file

    shots = args.screenshot_dir if (args.screenshot_dir and os.environ.get("DISPLAY")) else None
    if args.screenshot_dir and shots is None:
        print("(no display: run under xvfb-run for screenshots)")
    for name, (mat, pixel) in REAL_IMAGES.items():
        path = REAL / name
        if not path.exists():
            continue
        image = read_stem_file(path)[0]
        data = np.asarray(image.data, float)
        if data.ndim == 3:  # RGB(A) render of a grey image
            data = data[..., :3].mean(axis=-1)
        px = pixel or (float(np.mean(image.pixel_size)) if image.pixel_size else None)
        try:
            result = detect_columns(data, material=mat, pixel_size=px)
        except ColumnDetectionError as err:
            print(f"- {name}: no columns ({err})")
            continue
        print(f"**{name}** ({mat}, {px:.4f} Å/px, {data.shape[0]}x{data.shape[1]} px)\n")
        print("| classifier | cells | " + " | ".join(c for c in CELL_CLASSES if c != "perfect")
              + " | defects per nm² (all) |")
        print("|---|---|" + "---|" * len(CELL_CLASSES))
        classified = {}
        for clf in ("cnn", "physics"):
            cells = classify_site_table(data, result.sites, mat, clf, posteriors=result.posteriors,
                                        nn_px=result.nn_px, model=model)
            classified[clf] = cells
            stats = defect_statistics(cells, mat, px)
            counts = stats.counts
            per_nm2 = sum(v for c, v in stats.concentration_cm2.items() if c != "perfect") / 1e14
            allowed = allowed_classes(mat)
            print(f"| {clf} | {stats.n_cells} | " + " | ".join(
                str(counts.get(c, 0)) if c in allowed else "n/a" for c in CELL_CLASSES if c != "perfect")
                + f" | {per_nm2:.3f} |")
        agree = float(np.mean(classified["cnn"]["class"].to_numpy() == classified["physics"]["class"].to_numpy()))
        print(f"\nCNN and physics agree on {agree:.1%} of cells.\n")
        if shots:
            _screenshot(data, px, result, classified["cnn"], mat, Path(shots) / f"cells_{path.stem}.png")


def _screenshot(data, px, result, cells, mat, out: Path) -> None:
    import napari

    from napari_stem_defects.cells.shapes_layer import cells_to_shapes_data, class_counts

    out.parent.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.add_image(data, name="image", scale=(px, px), units=("Å", "Å"), colormap="gray")
    shapes, kwargs, _ = cells_to_shapes_data(cells, result.a1, result.a2, scale=(px, px), units="Å")
    viewer.add_shapes(shapes, **kwargs)
    viewer.window.resize(1100, 1000)
    viewer.reset_view()
    viewer.screenshot(str(out), canvas_only=True)
    viewer.close()
    print(f"screenshot: {out} ({mat}; " + ", ".join(f"{c} {n}" for c, n in class_counts(cells).items() if n) + ")\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per", type=int, default=10, help="twins per material and dose")
    parser.add_argument("--size", type=int, default=256, help="twin side in canonical pixels (nn = 11 px)")
    parser.add_argument("--doses", type=float, nargs="+", default=list(TEST_DOSES))
    parser.add_argument("--materials", nargs="+", default=list(TEST_MATERIALS))
    parser.add_argument("--mode", default="single", choices=("single", "two-stage"))
    parser.add_argument("--imaging", default="clean", choices=("clean", "random"))
    parser.add_argument("--prior", default="image", choices=PRIORS, help="class prior of the CNN")
    parser.add_argument("--sections", nargs="+", default=["heldout", "bound", "end-to-end", "speed", "real"])
    parser.add_argument("--screenshot-dir", default=None, help="write viewer screenshots of the real images here")
    parser.add_argument("--quick", action="store_true", help="3 twins per row, smaller speed test")
    args = parser.parse_args()
    if args.quick:
        args.per = min(args.per, 3)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = load_cell_model()
    meta = model.metadata
    print(f"# Cell classification benchmark\n\nmodel: {meta.get('training_command', '?')} "
          f"({meta.get('date', '?')}); mode {args.mode}; prior {args.prior}; imaging {args.imaging}; "
          f"{args.per} twins per row; machine: {os.cpu_count()} CPU cores")
    table = section_heldout(model, args) if "heldout" in args.sections else None
    if "bound" in args.sections:
        section_bound(args, table)
    if "end-to-end" in args.sections:
        section_end_to_end(model, args)
    if "speed" in args.sections:
        section_speed(model, args)
    if "real" in args.sections:
        section_real(model, args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
