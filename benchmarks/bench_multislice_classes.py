"""Defect classes on a multislice validation library, next to an intensity oracle and the fast twins.

For every image of a library written by ``scripts/build_multislice_library.py`` (abTEM PRISM twins
that no training ever saw), the whole analysis (``analyze_image``: columns, species, cells) is run
with the shipped CNN and with the physics classifier, and scored against the library's truth:

- how many images pass the image check (``analyze`` without ``--force`` refuses the others; the bench
  analyses them all, forced);
- column F1 (occupied lattice columns within nn/3) and position RMSE (pm) of matched columns;
- species accuracy of matched occupied columns;
- per-class F1 and cell-class macro-F1 of complete cells (each cell scored against the true contents
  of the very sites it holds, :func:`~napari_stem_defects.cells.physics.reference_classes`);
- the intensity oracle: knowing the true positions and classes, the integrated intensities of each
  cell's metal, X2 and hollow columns (disc 0.4 nn, local background removed), normalised by the
  image's median metal and X2 column, classified by their class means fitted on the same image
  (pooled covariance): what intensity alone allows. The 'oracle' row classifies the very cells
  whose noise its means were fitted on (a class of 3 cells has seen each of them, so two classes of
  equal intensity, Mo on an X2 site and Se+S at 80 kV, can still come out apart); the 'oracle,
  noise-free means' row takes the class means from the library's noise-free image of the same
  twin (``clean.npy``) and only the covariance from the noisy one; the 'oracle, leave-one-out' row
  classifies each cell by the means of its class's other cells (a class's only cell in an image
  cannot be found): what intensity alone allows on a cell whose noise the fit has not seen;
- with ``--typed-settings``, the analysis is told each image's beam energy, convergence and detector
  (as ``analyze --kv --convergence --detector``); with ``--column-classifier context`` the columns'
  species come from the context-encoder classifier before the cells (as ``analyze --column-classifier``);
- with ``--typed-energy``, the analysis reads each image's beam energy alone (as from a file that
  records its kV but not its detector angles: the column classifier is told the energy);
- with ``--state-composition``, each image's material is stated with the foreign atoms its truth
  holds (``MoS2+W+Se``), as a user who doped or implanted the sample would type it: where intensity
  cannot tell a substitution from an antisite, this is what decides;
- the same truth rendered by the fast engine (its calibrated cross-section table and probe, the
  same dose), analysed the same way: the gap between the two rows is what the fast simulator misses.

Usage::

    .venv/bin/python benchmarks/bench_multislice_classes.py --library DIR [--settings 60kV 200kV] [--materials MoS2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from napari_stem_defects.analyze import analyze_image
from napari_stem_defects.cells.physics import reference_classes
from napari_stem_defects.columns.evaluate import match_points
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.materials import ATOMIC_NUMBER, parse_material
from napari_stem_defects.simulate.imaging import ImagingParams, render
from napari_stem_defects.simulate.microscope import MicroscopeSettings
from napari_stem_defects.simulate.structure import column_elements
from napari_stem_defects.training.cell_cnn import class_metrics
from napari_stem_defects.vocabulary import CELL_CLASSES

K = len(CELL_CLASSES)


def load(folder: Path) -> tuple[np.ndarray, float, pd.DataFrame, pd.DataFrame, dict]:
    """Image, pixel size (Å), true sites and cells, and metadata of one library image."""
    meta = json.loads((folder / "twin.json").read_text())
    image = read_stem_file(folder / "image.tif")[0]
    sites = pd.read_csv(folder / "sites.csv", keep_default_na=False)
    cells = pd.read_csv(folder / "cells.csv", keep_default_na=False)
    return np.asarray(image.data, float), float(meta["pixel_size_A"][0]), sites, cells, meta


def clean_image(folder: Path) -> np.ndarray | None:
    """The library's noise-free image of a dose folder's twin (``<material>/clean.npy``), if it was kept."""
    path = folder.parent / "clean.npy"
    return np.load(path) if path.is_file() else None


def fast_image(sites: pd.DataFrame, shape: tuple[int, int], px: float, meta: dict, seed: int) -> np.ndarray:
    """The library's truth imaged by the fast engine (its recorded equivalent imaging, same dose)."""
    imaging = ImagingParams(**meta["imaging"])
    lit = sites["cross_section_A2"].to_numpy(float) > 0
    image, _ = render(sites[["y_px", "x_px"]].to_numpy(float)[lit], sites["cross_section_A2"].to_numpy(float)[lit],
                      shape, px, imaging, np.random.default_rng(seed))
    return image.astype(float)


