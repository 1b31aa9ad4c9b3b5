"""``napari-stem-defects batch``: its options (those of ``analyze``, and how to run) and the command.

:mod:`napari_stem_defects.cli` adds the subcommand with :func:`add_batch_parser`
and runs it with :func:`run_batch_command`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import math
import sys

from ..cli_parser import add_microscope_options, typed_microscope
from ..heatmaps.regions import MIN_AREA_NN2
from .settings import DEFAULT_TOLERANCE


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
    opts.add_argument("--pixel-size", type=float, default=None, help="override every file's pixel size (Å)")
    opts.add_argument("--material", default=None, help="e.g. MoS2, WSe2, MoWSSe (needed for cells, statistics)")
    opts.add_argument("--method", choices=("classical", "deep", "atomai"), default="classical",
                      help="detection map (default classical)")
    opts.add_argument("--threshold", type=float, default=None, help="peak threshold on the detection map")
    opts.add_argument("--refine", choices=("gaussian", "com"), default="gaussian",
                      help="sub-pixel refinement (default gaussian)")
    opts.add_argument("--classifier", choices=("cnn", "cnn-two-stage", "physics"), default="cnn",
                      help="cell classifier (with --material; default cnn)")
    opts.add_argument("--cell-model", default=None, metavar="NAME_OR_PATH",
                      help="cell classifier weights: a model version name or a .pt file (default shipped)")
    opts.add_argument("--column-model", default=None, metavar="NAME_OR_PATH",
                      help="column U-Net weights for --method deep (default shipped); for --method atomai "
                           "the .tar file of your atomai Segmentor")
    opts.add_argument("--trust-model-file", action="store_true",
                      help="allow --method atomai to load --column-model (a Python pickle: loading it runs the "
                           "code it holds; only for files you trained yourself or got from someone you trust)")
    opts.add_argument("--heatmaps", choices=("none", "sliding-window", "attention-unet"), default="none",
                      help="also write defect probability heatmaps (needs --material; default none)")
    opts.add_argument("--heatmap-threshold", type=float, default=0.5, metavar="P",
                      help="probability at which a pixel belongs to a region (default 0.5)")
    opts.add_argument("--heatmap-window", type=float, default=None, metavar="PX",
                      help="sliding-window side in image pixels (default automatic)")
    opts.add_argument("--heatmap-min-area", type=float, default=MIN_AREA_NN2, metavar="NN2",
                      help=f"smallest region in squared M-X distances (default {MIN_AREA_NN2:g})")
    opts.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                      help="flag a file whose pixel size differs from its lattice's by more than this "
                           f"(default {DEFAULT_TOLERANCE:g})")
    opts.add_argument("--force", action="store_true",
                      help="analyse files the image check refuses (not a 2H monolayer of the material); by "
                           "default such a file is recorded as failed with what it looks like instead")
    opts.add_argument("--mask", default=None, metavar="MASK",
                      help="pixels not to analyse, for every file of the mask's shape (.npy/.tif/.png, non-zero = "
                           "masked); a file of another shape fails")
    add_microscope_options(opts)
    opts.add_argument("--include-boundaries", action="store_true",
                      help="count boundary cells (domain and grain boundaries, hole, amorphous and masked edges) "
                           "in the statistics")
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


def settings_from_args(args: argparse.Namespace) -> "BatchSettings":  # noqa: F821 - imported lazily
    """The :class:`~napari_stem_defects.batch.settings.BatchSettings` of parsed ``batch`` arguments."""
    from .settings import BatchSettings

    return BatchSettings(material=args.material, method=args.method, threshold=args.threshold, refine=args.refine,
                         classifier=args.classifier, heatmaps=args.heatmaps, heatmap_threshold=args.heatmap_threshold,
                         heatmap_window=args.heatmap_window, heatmap_min_area=args.heatmap_min_area,
                         cell_model=args.cell_model, column_model=args.column_model, pixel_size=args.pixel_size,
                         calibration_tolerance=args.tolerance, force=args.force,
                         trust_model_file=args.trust_model_file,
                         include_boundary=args.include_boundaries,
                         mask=None if args.mask is None else str(Path(args.mask).resolve()),
                         microscope=_typed_microscope(args))


def _typed_microscope(args: argparse.Namespace) -> dict | None:
    settings = typed_microscope(args)
    return None if settings is None else settings.as_dict()


def run_batch_command(args: argparse.Namespace) -> int:
    """Run ``batch``; exit status 0 when every file was analysed, 1 when some failed (listed in dataset.csv)."""
    from .runner import BatchProgress, run_batch

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    width = [1]

    def progress(p: BatchProgress) -> None:
        if p.kind == "planned":
            width[0] = len(str(p.total))
            kept = p.total - p.to_do
            print(f"{p.total} files; {kept} done before with these settings, {p.to_do} to analyse", file=sys.stderr)
        elif p.kind == "finished" and p.record is not None:
            rec = p.record
            what = "ok" if rec.get("status") == "ok" else f"FAILED: {rec.get('message')}"
            eta = "" if not math.isfinite(p.eta_s) or p.done == p.to_do else f", about {_duration(p.eta_s)} to go"
            print(f"[{p.done:>{width[0]}}/{p.to_do}] {p.rel}: {what} ({rec.get('run_time_s', 0):.1f} s{eta})",
                  file=sys.stderr)

    command = "napari-stem-defects " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["batch"] else None
    result = run_batch(args.inputs, args.out, settings_from_args(args), workers=args.workers,
                       scheduler=args.scheduler, threads=args.threads, retry_failed=args.retry_failed,
                       redo=args.redo, report=not args.no_report, progress=progress, command=command)
    ok = len(result.records) - result.failed
    print(f"{len(result.records)} files: {ok} ok, {result.failed} failed ({result.analysed} analysed now, "
          f"{result.skipped} kept from earlier runs) in {_duration(result.elapsed_s)}")
    print(f"wrote {result.dataset}, {result.batch_json}" + (f", {result.report}" if result.report else ""))
    for record in result.records:
        if record.get("status") != "ok":
            print(f"failed: {record.get('file')}: {record.get('message')}")
    return 1 if result.failed else 0


def _duration(seconds: float) -> str:
    """``'42 s'``, ``'3.5 min'``, ``'1.2 h'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["add_batch_parser", "run_batch_command", "settings_from_args"]
