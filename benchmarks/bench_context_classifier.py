"""The context-encoder column classifier on multislice images, beside the intensity mixture, the cell CNN and an oracle.

For every image of one or more libraries written by ``scripts/build_multislice_library.py`` (abTEM
PRISM twins no training saw), every metal and X2 column's *type* (host, dopant, single, empty,
antisite; :mod:`napari_stem_defects.columns.context_vector`) is predicted and scored against the truth:

columns at their true positions (what the classifier itself can do):

- ``context``: the shipped classifier (or ``--model``), told the image's beam and detector;
- ``context, no microscope``: the same classifier with the microscope withheld;
- the ablations ``zernike only`` and ``context only`` (``--ablation NAME=FILE``, trained by
  ``scripts/train_context_classifier.py --ablation ...``);
- ``held-out host``: for each material, the model of ``--lomo DIR`` trained without its host
  (``DIR/no_<host>.pt``, doped variants left out too), i.e. leave-one-material-out; ``held-out
  dopant``: for a doped material, the model trained without that dopant (``DIR/no_WSe2+Co.pt``);
- the intensity ``oracle``: knowing every column's true type, the class means and pooled spread of
  the column's integrated intensity (over its sublattice's median) fitted on the same image: what
  intensity alone allows;

and the whole analysis (``analyze_image`` with the cell CNN, detected columns matched to the truth
within nn/3):

- ``analysis: intensity + CNN`` (the default: species from the Z-contrast mixture, one joint
  decision with the cell CNN) against ``analysis: context + CNN`` (``--column-classifier context``).

Accuracy (all columns: the context-encoder study's 96 % anchor), macro-F1 over the types present,
and per-type recall.

Usage::

    cd benchmarks && ../.venv/bin/python bench_context_classifier.py --library /work/mslib \
        [--more-libraries /work/mslib_dopants] [--ablation zernike=/tmp/z.pt context=/tmp/c.pt] [--lomo DIR]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from bench_multislice_classes import library_index, load, typed_settings

from napari_stem_defects.analyze import analyze_image
from napari_stem_defects.columns.context_classifier import (
    contrast_features,
    load_context_classifier,
    site_contexts,
    type_mask,
    type_probabilities,
)
from napari_stem_defects.columns.context_vector import COLUMN_TYPES
from napari_stem_defects.columns.evaluate import match_points
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.materials import parse_material
from napari_stem_defects.training.context_classifier import site_type_labels, type_metrics

#: Column of the A_00 ratio (column over its sublattice's median) in the contrast features.
RATIO = -4


def oracle_types(contrast: np.ndarray, sub: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per sublattice, the class of nearest mean (pooled spread, class frequencies as prior) of the intensity ratio."""
    pred = np.zeros_like(truth)
    for s in ("M", "X"):
        rows = sub == s
        x, y = contrast[rows, RATIO], truth[rows]
        classes = np.unique(y)
        means = np.array([x[y == c].mean() for c in classes])
        var = max(float(np.mean((x - means[np.searchsorted(classes, y)]) ** 2)), 1e-6)
        prior = np.log([np.mean(y == c) for c in classes])
        pred[rows] = classes[np.argmax(prior[None] - (x[:, None] - means[None]) ** 2 / (2 * var), axis=1)]
    return pred