def _occupied(sites: pd.DataFrame) -> pd.DataFrame:
    species = sites["species"].astype(str)
    return sites[(sites["sublattice"] != "H") & (species != "") & (species != "empty")]


def typed_settings(meta: dict) -> MicroscopeSettings:
    """The library image's beam energy, convergence and detector as a user would type them (thermal lattice)."""
    m = meta["imaging"]["microscope"]
    return MicroscopeSettings(energy_kV=m["energy_kV"], convergence_mrad=m["convergence_mrad"],
                              detector_inner_mrad=m["detector_inner_mrad"], detector_outer_mrad=m["detector_outer_mrad"],
                              frozen_phonons=8)


def stated_material(material: str, sites: pd.DataFrame) -> str:
    """The material with every foreign element of the true sites appended (``MoS2`` -> ``MoS2+W+Se``)."""
    host = parse_material(material)
    own = set(host.metals) | set(host.chalcogens) | set(host.dopants)
    found = {e for label in set(sites["species"].astype(str)) - {"", "empty"} for e in column_elements(label)}
    foreign = sorted(found - own, key=lambda e: ATOMIC_NUMBER.get(e, 0))
    return "+".join([material, *foreign])


def score(image: np.ndarray, px: float, material: str, truth: pd.DataFrame, classifier: str,
          microscope: MicroscopeSettings | None = None, column_classifier: str = "intensity",
          metadata: dict | None = None) -> dict:
    """Columns, species and the cells' confusion matrix of one analysis against the truth."""
    nn = parse_material(material).a / np.sqrt(3) / px
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = analyze_image(StemImage(image, (px, px), "library", metadata or {}), material=material,
                                 classifier=classifier, force=True, microscope=microscope,
                                 column_classifier=column_classifier)
    result, cells = analysis.columns[0], analysis.cells[0]
    ours, true = _occupied(result.sites), _occupied(truth)
    i, j = match_points(ours[["y_px", "x_px"]].to_numpy(float), true[["y_px", "x_px"]].to_numpy(float), nn / 3)
    p, r = len(i) / max(len(ours), 1), len(i) / max(len(true), 1)
    d = ours[["y_px", "x_px"]].to_numpy(float)[i] - true[["y_px", "x_px"]].to_numpy(float)[j]
    species_ok = ours["species"].astype(str).to_numpy()[i] == true["species"].astype(str).to_numpy()[j]
    ref = reference_classes(cells, result.sites, truth, nn, material)
    ok = (ref != "") & cells["complete"].to_numpy(bool) & cells["class"].isin(CELL_CLASSES).to_numpy()
    t = np.array([CELL_CLASSES.index(c) for c in ref[ok]], int)
    q = np.array([CELL_CLASSES.index(c) for c in cells["class"].to_numpy()[ok]], int)
    return {"f1": 2 * p * r / max(p + r, 1e-12), "rmse_pm": float(np.sqrt((d**2).sum(1).mean())) * px * 100,
            "species": (int(species_ok.sum()), len(species_ok)), "accepted": bool(analysis.check.ok),
            "cm": np.bincount(t * K + q, minlength=K * K).reshape(K, K)}


