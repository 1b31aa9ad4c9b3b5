"""The argument parser of the ``napari-stem-defects`` command line, and the checked types of its options.

:mod:`napari_stem_defects.cli` runs the commands; this module only says what they accept, so an
option's type, range and help text live in one place (``analyze`` and ``batch`` share
:func:`add_analysis_options`; :mod:`napari_stem_defects.cli_batch` turns ``batch``'s into settings).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

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


def add_microscope_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--kv``, ``--convergence`` and ``--detector`` of ``analyze`` and ``batch`` (read by :func:`typed_microscope`)."""
    parser.add_argument("--kv", type=_number(60.0, 300.0), default=None,
                        help="beam energy of the image in kV: with it, which sublattice holds the metals follows the "
                             "multislice-calibrated table at --kv/--convergence/--detector (thermal lattice) "
                             "instead of Z^1.7 (at 60 kV an Se2 column can be as bright as W); default: the file's, "
                             "when it records energy and detector angles")
    parser.add_argument("--convergence", type=_number(0.0, low_open=True), default=30.0,
                        help="probe convergence semi-angle in mrad, with --kv (default 30)")
    parser.add_argument("--detector", type=_number(0.0), nargs=2, default=(70.0, 200.0), metavar=("INNER", "OUTER"),
                        help="annular detector angles in mrad, with --kv (default 70 200)")


