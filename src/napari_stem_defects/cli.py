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
    moved) and an instability map (intensity changes corrected for what neighbours share;
    optionally with an autoencoder trained on the series).
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
import pickle
import sys
import warnings
import zipfile
from collections.abc import Sequence

import numpy as np

from .cli_parser import _parse_defects, build_parser, typed_microscope


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

    if args.encoder == "intensity" and args.score not in (None, "corrected"):
        raise ValueError(f"--score {args.score} needs a code: add --encoder autoencoder (or rvae)")
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
                           seed=args.seed, encoder=args.encoder, score=args.score, progress=progress)
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
    from .annotations.training_set_export import export_training_set

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


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import analyze_image, write_analysis
    from .io.mask_file import read_mask
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

    if args.column_model is not None and args.method == "classical":
        print("note: --column-model applies to --method deep and atomai only; ignored", file=sys.stderr)
    if args.cell_model is not None and args.classifier == "physics":
        print("note: --cell-model applies to the CNN classifiers only; ignored", file=sys.stderr)
    if args.heatmap_window is not None and args.heatmaps in ("attention-unet", "cells"):
        print("note: --heatmap-window applies to --heatmaps sliding-window only; ignored", file=sys.stderr)
    analysis = analyze_image(image, material=args.material, method=args.method, threshold=args.threshold,
                             refine=args.refine, classifier=args.classifier, heatmaps=args.heatmaps,
                             heatmap_threshold=args.heatmap_threshold, heatmap_window=args.heatmap_window,
                             heatmap_min_area=args.heatmap_min_area,
                             cell_model=args.cell_model, column_model=args.column_model, progress=progress,
                             force=args.force, pixel_size_source="typed" if args.pixel_size else "file",
                             mask=read_mask(args.mask, image.data.shape[-2:]) if args.mask else None,
                             include_boundary=args.include_boundaries, microscope=typed_microscope(args),
                             strain=args.strain, strain_reference=args.strain_reference,
                             trust_model_file=args.trust_model_file, column_classifier=args.column_classifier)
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


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import ImagingParams, simulate_twin
    from .simulate.export import write_twin
    from .simulate.imaging_conditions import calibrated_imaging
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
                from .cli_batch import run_batch_command

                return run_batch_command(args)
            if args.command == "consensus":
                from .cli_consensus import run_consensus_command

                return run_consensus_command(args, read_annotated_image)
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