def analysis_types(image: np.ndarray, px: float, material: str, truth: pd.DataFrame, microscope,
                   column_classifier: str) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted types of the columns a whole analysis found (matched to the truth within nn/3)."""
    mat = parse_material(material)
    nn = mat.a / np.sqrt(3) / px
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = analyze_image(StemImage(image, (px, px), "library", {}), material=material, force=True,
                                 microscope=microscope, column_classifier=column_classifier)
    ours = analysis.columns[0].sites
    ours = ours[ours["sublattice"].isin(["M", "X"])]
    _, _, t_all = site_type_labels(truth, mat)
    true = truth[truth["sublattice"].isin(["M", "X"])]
    _, _, q_all = site_type_labels(ours.assign(species=ours["species"].replace("empty", "")), mat)
    i, j = match_points(ours[["y_px", "x_px"]].to_numpy(float), true[["y_px", "x_px"]].to_numpy(float), nn / 3)
    return t_all[j], q_all[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--more-libraries", nargs="*", type=Path, default=[])
    parser.add_argument("--model", type=Path, default=None, help="classifier file (default the shipped one)")
    parser.add_argument("--ablation", nargs="*", default=[], metavar="NAME=FILE")
    parser.add_argument("--lomo", type=Path, default=None, help="folder of no_<host>.pt models")
    parser.add_argument("--no-analysis", action="store_true", help="skip the whole-analysis rows")
    args, index = library_index(parser)
    index = index.assign(library=str(args.library))
    for lib in args.more_libraries:
        index = pd.concat([index, pd.read_csv(lib / "index.csv").assign(library=str(lib))], ignore_index=True)
    models = {"context": load_context_classifier(args.model)}
    for item in args.ablation:
        name, _, path = item.partition("=")
        models[name] = load_context_classifier(Path(path))
    t0 = time.time()
    acc: dict[tuple, list] = {}

    def add(key: tuple, truth: np.ndarray, pred: np.ndarray) -> None:
        a = acc.setdefault(key, [[], []])
        a[0].append(truth)
        a[1].append(pred)

    for row in index.itertuples(index=False):
        image, px, sites, _cells, meta = load(Path(row.library) / row.path)
        mat = parse_material(row.material)
        microscope = typed_settings(meta)
        yx, sub, truth = site_type_labels(sites, mat)
        contrast = contrast_features(image, yx, sub, mat.a / np.sqrt(3) / px)
        mask = type_mask(sub)
        host = row.material.split("+")[0]
        groups = [(row.setting, row.dose, "all"), (row.setting, row.dose, row.material)]
        runs = [(name, m, microscope) for name, m in models.items()]
        runs.append(("context, no microscope", models["context"], None))
        for kind, name in (("host", host), ("dopant", row.material if "+" in row.material else None)):
            if args.lomo is not None and name and (args.lomo / f"no_{name}.pt").is_file():
                runs.append((f"held-out {kind}", load_context_classifier(args.lomo / f"no_{name}.pt"), microscope))
        for name, model, mic in runs:
            pred = type_probabilities(model, contrast, site_contexts(mat, mic, sub), mask).argmax(1)
            for g in groups:
                add((*g, name), truth, pred)
        for g in groups:
            add((*g, "oracle (intensity)"), truth, oracle_types(contrast, sub, truth))
        if not args.no_analysis:
            for clf in ("intensity", "context"):
                t, q = analysis_types(image, px, row.material, sites, microscope, clf)
                for g in groups:
                    add((*g, f"analysis: {clf} + CNN"), t, q)
    rows = []
    for (setting, dose, material, method), (t, q) in acc.items():
        r = type_metrics(np.concatenate(t), np.concatenate(q))
        rows.append({"setting": setting, "dose": dose, "material": material, "method": method, **r})
    table = pd.DataFrame(rows)
    present = [t for t in COLUMN_TYPES if any(t in r for r in table["recall"])]
    print("| setting | dose | method | accuracy | macro-F1 | " + " | ".join(f"recall {t}" for t in present) + " | n |")
    print("|---|---|---|---|---|" + "---|" * len(present) + "---|")
    for r in table[table["material"] == "all"].sort_values(["setting", "dose"]).itertuples(index=False):
        rec = " | ".join(f"{r.recall[t]:.2f}" if t in r.recall else "" for t in present)
        print(f"| {r.setting} | {r.dose:.0e} | {r.method} | {r.accuracy:.3f} | {r.macro_f1:.3f} | {rec} | {r.n} |")
    print("\nPer material (all settings and doses): accuracy / macro-F1\n")
    per = table[table["material"] != "all"].copy()
    per["acc_f1"] = [f"{a:.3f} / {f:.3f}" for a, f in zip(per["accuracy"], per["macro_f1"])]
    pooled = []
    for (material, method), g in per.groupby(["material", "method"]):
        t = np.concatenate([np.concatenate(acc[(s, d, material, method)][0]) for s, d in zip(g["setting"], g["dose"])])
        q = np.concatenate([np.concatenate(acc[(s, d, material, method)][1]) for s, d in zip(g["setting"], g["dose"])])
        r = type_metrics(t, q)
        pooled.append({"material": material, "method": method, "value": f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}"})
    print(pd.DataFrame(pooled).pivot(index="material", columns="method", values="value").to_markdown())
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