def typed_microscope(args: argparse.Namespace):  # -> MicroscopeSettings | None (imported lazily)
    """The microscope settings of :func:`add_microscope_options` (thermal lattice), or None without ``--kv``."""
    from .simulate.microscope import typed_settings

    return typed_settings(args.kv, args.convergence, tuple(args.detector))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
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
    add_analysis_options(ana)
    dyn = sub.add_parser(
        "dynamics",
        help="image series: drift, column tracks, events and an instability map; "
             "write DIR/drift.csv, tracks.csv, track_features.csv, events.csv, instability.csv, "
             "instability.npy, clusters.csv, defect_counts.csv, dynamics.json",
        description="Register the frames of an image series, track every atom column through them, "
                    "list the sites emptied, filled or moved, and map where the lattice is unstable "
                    "(each column's intensity change, corrected for the change its neighbours share; "
                    "optionally fused with the code of an autoencoder, or atomai's rVAE, trained on the "
                    "series itself).",
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
    dyn.add_argument("--seed", type=int, default=0, help="seed of the encoder training (default 0)")
    dyn.add_argument("--encoder", choices=("intensity", "autoencoder", "rvae"), default="intensity",
                     help="patch encoder of the instability: none (default: no network, the intensity "
                          "changes only), our autoencoder, or atomai's rotationally invariant VAE")
    dyn.add_argument("--score", choices=("corrected", "fused", "latent"), default=None,
                     help="instability: the intensity change corrected for the change the neighbours share "
                          "(default without an encoder), the code's change fused with it (default with an "
                          "encoder), or the code's change alone")

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
    add_batch_parser(sub)
    from .cli_consensus import add_consensus_parser

    add_consensus_parser(sub, _whole(1), _number(0.0, 1.0, low_open=True))
    return parser


def add_analysis_options(group: argparse._ActionsContainer, *, batch: bool = False) -> None:
    """The options of one analysis, shared by ``analyze`` and ``batch`` (``batch`` applies them to every file)."""
    from .heatmaps.regions import MIN_AREA_NN2

    whose = "every file's" if batch else "the file's"
    group.add_argument("--pixel-size", type=_pixel_size, default=None, help=f"override {whose} pixel size (Å)")
    group.add_argument("--material", default=None,
                       help="e.g. MoS2, WSe2, MoWSSe; sets species names and which sublattice is the metal")
    group.add_argument("--method", choices=("classical", "deep", "atomai"), default="classical",
                       help="detection map: band-pass filter, the shipped U-Net, or your own trained AtomAI "
                            "Segmentor (--column-model FILE --trust-model-file) (default classical)")
    group.add_argument("--threshold", type=_number(), default=None, help="peak threshold on the detection map")
    group.add_argument("--refine", choices=("gaussian", "com"), default="gaussian",
                       help="sub-pixel refinement (default gaussian)")
    group.add_argument("--classifier", choices=("cnn+columns", "cnn", "cnn-two-stage", "physics"), default=None,
                       help="cell classifier (with --material): the shipped CNN times the physics rule on the "
                            "columns' species (cnn+columns; the default with --column-classifier context), the "
                            "CNN alone (the default with --column-classifier intensity), its two-stage decision "
                            "(perfect vs defective, then the kind), or the physics rule alone")
    group.add_argument("--column-classifier", choices=("context", "intensity"), default=None,
                       help="what decides each column's species before the cells: the context-encoder classifier "
                            "(Zernike contrast + material, beam energy and detector; give --kv/--detector when "
                            "the file lacks them; the default with --material) or the image's Z-contrast mixture "
                            "(the default without a material)")
    group.add_argument("--cell-model", default=None, metavar="NAME_OR_PATH",
                       help="cell classifier weights for the CNN classifiers: a model version name "
                            "(see `train --name`) or a .pt file (default the shipped model)")
    group.add_argument("--column-model", default=None, metavar="NAME_OR_PATH",
                       help="column U-Net weights for --method deep: a model version name "
                            "(see `train --what columns --name`) or a .pt file (default the shipped model); "
                            "for --method atomai the .tar file atomai's Segmentor saved")
    group.add_argument("--trust-model-file", action="store_true",
                       help="allow --method atomai to load --column-model: an AtomAI model file is a Python "
                            "pickle and loading it runs the code it holds; only for files you trained yourself "
                            "or got from someone you trust")
    group.add_argument("--heatmaps", choices=("none", "sliding-window", "attention-unet", "cells"), default="none",
                       help="also write per-family defect probability maps (needs --material): "
                            "DIR/heatmaps.npy, uncertainty.npy, heatmaps.json, regions.csv (default none); "
                            "'cells' draws them from the cells' class probabilities, so they never contradict "
                            "the cells")
    group.add_argument("--heatmap-threshold", type=float, default=0.5, metavar="P",
                       help="probability at which a pixel belongs to a region of regions.csv (default 0.5)")
    group.add_argument("--heatmap-window", type=float, default=None, metavar="PX",
                       help="sliding-window side in image pixels (default automatic: 64 px when the lattice suits it)")
    group.add_argument("--heatmap-min-area", type=float, default=MIN_AREA_NN2, metavar="NN2",
                       help="smallest region of regions.csv, in squared metal-to-chalcogen distances "
                            f"(a point defect lights up about 0.8; default {MIN_AREA_NN2:g}; 0 keeps every speck)")
    group.add_argument("--mask", default=None, metavar="MASK",
                       help="pixels not to analyse: a .npy, .tif or .png of the image's shape, non-zero = masked "
                            "(NaN pixels of the image are always masked)"
                            + ("; a file of another shape fails" if batch else ""))
    group.add_argument("--include-boundaries", action="store_true",
                       help="count cells on domain and grain boundaries and at the edges of holes, amorphous and "
                            "masked areas in the statistics (left out by default)")
    add_microscope_options(group)
    group.add_argument("--strain", action="store_true",
                       help="also measure the lattice: exx, eyy, exy, rotation_deg, cross_section_A2 in sites.csv; "
                            "DIR/strain_maps.npy, defect_profiles.csv, class_averages.npz/.png, "
                            "class_average_columns.csv")
    group.add_argument("--strain-reference", choices=("domain", "material"), default="domain",
                       help="reference lattice of the strain: each domain's average (default) or the material's "
                            "nominal lattice constant (needs --material and a pixel size)")
    group.add_argument("--force", action="store_true",
                       help="analyse even when the image check fails (not a 2H monolayer of the stated material); "
                            + ("by default such a file is recorded as failed with what it looks like instead"
                               if batch else "the findings are written into every output as warnings"))


def add_batch_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand to the command line's subparsers."""
    bat = sub.add_parser(
        "batch",
        help="analyse many files (folders, globs) like `analyze`, in parallel or on a dask cluster; "
             "write DIR/<file>/..., DIR/dataset.csv, DIR/batch.json, DIR/report.html",
        description="Run `analyze` on every file of the inputs (files, folders searched recursively for the "
                    "formats this plugin reads, glob patterns) with the same settings. Each file's results go "
                    "to DIR/<its path relative to the inputs>/; DIR/dataset.csv has one row per file, "
                    "DIR/batch.json the settings, versions and model hashes, DIR/report.html the figures. "
                    "A re-run with the same settings skips the files already done.",
    )
    bat.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or glob patterns ('data/**/*.dm4')")
    bat.add_argument("--out", required=True, help="output folder")
    opts = bat.add_argument_group("analysis (as `analyze`)")
    add_analysis_options(opts, batch=True)
    from .batch.settings import DEFAULT_TOLERANCE

    opts.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                      help="flag a file whose pixel size differs from its lattice's by more than this "
                           f"(default {DEFAULT_TOLERANCE:g})")
    run = bat.add_argument_group("how to run")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="local worker processes (1: in this process; default one per core, at most one "
                            "per 3 GB of free memory)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on a dask.distributed cluster: its scheduler address (tcp://host:8786), a "
                            "scheduler file, or 'config' for dask's scheduler-address setting")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="torch/BLAS threads per file (default: the cores shared among the files running at once)")
    run.add_argument("--retry-failed", action="store_true", help="analyse again files an earlier run failed on")
    run.add_argument("--redo", action="store_true", help="analyse every file again, whatever was done before")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    return bat
