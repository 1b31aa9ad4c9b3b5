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

The files and their columns are documented in the README and are kept stable.
"""

from __future__ import annotations

import argparse
import json
import sys
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
        help="write a digital twin: image.tif, sites.csv, cells.csv, twin.json",
        description="Simulate a HAADF-STEM image of a 2H-MX2 monolayer with exact labels.",
    )
    sim.add_argument("--out", required=True, help="output folder")
    sim.add_argument("--preset", choices=sorted(PRESETS), help="a named sample (other options ignored)")
    sim.add_argument("--material", default="MoS2", help="e.g. MoS2, WSe2, MoTe2, MoWSSe, Janus-MoSSe")
    sim.add_argument("--shape", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    sim.add_argument("--pixel-size", type=float, default=0.12, help="Å per pixel (default 0.12)")
    sim.add_argument("--rotation", type=float, default=None, help="lattice rotation in degrees (default random)")
    sim.add_argument("--dose", type=float, default=1e5, help="e/Å^2 (default 1e5); 0 for noise-free")
    sim.add_argument("--gamma", type=float, default=1.7, help="Z-contrast exponent (default 1.7)")
    sim.add_argument("--probe-fwhm", type=float, default=1.0, help="probe FWHM in Å (default 1.0)")
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
    cal.add_argument("--pixel-size", type=float, default=None, help="override the file's pixel size (Å)")
    cal.add_argument("--tolerance", type=float, default=0.03, help="relative tolerance (default 0.03)")
    cal.add_argument("--json", action="store_true", help="print the report as JSON")
    ana = sub.add_parser(
        "analyze",
        help="find atom columns and classify cells; write DIR/sites.csv, cells.csv, summary.json, analysis.json",
        description="Detect every atom column of a HAADF image (all frames of a stack) and write one "
                    "row per lattice site, empty sites included, to DIR/sites.csv.",
    )
    ana.add_argument("image", help="STEM file (.dm3, .dm4, .emd, .ser, .emi, .mrc, .tif, .hspy, .npy, .png)")
    ana.add_argument("--out", required=True, help="output folder")
    ana.add_argument("--pixel-size", type=float, default=None, help="override the file's pixel size (Å)")
    ana.add_argument("--material", default=None,
                     help="e.g. MoS2, WSe2, MoWSSe; sets species names and which sublattice is the metal")
    ana.add_argument("--method", choices=("classical", "deep"), default="classical",
                     help="detection map: band-pass filter or the shipped U-Net (default classical)")
    ana.add_argument("--threshold", type=float, default=None, help="peak threshold on the detection map")
    ana.add_argument("--refine", choices=("gaussian", "com"), default="gaussian",
                     help="sub-pixel refinement (default gaussian)")
    ana.add_argument("--classifier", choices=("cnn", "cnn-two-stage", "physics"), default="cnn",
                     help="cell classifier (with --material): the shipped CNN, its two-stage decision "
                          "(perfect vs defective, then the kind), or the Z-contrast physics baseline (default cnn)")
    ana.add_argument("--heatmaps", choices=("none", "sliding-window", "attention-unet"), default="none",
                     help="also write per-family defect probability maps (needs --material): "
                          "DIR/heatmaps.npy, uncertainty.npy, heatmaps.json, regions.csv (default none)")
    ana.add_argument("--heatmap-threshold", type=float, default=0.5, metavar="P",
                     help="probability at which a pixel belongs to a region of regions.csv (default 0.5)")
    ana.add_argument("--heatmap-window", type=float, default=None, metavar="PX",
                     help="sliding-window side in image pixels (default automatic: 64 px when the lattice suits it)")
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
    dyn.add_argument("--pixel-size", type=float, default=None, help="override the file's pixel size (Å)")
    dyn.add_argument("--method", choices=("classical", "deep"), default="classical",
                     help="column detection map (default classical)")
    dyn.add_argument("--rigid-only", action="store_true", help="skip the non-rigid drift correction")
    dyn.add_argument("--max-gap", type=int, default=2, help="frames a site may go unseen and keep its track")
    dyn.add_argument("--min-persistence", type=int, default=1,
                     help="frames a new state must last to count as an event (default 1)")
    dyn.add_argument("--classifier", choices=("physics", "cnn", "cnn-two-stage", "none"), default="physics",
                     help="cell classifier for defect_counts.csv (default physics)")
    dyn.add_argument("--seed", type=int, default=0, help="seed of the autoencoder training (default 0)")
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

    if args.heatmap_window is not None and args.heatmaps == "attention-unet":
        print("note: --heatmap-window applies to --heatmaps sliding-window only; ignored", file=sys.stderr)
    analysis = analyze_image(image, material=args.material, method=args.method, threshold=args.threshold,
                             refine=args.refine, classifier=args.classifier, heatmaps=args.heatmaps,
                             heatmap_threshold=args.heatmap_threshold, heatmap_window=args.heatmap_window,
                             progress=progress)
    paths = write_analysis(analysis, args.out, source=str(args.image))
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
        print(f"heatmaps ({hm['engine']}{how}): regions with p >= {hm['threshold']:g}: "
              + ", ".join(f"{c} {n}" for c, n in hm["region_counts"].items()))
    for result in analysis.columns:
        for message in result.messages:
            print(f"note: {message}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import ImagingParams, simulate_twin
    from .simulate.export import write_twin
    from .simulate.presets import PRESETS

    if args.preset:
        twin = PRESETS[args.preset]() if args.seed is None else PRESETS[args.preset](seed=args.seed)
    else:
        imaging = ImagingParams(dose=args.dose if args.dose > 0 else None, gamma=args.gamma,
                                probe_fwhm=args.probe_fwhm)
        twin = simulate_twin(
            args.material, tuple(args.shape), args.pixel_size, rotation_deg=args.rotation,
            defects=_parse_defects(args.defect), imaging=imaging, seed=args.seed or 0,
        )
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

    Exit status 0 on success, 2 for bad arguments or unreadable input, 3 when
    ``calibrate`` finds the stored calibration off by more than the tolerance.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            return _cmd_simulate(args)
        if args.command == "analyze":
            return _cmd_analyze(args)
        if args.command == "dynamics":
            return _cmd_dynamics(args)
        return _cmd_calibrate(args)
    except (ValueError, OSError, argparse.ArgumentTypeError) as err:
        print(f"napari-stem-defects {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
