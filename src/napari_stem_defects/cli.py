"""The ``napari-stem-defects`` command line.

Subcommands
-----------
simulate
    Write a digital twin (image + exact ground truth) to a folder.
calibrate
    Measure the lattice of a STEM file and compare with its stored pixel size.
analyze
    Find every atom column (lattice sites, sublattice, species) and write ``sites.csv``;
    optionally defect probability heatmaps and their regions.
dynamics
    An image series: drift registration, column tracks, events (sites emptied, filled,
    moved) and an instability map from an autoencoder trained on the series.
export-training
    Turn saved annotation files (``<image>.annotations.json``) into a training set folder.
batch
    ``analyze`` for many files (folders, globs) in parallel or on a dask cluster, resumable,
    with a dataset table and an HTML report (:mod:`napari_stem_defects.batch`).
train
    Fine-tune the shipped cell classifier (or, with ``--what columns``, the column U-Net) on
    training sets mixed with digital twins; write a new model version (a file, or a name in
    the user's models folder).

The files and their columns are documented in the README and are kept stable.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import warnings
import zipfile
from collections.abc import Sequence

import numpy as np

from . import __version__


def _parse_defects(items: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--defect expects NAME=FRACTION, got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--defect {item!r}: {value!r} is not a number") from None
    return out


def _pixel_size(text: str) -> float:
    """``--pixel-size``: a plausible atomic-resolution pixel size in Å (not 0, negative, NaN, inf, 100 or 1e-6)."""
    from .io.calibration_checks import check_pixel_size

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of Å per pixel") from None
    try:
        return check_pixel_size(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False):
    """An argparse type: a finite float within [low, high] (ends excluded when ``*_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"{text} must be {'above' if low_open else 'at least'} {low:g}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"{text} must be {'below' if high_open else 'at most'} {high:g}")
        return value
    return parse


def _whole(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value
    return parse


_count = _whole(1)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from .heatmaps.regions import MIN_AREA_NN2
    from .simulate.defects import DEFECT_TYPES
    from .simulate.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="napari-stem-defects",
        description="Atom columns, species and defects in HAADF-STEM images of 2D TMDs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="write a digital twin: image.tif, sites.csv, cells.csv, twin.json (+ phase_map.npy, domain_map.npy)",
        description="Simulate a HAADF-STEM image of a 2H-MX2 monolayer with exact labels.",
    )
    sim.add_argument("--out", required=True, help="output folder")
    sim.add_argument("--preset", choices=sorted(PRESETS), help="a named sample (other options ignored)")
    sim.add_argument("--material", default="MoS2", help="e.g. MoS2, WSe2, MoTe2, MoWSSe, Janus-MoSSe")
    sim.add_argument("--shape", type=_count, nargs=2, default=(512, 512), metavar=("H", "W"))
    sim.add_argument("--pixel-size", type=_pixel_size, default=0.12, help="Å per pixel (default 0.12)")
    sim.add_argument("--rotation", type=_number(), default=None, help="lattice rotation in degrees (default random)")
    sim.add_argument("--dose", type=_number(0.0), default=1e5, help="e/Å^2 (default 1e5); 0 for noise-free")
    sim.add_argument("--engine", choices=("fast", "multislice"), default="fast",
                     help="fast: the calibrated fast simulator (default); multislice: abTEM PRISM "
                          "(needs the [multislice] extra; minutes per image)")
    sim.add_argument("--kv", type=_number(60.0), default=80.0, help="beam energy in kV, 60-300 (default 80)")
    sim.add_argument("--convergence", type=_number(0.0, low_open=True), default=30.0,
                     help="probe convergence semi-angle in mrad (default 30)")
    sim.add_argument("--detector", type=_number(0.0), nargs=2, default=(70.0, 200.0), metavar=("INNER", "OUTER"),
                     help="annular detector collection angles in mrad (default 70 200)")
    sim.add_argument("--source-size", type=_number(0.0), default=0.0,
                     help="source size (FWHM, Å) at the specimen: partial spatial coherence (default 0)")
    sim.add_argument("--frozen-phonons", type=_whole(0), default=0,
                     help="frozen-phonon configurations (0: static lattice, default); the fast engine "
                          "then takes the table's thermal cross-sections")
    sim.add_argument("--threads", type=_count, default=1, help="FFT threads of the multislice engine (default 1)")
    sim.add_argument("--gamma", type=_number(0.0, low_open=True), default=None,
                     help="fast engine: columns follow sum Z**gamma instead of the multislice-calibrated "
                          "table (default: the table at --kv/--convergence/--detector)")
    sim.add_argument("--probe-fwhm", type=_number(0.0, low_open=True), default=None,
                     help="fast engine: probe FWHM in Å (default: the table's probe at the settings, "
                          "source size included)")
    sim.add_argument(
        "--defect", action="append", default=[], metavar="NAME=FRACTION",
        help=f"fraction of cells with a defect, repeatable; NAME in {', '.join(DEFECT_TYPES)}",
    )
    sim.add_argument("--seed", type=int, default=None, help="random seed (default: 0, or the preset's own)")

    cal = sub.add_parser(
        "calibrate",
        help="compare a file's pixel size with the one its lattice implies",
        description="Measure the lattice in the FFT and report the implied pixel size.",
    )
    cal.add_argument("image", help="STEM file (.dm3, .dm4, .emd, .ser, .emi, .mrc, .tif, .hspy, .npy, .png)")
    cal.add_argument("--material", required=True, help="e.g. MoS2, WSe2, WSSe")
    cal.add_argument("--pixel-size", type=_pixel_size, default=None, help="override the file's pixel size (Å)")
    cal.add_argument("--tolerance", type=_number(0.0, 1.0, low_open=True), default=0.03,
                     help="relative tolerance (default 0.03)")
    cal.add_argument("--json", action="store_true", help="print the report as JSON")
    ana = sub.add_parser(
        "analyze",
        help="find atom columns and classify cells; write DIR/sites.csv, cells.csv, summary.json, analysis.json",
        description="Detect every atom column of a HAADF image (all frames of a stack) and write one "
                    "row per lattice site, empty sites included, to DIR/sites.csv.",
    )
    ana.add_argument("image", help="STEM file (.dm3, .dm4, .emd, .ser, .emi, .mrc, .tif, .hspy, .npy, .png)")
    ana.add_argument("--out", required=True, help="output folder")
    ana.add_argument("--pixel-size", type=_pixel_size, default=None, help="override the file's pixel size (Å)")
    ana.add_argument("--material", default=None,
                     help="e.g. MoS2, WSe2, MoWSSe; sets species names and which sublattice is the metal")
    ana.add_argument("--method", choices=("classical", "deep"), default="classical",
                     help="detection map: band-pass filter or the shipped U-Net (default classical)")
    ana.add_argument("--threshold", type=_number(), default=None, help="peak threshold on the detection map")
    ana.add_argument("--refine", choices=("gaussian", "com"), default="gaussian",
                     help="sub-pixel refinement (default gaussian)")
    ana.add_argument("--classifier", choices=("cnn", "cnn-two-stage", "physics"), default="cnn",
                     help="cell classifier (with --material): the shipped CNN, its two-stage decision "
                          "(perfect vs defective, then the kind), or the Z-contrast physics baseline (default cnn)")
    ana.add_argument("--cell-model", default=None, metavar="NAME_OR_PATH",
                     help="cell classifier weights for the CNN classifiers: a model version name "
                          "(see `train --name`) or a .pt file (default the shipped model)")
    ana.add_argument("--column-model", default=None, metavar="NAME_OR_PATH",
                     help="column U-Net weights for --method deep: a model version name "
                          "(see `train --what columns --name`) or a .pt file (default the shipped model)")
    ana.add_argument("--heatmaps", choices=("none", "sliding-window", "attention-unet"), default="none",
                     help="also write per-family defect probability maps (needs --material): "
                          "DIR/heatmaps.npy, uncertainty.npy, heatmaps.json, regions.csv (default none)")
    ana.add_argument("--heatmap-threshold", type=float, default=0.5, metavar="P",
                     help="probability at which a pixel belongs to a region of regions.csv (default 0.5)")
    ana.add_argument("--heatmap-window", type=float, default=None, metavar="PX",
                     help="sliding-window side in image pixels (default automatic: 64 px when the lattice suits it)")
    ana.add_argument("--mask", default=None, metavar="MASK",
                     help="pixels not to analyse: a .npy, .tif or .png of the image's shape, non-zero = masked "
                          "(NaN pixels of the image are always masked)")
    ana.add_argument("--include-boundaries", action="store_true",
                     help="count cells on domain and grain boundaries and at the edges of holes, amorphous and "
                          "masked areas in the statistics (left out by default)")
    ana.add_argument("--kv", type=_number(60.0, 300.0), default=None,
                     help="beam energy of the image in kV: with it, which sublattice holds the metals follows the "
                          "multislice-calibrated table at --kv/--convergence/--detector (thermal lattice) "
                          "instead of Z^1.7 (at 60 kV an Se2 column can be as bright as W)")
    ana.add_argument("--convergence", type=_number(0.0, low_open=True), default=30.0,
                     help="probe convergence semi-angle in mrad, with --kv (default 30)")
    ana.add_argument("--detector", type=_number(0.0), nargs=2, default=(70.0, 200.0), metavar=("INNER", "OUTER"),
                     help="annular detector angles in mrad, with --kv (default 70 200)")
    ana.add_argument("--force", action="store_true",
                     help="analyse even when the image check fails (not a 2H monolayer of the stated material); "
                          "the findings are written into every output as warnings")
    ana.add_argument("--heatmap-min-area", type=float, default=MIN_AREA_NN2, metavar="NN2",
                     help="smallest region of regions.csv, in squared metal-to-chalcogen distances "
                          f"(a point defect lights up about 0.8; default {MIN_AREA_NN2:g}; 0 keeps every speck)")
    dyn = sub.add_parser(
        "dynamics",
        help="image series: drift, column tracks, events and an instability map; "
             "write DIR/drift.csv, tracks.csv, track_features.csv, events.csv, instability.csv, "
             "instability.npy, clusters.csv, defect_counts.csv, dynamics.json",
        description="Register the frames of an image series, track every atom column through them, "
                    "list the sites emptied, filled or moved, and map where the lattice is unstable "
                    "(an autoencoder trained on the series itself).",
    )
    dyn.add_argument("stack", nargs="+",
                     help="one multi-frame STEM file, or several single-frame files stacked in the order given")
    dyn.add_argument("--out", required=True, help="output folder")
    dyn.add_argument("--material", default=None,
                     help="e.g. MoS2, WSe2; needed for species changes and per-frame defect counts")
    dyn.add_argument("--pixel-size", type=_pixel_size, default=None, help="override the file's pixel size (Å)")
    dyn.add_argument("--method", choices=("classical", "deep"), default="classical",
                     help="column detection map (default classical)")
    dyn.add_argument("--rigid-only", action="store_true", help="skip the non-rigid drift correction")
    dyn.add_argument("--max-gap", type=int, default=2, help="frames a site may go unseen and keep its track")
    dyn.add_argument("--min-persistence", type=int, default=1,
                     help="frames a new state must last to count as an event (default 1)")
    dyn.add_argument("--classifier", choices=("physics", "cnn", "cnn-two-stage", "none"), default="physics",
                     help="cell classifier for defect_counts.csv (default physics)")
    dyn.add_argument("--seed", type=int, default=0, help="seed of the autoencoder training (default 0)")

    exp = sub.add_parser(
        "export-training",
        help="write the verified cells of annotation files as a training set folder "
             "(manifest.json, cells.npz, images/, annotations/, masks/)",
        description="Read saved annotations (<image>.annotations.json, written by the Correct labels widget), "
                    "find each one's image, and write a training set: cell crops with class and context, "
                    "site masks, the images and annotations, and a manifest.",
    )
    exp.add_argument("annotations", nargs="+", metavar="ANNOTATIONS.json", help="annotation files")
    exp.add_argument("--out", required=True, help="output folder (new, empty, or a training set to replace)")
    exp.add_argument("--all-cells", action="store_true",
                     help="export every cell, model labels included (default: only the verified ones)")

    tr = sub.add_parser(
        "train",
        help="fine-tune the shipped cell classifier (or column U-Net) on training sets; write MODEL.pt "
             "and its model card",
        description="Fine-tune the shipped cell classifier, or with --what columns the shipped column U-Net "
                    "(always the shipped weights, never an earlier fine-tuned model), on training sets from "
                    "`export-training`, mixed with fresh digital twins, and report the held-out accuracy "
                    "(cells) or column detection precision/recall/F1 (columns, held-out image tiles) "
                    "before and after.",
    )
    tr.add_argument("datasets", nargs="+", metavar="DATASET", help="training set folders")
    dest = tr.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", default=None, metavar="MODEL.pt", help="weights file to write (card beside it)")
    dest.add_argument("--name", default=None,
                      help="model version name, written to the user's models folder where the classify "
                           "widget and `analyze --cell-model NAME` find it")
    tr.add_argument("--what", choices=("cells", "columns"), default="cells",
                    help="which network to fine-tune (default cells)")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the file given with --out if it exists (default: refuse)")
    tr.add_argument("--steps", type=_count, default=None, help="optimiser steps (default 400 cells, 200 columns)")
    tr.add_argument("--batch", type=_count, default=None,
                    help="cells (or column crops) per batch (default 64 cells, 8 columns)")
    tr.add_argument("--twin-fraction", type=_number(0.0, 1.0, high_open=True), default=0.5,
                    help="share of each batch from fresh digital twins (default 0.5)")
    tr.add_argument("--val-fraction", type=_number(0.0, 1.0, high_open=True), default=0.2,
                    help="share of the dataset cells (columns: image tiles) held out to measure "
                         "before/after (default 0.2)")
    tr.add_argument("--lr", type=_number(0.0, 1.0, low_open=True), default=3e-4,
                    help="peak learning rate (default 3e-4)")
    tr.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    tr.add_argument("--threads", type=_count, default=None, help="torch threads (default torch's)")
    tr.add_argument("--twins", type=_whole(0), default=None, metavar="N",
                    help="digital twins in the pool mixed into batches (default 24 cells, 16 columns)")
    from .batch.cli import add_batch_parser

    add_batch_parser(sub)
    return parser


def read_stack(paths: Sequence[str], pixel_size: float | None = None) -> tuple[np.ndarray, float | None, str]:
    """Frames (T, H, W), Å per pixel and a name from one multi-frame file or several single frames.

    Raises
    ------
    ValueError
        When the files do not make one (T, H, W) series.
    """
    from .io.rsciio_reader import read_stem_file

    images = [img for path in paths for img in read_stem_file(path)]
    if len(paths) == 1:
        stacks = [img for img in images if img.is_stack]
        if not stacks:
            raise ValueError(f"{paths[0]} holds no image series (one 2D image); give several frames instead")
        images = stacks[:1]
        data = images[0].data
    else:
        if any(img.is_stack for img in images):
            raise ValueError("give either one multi-frame file or several single-frame files, not both")
        shapes = {img.data.shape for img in images}
        if len(shapes) > 1:
            raise ValueError(f"the frames differ in shape: {sorted(shapes)}")
        data = np.stack([img.data for img in images])
    size = pixel_size
    if size is None and images[0].pixel_size is not None:
        size = float(images[0].pixel_size[0])
    return np.asarray(data), size, images[0].name


def _cmd_dynamics(args: argparse.Namespace) -> int:
    from .dynamics.files import write_dynamics
    from .dynamics.pipeline import analyze_stack

    stack, pixel_size, name = read_stack(args.stack, args.pixel_size)
    shown = [-1]

    def progress(fraction: float) -> None:
        pct = int(100 * fraction) // 10 * 10
        if pct > shown[0]:
            shown[0] = pct
            print(f"{pct}%", file=sys.stderr)

    result = analyze_stack(stack, args.material, pixel_size, nonrigid=not args.rigid_only, method=args.method,
                           max_gap=args.max_gap, min_persistence=args.min_persistence,
                           classifier=None if args.classifier == "none" else args.classifier,
                           seed=args.seed, progress=progress)
    paths = write_dynamics(result, args.out, source=" ".join(str(p) for p in args.stack))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    events = result.events["kind"].value_counts().to_dict() if len(result.events) else {}
    print(f"{name}: {stack.shape[0]} frames, {len(result.track_features)} tracks; events: "
          + (", ".join(f"{k} {v}" for k, v in events.items()) or "none"))
    n_clusters = 0 if result.clusters is None else len(result.clusters.table)
    print(f"{n_clusters} clusters of unstable sites")
    for message in result.messages:
        print(f"note: {message}")
    return 0


def read_annotated_image(path: str) -> tuple[np.ndarray, object]:
    """An annotation file and its image (found from its image reference, checked by hash).

    Raises
    ------
    ValueError
        When the image file is missing, unnamed, or holds no image matching the annotations.
    """
    from pathlib import Path

    from .annotations.store import image_sha256, load_annotations

    ann = load_annotations(path)
    ref = ann.image
    if ref.file is None:
        raise ValueError(f"{path}: the annotations name no image file (the image had none when they were "
                         "saved); save them again from the viewer after saving the image to a file")
    image_path = Path(ref.file)
    if not image_path.is_file():
        raise ValueError(f"{path}: its image {image_path} is missing; put it back there "
                         "(the annotation file refers to it by that path)")
    if image_path.suffix.lower() == ".npy":
        candidates = [np.load(image_path, allow_pickle=False)]
    else:
        from .io.rsciio_reader import read_stem_file

        candidates = [img.data for img in read_stem_file(image_path)]
    for data in candidates:
        if image_sha256(data) == ref.sha256:
            return np.asarray(data), ann
    for data in candidates:  # same pixels read with another dtype: accept when the values agree
        if tuple(np.shape(data)) == tuple(ref.shape):
            return np.asarray(data), ann
    raise ValueError(f"{path}: {image_path} holds no image of shape {tuple(ref.shape)} matching the annotations")


def _cmd_export_training(args: argparse.Namespace) -> int:
    from .annotations.store import image_sha256
    from .annotations.training_set import export_training_set

    sources = []
    for path in args.annotations:
        image, ann = read_annotated_image(path)
        if image_sha256(image) != ann.image.sha256:
            print(f"note: {path}: the image differs from the one annotated (hash); exporting anyway",
                  file=sys.stderr)
        sources.append((image, ann))

    def progress(done: int, total: int) -> None:
        print(f"image {done}/{total}", file=sys.stderr)

    manifest_path = export_training_set(sources, args.out, verified_only=not args.all_cells, progress=progress)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    totals = manifest["totals"]
    found = {c: n for c, n in totals["class_counts"].items() if n}
    print(f"wrote {manifest_path.parent} ({totals['n_images']} images, {totals['n_cells']} cells, "
          f"{totals['n_verified']} verified): " + ", ".join(f"{c} {n}" for c, n in found.items()))
    return 0


#: Per model kind, how ``train --what cells|columns`` words the progress and the held-out result
#: (the defaults of steps, batch and twins are the fine-tuning functions' own).
_TRAIN_KINDS: dict[str, dict] = {
    "cells": {
        "val": lambda d: f"held-out accuracy {d['val_accuracy']:.3f}, macro-F1 {d['val_macro_f1']:.3f}",
        "fit": lambda d: f"loss {d['loss']:.4f}, batch accuracy {d['accuracy']:.3f}",
        "counts": "{n_train} dataset cells trained on, {n_val} held out",
        "result": lambda b, a: (f"held-out accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}, "
                                f"macro-F1 {b['macro_f1']:.3f} -> {a['macro_f1']:.3f}"),
        "use": "napari-stem-defects analyze IMAGE --material M --out DIR --cell-model {name}",
    },
    "columns": {
        "val": lambda d: (f"held-out column precision {d['val_precision']:.3f}, recall {d['val_recall']:.3f}, "
                          f"F1 {d['val_f1']:.3f}"),
        "fit": lambda d: f"loss {d['loss']:.4f}, overlap (Dice) {d['dice']:.3f}",
        "counts": "{n_train} occupied sites in the training part of the images, {n_val} in held-out tiles",
        "result": lambda b, a: (f"held-out column precision {b['precision']:.3f} -> {a['precision']:.3f}, recall "
                                f"{b['recall']:.3f} -> {a['recall']:.3f}, F1 {b['f1']:.3f} -> {a['f1']:.3f}"),
        "use": "napari-stem-defects analyze IMAGE --method deep --out DIR --column-model {name}",
    },
}


def _cmd_train(args: argparse.Namespace) -> int:
    """``train``: fine-tune the shipped cell classifier or column U-Net; print held-out numbers before/after."""
    from pathlib import Path

    from .model_registry import new_model_path

    kind = _TRAIN_KINDS[args.what]
    if args.what == "cells":
        from .training.finetune import finetune_cell_cnn as finetune
    else:
        from .training.finetune_columns import finetune_column_unet as finetune
    out = new_model_path(args.what, args.name) if args.name else Path(args.out)
    shown = [0]

    def progress(d: dict) -> None:
        if "loss" not in d:
            print(f"step {d['step']}/{d['steps']}: {kind['val'](d)}", file=sys.stderr)
        elif d["step"] >= shown[0] + max(1, d["steps"] // 10) or d["step"] == d["steps"]:
            shown[0] = d["step"]
            print(f"step {d['step']}/{d['steps']}: {kind['fit'](d)}", file=sys.stderr)

    given = {key: value for key, value in (("steps", args.steps), ("batch", args.batch), ("n_twins", args.twins))
             if value is not None}
    result = finetune(
        args.datasets, out, twin_fraction=args.twin_fraction, val_fraction=args.val_fraction, lr=args.lr,
        seed=args.seed, threads=args.threads, progress=progress, name=args.name, overwrite=args.overwrite,
        command="napari-stem-defects " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None, **given,
    )
    print(f"wrote {result.path} and {result.card}")
    print(kind["counts"].format(n_train=result.n_train, n_val=result.n_val))
    if result.before:
        print(kind["result"](result.before, result.after) + " (shipped -> fine-tuned)")
    else:
        print("nothing held out (--val-fraction 0): nothing measured")
    if args.name:
        print("use it with: " + kind["use"].format(name=args.name))
    return 0


def _microscope(args: argparse.Namespace):
    """The microscope settings typed on the command line (thermal lattice), or None without --kv."""
    from .simulate.microscope import typed_settings

    return typed_settings(args.kv, args.convergence, tuple(args.detector))


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import analyze_image, write_analysis
    from .io.rsciio_reader import read_stem_file

    images = read_stem_file(args.image)
    image = images[0]
    if len(images) > 1:
        print(f"{args.image} holds {len(images)} images; analysing the first, {image.name!r}")
    if args.pixel_size:
        image.pixel_size = (args.pixel_size, args.pixel_size)

    def progress(done: int, total: int) -> None:
        if total > 1:
            print(f"frame {done}/{total}", file=sys.stderr)

    if args.column_model is not None and args.method != "deep":
        print("note: --column-model applies to --method deep only; ignored", file=sys.stderr)
    if args.cell_model is not None and args.classifier == "physics":
        print("note: --cell-model applies to the CNN classifiers only; ignored", file=sys.stderr)
    if args.heatmap_window is not None and args.heatmaps == "attention-unet":
        print("note: --heatmap-window applies to --heatmaps sliding-window only; ignored", file=sys.stderr)
    analysis = analyze_image(image, material=args.material, method=args.method, threshold=args.threshold,
                             refine=args.refine, classifier=args.classifier, heatmaps=args.heatmaps,
                             heatmap_threshold=args.heatmap_threshold, heatmap_window=args.heatmap_window,
                             heatmap_min_area=args.heatmap_min_area,
                             cell_model=args.cell_model, column_model=args.column_model, progress=progress,
                             force=args.force, pixel_size_source="typed" if args.pixel_size else "file",
                             mask=_read_mask(args.mask, image.data.shape[-2:]) if args.mask else None,
                             include_boundary=args.include_boundaries, microscope=_microscope(args))
    paths = write_analysis(analysis, args.out, source=str(args.image))
    for warning in analysis.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    table = analysis.sites_table()
    counts = table.groupby(["sublattice", "species"]).size().to_dict()
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    print(f"{image.name}: {len(table)} sites; " + ", ".join(f"{s}:{p} {n}" for (s, p), n in counts.items()))
    if analysis.cells:
        total = analysis.summary()["total"]
        found = {c: n for c, n in total["counts"].items() if n}
        print(f"{total['n_cells']} cells ({total['area_nm2']:.1f} nm^2): " + ", ".join(f"{c} {n}" for c, n in found.items()))
    else:
        print("note: no --material given, so cells were not classified (no cells.csv, summary.json)")
    if analysis.heatmaps:
        hm = analysis.heatmaps_summary()
        how = f", window {hm['window_px']:g} px, stride {hm['stride_px']:g} px" if hm["window_px"] else ""
        print(f"heatmaps ({hm['engine']}{how}): regions with p >= {hm['threshold']:g} "
              f"and >= {hm['min_area_nn2']:g} nn^2: "
              + ", ".join(f"{c} {n}" for c, n in hm["region_counts"].items()))
    for result in analysis.columns:
        for message in result.messages:
            print(f"note: {message}")
    return 0


def _read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A user's mask file as a boolean array of the image's shape (non-zero: not analysed).

    Raises
    ------
    ValueError
        Unreadable, or not a 2D array of the image's shape.
    """
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            mask = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            mask = iio.imread(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the mask {path}: {err}") from None
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        mask = mask[..., :3].max(axis=-1)
    if mask.shape != tuple(shape):
        raise ValueError(f"the mask {path} has shape {mask.shape}, the image {tuple(shape)}")
    return mask != 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import ImagingParams, simulate_twin
    from .simulate.export import write_twin
    from .simulate.imaging import calibrated_imaging
    from .simulate.microscope import MicroscopeSettings
    from .simulate.presets import PRESETS

    if args.preset:
        if args.engine != "fast":
            raise ValueError("--preset makes the bundled fast twins; leave out --engine multislice")
        twin = PRESETS[args.preset]() if args.seed is None else PRESETS[args.preset](seed=args.seed)
    else:
        microscope = MicroscopeSettings(
            energy_kV=args.kv, convergence_mrad=args.convergence, detector_inner_mrad=args.detector[0],
            detector_outer_mrad=args.detector[1], source_size_A=args.source_size, frozen_phonons=args.frozen_phonons,
        )
        dose = args.dose if args.dose > 0 else None
        common = dict(rotation_deg=args.rotation, defects=_parse_defects(args.defect), seed=args.seed or 0)
        if args.engine == "multislice":
            from .simulate.multislice import simulate_multislice_twin
            from .simulate.twin import with_dose

            twin = simulate_multislice_twin(
                args.material, tuple(args.shape), args.pixel_size, microscope=microscope,
                imaging=ImagingParams(dose=None), threads=args.threads,
                progress=lambda msg: print(msg, flush=True), **common,
            )
            if dose is not None:
                twin = with_dose(twin, dose, seed=args.seed or 0)
        else:
            imaging = calibrated_imaging(microscope, dose=dose)
            if args.gamma is not None:
                imaging = ImagingParams(**{**imaging.as_dict(), "gamma": args.gamma})
            if args.probe_fwhm is not None:
                imaging = ImagingParams(**{**imaging.as_dict(), "probe_fwhm": args.probe_fwhm})
            twin = simulate_twin(args.material, tuple(args.shape), args.pixel_size, imaging=imaging, **common)
    paths = write_twin(twin, args.out)
    counts = twin.cells["class"].value_counts().to_dict()
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(f"{twin.material.name}: {len(twin.sites)} sites, {len(twin.cells)} cells; classes {counts}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import check_calibration
    from .io.rsciio_reader import read_stem_file

    images = read_stem_file(args.image)
    status = 0
    for img in images:
        pixel = (args.pixel_size, args.pixel_size) if args.pixel_size else img.pixel_size
        report = check_calibration(img.data, args.material, pixel, tolerance=args.tolerance)
        if args.json:
            print(json.dumps({
                "name": img.name,
                "material": report.material,
                "file_pixel_size_A": report.file_pixel_size,
                "measured_pixel_size_A": report.measured_pixel_size,
                "relative_difference": report.relative_difference,
                "ok": report.ok,
                "d_spacings_px": report.lattice.d_spacings_px.tolist(),
                "message": report.message,
            }))
        else:
            print(f"{img.name}: {report.message}")
        if report.file_pixel_size is not None and not report.ok:
            status = 3
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Exit status 0 on success, 2 for bad arguments or unreadable input (one
    line on stderr naming the file or option and what is wrong), 3 when
    ``calibrate`` finds the stored calibration off by more than the tolerance,
    4 when ``analyze`` finds the image is not a 2H monolayer of the stated
    material (nothing is written; ``--force`` analyses it anyway). Warnings
    (an implausible calibration in a file...) are printed as one ``warning:``
    line each.
    """
    from .image_check import ImageCheckError

    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            if args.command == "simulate":
                return _cmd_simulate(args)
            if args.command == "analyze":
                return _cmd_analyze(args)
            if args.command == "dynamics":
                return _cmd_dynamics(args)
            if args.command == "export-training":
                return _cmd_export_training(args)
            if args.command == "train":
                return _cmd_train(args)
            if args.command == "batch":
                from .batch.cli import run_batch_command

                return run_batch_command(args)
            return _cmd_calibrate(args)
        except ImageCheckError as err:
            print(f"napari-stem-defects {args.command}: {args.image}: {err} Nothing was written; --force analyses "
                  "it anyway.", file=sys.stderr)
            return 4
        except INPUT_ERRORS as err:
            text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            print(f"napari-stem-defects {args.command}: error: {' '.join(str(text).split())}", file=sys.stderr)
            return 2


#: Errors that mean bad input (a file, a folder, an option): a one-line message and exit status 2.
INPUT_ERRORS = (ValueError, OSError, ImportError, LookupError, EOFError, OverflowError, MemoryError, argparse.ArgumentTypeError,
                zipfile.BadZipFile, pickle.UnpicklingError)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings on the command line: one line, ``warning: <message>``, without the source line."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