def oracle(image: np.ndarray, px: float, material: str, truth: pd.DataFrame, cells: pd.DataFrame,
           clean: np.ndarray | None = None, leave_one_out: bool = False) -> np.ndarray:
    """Confusion matrix of the intensity oracle on one image (true positions and classes known).

    The class means and pooled covariance are fitted on the image's own cells and every cell is then
    classified by them: with a class of 3 cells the fit has seen the noise of the very cell it
    classifies, so two classes of equal intensity can still come out apart. Given the library's
    noise-free image of the same twin (``clean``), the class means are taken there instead (what each
    class looks like in this image, without noise) and only the pooled covariance on the noisy image.
    With ``leave_one_out`` each cell is classified by its class's mean (and share) over the class's
    other cells: what intensity allows on a cell the fit has not seen (a class's only cell in the
    image cannot be found).
    """
    f, y = _oracle_features(image, px, material, truth, cells)
    if clean is None:
        means_from = f
    else:
        # the noise-free features on the noisy image's scale: the background under shot noise reads lower
        # (a percentile), so each feature is mapped by one straight line fitted over all cells
        c = _oracle_features(clean, px, material, truth, cells)[0]
        means_from = np.column_stack([np.polyval(np.polyfit(c[:, k], f[:, k], 1), c[:, k]) for k in range(f.shape[1])])
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes], float)
    means = np.array([means_from[y == c].mean(0) for c in classes])
    own = np.searchsorted(classes, y)
    resid = f - means[own]
    inv = np.linalg.inv(np.cov(resid.T) + 1e-6 * np.eye(f.shape[1]))
    prior = np.tile(np.log(counts / counts.sum()), (len(y), 1))
    centres = np.broadcast_to(means[None], (len(y), *means.shape)).copy()
    if leave_one_out:
        rows, n = np.arange(len(y)), counts[own][:, None]
        centres[rows, own] = np.where(n > 1, (n * means[own] - means_from) / np.maximum(n - 1, 1), np.nan)
        prior[rows, own] = np.log(np.maximum(counts[own] - 1, 1e-12) / max(len(y) - 1, 1))
    d = f[:, None] - centres
    dist = np.einsum("nki,ij,nkj->nk", d, inv, d)
    pred = classes[np.argmax(np.where(np.isnan(dist), -np.inf, prior - 0.5 * dist), axis=1)]
    return np.bincount(y * K + pred, minlength=K * K).reshape(K, K)


