"""``napari-stem-defects batch``: the settings its options give, and the command.

:mod:`napari_stem_defects.cli_parser` defines the options (``add_batch_parser``);
:mod:`napari_stem_defects.cli` runs the subcommand with :func:`run_batch_command`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import math
import sys

from .batch.runner import format_duration
from .cli_parser import typed_microscope


def settings_from_args(args: argparse.Namespace) -> "BatchSettings":  # noqa: F821 - imported lazily
    """The :class:`~napari_stem_defects.batch.settings.BatchSettings` of parsed ``batch`` arguments."""
    from .batch.settings import BatchSettings

    return BatchSettings(material=args.material, method=args.method, threshold=args.threshold, refine=args.refine,
                         classifier=args.classifier, column_classifier=args.column_classifier, heatmaps=args.heatmaps, heatmap_threshold=args.heatmap_threshold,
                         heatmap_window=args.heatmap_window, heatmap_min_area=args.heatmap_min_area,
                         cell_model=args.cell_model, column_model=args.column_model, pixel_size=args.pixel_size,
                         calibration_tolerance=args.tolerance, force=args.force,
                         include_boundary=args.include_boundaries, strain=args.strain,
                         strain_reference=args.strain_reference, trust_model_file=args.trust_model_file,
                         mask=None if args.mask is None else str(Path(args.mask).resolve()),
                         microscope=_typed_microscope(args))


def _typed_microscope(args: argparse.Namespace) -> dict | None:
    settings = typed_microscope(args)
    return None if settings is None else settings.as_dict()


def run_batch_command(args: argparse.Namespace) -> int:
    """Run ``batch``; exit status 0 when every file was analysed, 1 when some failed (listed in dataset.csv)."""
    from .batch.runner import BatchProgress, run_batch

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
            eta = "" if not math.isfinite(p.eta_s) or p.done == p.to_do else f", about {format_duration(p.eta_s)} to go"
            print(f"[{p.done:>{width[0]}}/{p.to_do}] {p.rel}: {what} ({rec.get('run_time_s', 0):.1f} s{eta})",
                  file=sys.stderr)

    command = "napari-stem-defects " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["batch"] else None
    result = run_batch(args.inputs, args.out, settings_from_args(args), workers=args.workers,
                       scheduler=args.scheduler, threads=args.threads, retry_failed=args.retry_failed,
                       redo=args.redo, report=not args.no_report, progress=progress, command=command)
    ok = len(result.records) - result.failed
    print(f"{len(result.records)} files: {ok} ok, {result.failed} failed ({result.analysed} analysed now, "
          f"{result.skipped} kept from earlier runs) in {format_duration(result.elapsed_s)}")
    print(f"wrote {result.dataset}, {result.batch_json}" + (f", {result.report}" if result.report else ""))
    for record in result.records:
        if record.get("status") != "ok":
            print(f"failed: {record.get('file')}: {record.get('message')}")
    return 1 if result.failed else 0


__all__ = ["run_batch_command", "settings_from_args"]