def _oracle_features(image: np.ndarray, px: float, material: str, truth: pd.DataFrame,
                     cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Integrated metal, X2 and hollow intensities of the cells away from the edge (over the image's median
    metal and X2 column) and their class indices."""
    nn = parse_material(material).a / np.sqrt(3) / px
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w]
    by_id = truth.set_index("site_id")
    good = cells[(cells["x_site_id"] >= 0) & cells["class"].isin(CELL_CLASSES)]

    def disc_sum(y: float, x: float) -> float:
        r2 = (yy - y) ** 2 + (xx - x) ** 2
        inner, ring = r2 < (0.4 * nn) ** 2, (r2 >= (0.75 * nn) ** 2) & (r2 < (1.25 * nn) ** 2)
        if not inner.any():
            return np.nan
        return float(image[inner].sum() - inner.sum() * np.percentile(image[ring], 10))

    feats, labels = [], []
    for m_id, x_id, cls in zip(good["m_site_id"], good["x_site_id"], good["class"]):
        m, x = by_id.loc[m_id], by_id.loc[x_id]
        hy, hx = 2 * x.y_px - m.y_px, 2 * x.x_px - m.x_px
        if not (nn < m.y_px < h - nn and nn < m.x_px < w - nn and nn < hy < h - nn and nn < hx < w - nn):
            continue
        feats.append([disc_sum(m.y_px, m.x_px), disc_sum(x.y_px, x.x_px), disc_sum(hy, hx)])
        labels.append(CELL_CLASSES.index(cls))
    f = np.asarray(feats, float)
    metal, chalcogen = np.nanmedian(f[:, 0]), np.nanmedian(f[:, 1])
    return f / np.array([metal, chalcogen, chalcogen]), np.asarray(labels, int)  # the hollow on the X2 scale


def library_index(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, pd.DataFrame]:
    """Parse ``--library``, ``--settings`` and ``--materials`` (added here) and the rest of ``parser``; the
    library's index, kept to the chosen settings and materials, after a line naming the machine and the
    library."""
    parser.add_argument("--library", required=True, type=Path)
    parser.add_argument("--settings", nargs="*", default=None)
    parser.add_argument("--materials", nargs="*", default=None,
                        help="only these materials of the library (as its index names them)")
    args = parser.parse_args()
    index = pd.read_csv(args.library / "index.csv")
    if args.settings:
        index = index[index["setting"].isin(args.settings)]
    if args.materials:
        index = index[index["material"].isin(args.materials)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"library {args.library} ({len(index)} images)\n")
    return args, index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifiers", nargs="*", default=["cnn", "physics"])
    parser.add_argument("--column-classifier", choices=("intensity", "context"), default="intensity",
                        help="what decides the columns' species before the cells (as analyze --column-classifier)")
    parser.add_argument("--typed-settings", action="store_true",
                        help="give the analysis each image's beam energy, convergence and detector (as analyze --kv ...)")
    parser.add_argument("--typed-energy", action="store_true",
                        help="give the analysis each image's beam energy alone, as a file that records its kV "
                             "and not its detector")
    parser.add_argument("--state-composition", action="store_true",
                        help="state each image's foreign atoms with its material (as analyze --material MoS2+W+Se)")
    args, index = library_index(parser)
    rows, per_class = [], {}
    t0 = time.time()
    for (setting, dose), group in index.groupby(["setting", "dose"], sort=True):
        acc: dict[str, dict] = {}
        for row in group.itertuples(index=False):
            image, px, sites, cells, meta = load(args.library / row.path)
            fast = fast_image(sites, image.shape, px, meta, seed=int(row.seed) % 2**31)
            for engine, img in (("multislice", image), ("fast", fast)):
                for clf in args.classifiers:
                    stated = stated_material(row.material, sites) if args.state_composition else row.material
                    energy = meta["imaging"]["microscope"]["energy_kV"] if args.typed_energy else None
                    s = score(img, px, stated, sites, clf,
                              typed_settings(meta) if args.typed_settings else None, args.column_classifier,
                              {"beam_energy_keV": energy} if energy else None)
                    a = acc.setdefault((engine, clf), {"f1": [], "rmse": [], "sp": [0, 0], "cm": 0, "ok": []})
                    a["f1"].append(s["f1"])
                    a["ok"].append(s["accepted"])
                    a["rmse"].append(s["rmse_pm"])
                    a["sp"][0] += s["species"][0]
                    a["sp"][1] += s["species"][1]
                    a["cm"] = a["cm"] + s["cm"]
                clean = clean_image(args.library / row.path) if engine == "multislice" else None
                for name, means_from, loo in (("oracle", None, False), ("oracle, noise-free means", clean, False),
                                              ("oracle, leave-one-out", None, True)):
                    if means_from is not None or name != "oracle, noise-free means":
                        o = acc.setdefault((engine, name), {"cm": 0})
                        o["cm"] = o["cm"] + oracle(img, px, row.material, sites, cells, means_from, loo)
        for (engine, clf), a in acc.items():
            m = class_metrics(a["cm"])
            per_class[(setting, dose, engine, clf)] = m
            rows.append({"setting": setting, "dose": dose, "engine": engine, "classifier": clf,
                         "column_F1": np.mean(a["f1"]) if "f1" in a else np.nan,
                         "rmse_pm": np.mean(a["rmse"]) if "rmse" in a else np.nan,
                         "species_acc": a["sp"][0] / max(a["sp"][1], 1) if "sp" in a else np.nan,
                         "macro_F1": m["macro_f1"], "cells": m["n_cells"],
                         "accepted": f"{sum(a['ok'])}/{len(a['ok'])}" if "ok" in a else "",
                         "lowest": min(((c, v["f1"]) for c, v in m["per_class"].items() if v["support"]),
                                       key=lambda cv: cv[1])})
    table = pd.DataFrame(rows)
    print("| setting | dose | image | classifier | check passed | column F1 | RMSE pm | species acc | cell macro-F1 | "
          "cells | lowest class |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table.itertuples(index=False):
        low = f"{r.lowest[0]} {r.lowest[1]:.2f}"
        num = (lambda v, f: "" if not np.isfinite(v) else format(v, f))
        print(f"| {r.setting} | {r.dose:.0e} | {r.engine} | {r.classifier} | {r.accepted} | "
              f"{num(r.column_F1, '.3f')} | "
              f"{num(r.rmse_pm, '.1f')} | {num(r.species_acc, '.3f')} | {r.macro_F1:.3f} | {r.cells} | {low} |")
    print("\nPer-class F1 (multislice images, 1e5 e/Å²):\n")
    print("| setting | classifier | " + " | ".join(CELL_CLASSES) + " |")
    print("|---|---|" + "---|" * K)
    for (setting, dose, engine, clf), m in per_class.items():
        if engine == "multislice" and dose == 1e5:
            cells_ = " | ".join(f"{m['per_class'][c]['f1']:.2f} ({m['per_class'][c]['support']})" for c in CELL_CLASSES)
            print(f"| {setting} | {clf} | {cells_} |")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
