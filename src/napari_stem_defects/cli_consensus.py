"""``napari-stem-defects consensus``: several annotators' files of one image merged into one.

:mod:`napari_stem_defects.cli_parser` defines the options (``add_consensus_parser``);
:mod:`napari_stem_defects.cli` runs the subcommand with :func:`run_consensus_command`. The
merging itself is :mod:`napari_stem_defects.annotations.consensus`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from .annotations.store import Annotations


def kappa_text(rows: list[dict]) -> list[str]:
    """Lines of the kappa table: kind, class, share of labels, Fleiss' kappa (``-`` when undefined)."""
    lines = [f"{'kind':<6} {'class':<12} {'share':>6} {'kappa':>7}"]
    for r in rows:
        kappa = "-" if not math.isfinite(r["kappa"]) else f"{r['kappa']:.3f}"
        lines.append(f"{r['kind']:<6} {r['class']:<12} {r['share']:>6.3f} {kappa:>7}")
    return lines


def run_consensus_command(args: argparse.Namespace,
                          read_image: Callable[[str], tuple[np.ndarray, Annotations]] | None = None) -> int:
    """Run ``consensus``: write the consensus file and the agreement CSV, print the counts and kappa.

    ``read_image`` reads an annotation file and its image (``cli.read_annotated_image``); it is
    needed for ``--training-set``.
    """
    from .annotations.consensus import (
        annotator_names,
        build_consensus,
        load_annotator_files,
    )
    from .annotations.consensus_report import (
        agreement_table,
        consensus_paths,
        kappa_rows,
    )
    from .annotations.store import save_annotations
    from .io.atomic import atomic_write_text

    anns = load_annotator_files(args.annotations)
    names = annotator_names(anns, args.annotations)
    consensus = build_consensus(anns, names, min_votes=args.min_votes, tolerance_nn=args.tolerance)
    first = anns[0].image
    target, csv = consensus_paths(args.out, first.file, first.name, args.csv)
    inputs = {Path(p).resolve() for p in args.annotations}
    if target.resolve() in inputs or csv.resolve() in inputs:
        raise ValueError(f"--out {target} would overwrite an annotator's file; name a new file")
    saved = save_annotations(consensus.annotations, target, saved_by=consensus.annotations.saved_by)
    atomic_write_text(csv, agreement_table(consensus).to_csv(index=False))
    print(f"annotators: {', '.join(names)}; a label is trusted with at least {consensus.min_votes} agreeing votes")
    for votes in consensus.votes():
        trusted = int(votes.trusted(consensus.min_votes).sum())
        disputed = int((~votes.unanimous).sum())
        print(f"{votes.kind}: {len(votes.majority)} matched (within {votes.tolerance_px:.2f} px), {disputed} "
              f"disputed, {trusted} trusted")
    print("Fleiss' kappa:")
    for line in kappa_text(kappa_rows(consensus)):
        print("  " + line)
    print(f"wrote {saved}, {csv}")
    if args.training_set and read_image is not None:
        from .annotations.training_set_export import export_training_set

        image, merged = read_image(str(saved))
        manifest = export_training_set([(image, merged)], args.training_set, verified_only=True)
        print(f"wrote the training set of the trusted cells: {manifest.parent}")
    return 0


def add_consensus_parser(sub: argparse._SubParsersAction, min_votes_type, fraction_type) -> argparse.ArgumentParser:
    """Add the ``consensus`` subcommand to the command line's subparsers."""
    con = sub.add_parser(
        "consensus",
        help="merge several annotators' annotation files of one image: consensus labels, agreement CSV, "
             "Fleiss' kappa per class",
        description="Match the sites (by position) and cells (by centre) of several annotators' files of one "
                    "image, take each one's majority label, and write the consensus annotation file (labels "
                    "with at least --min-votes agreeing votes are marked verified: the training set is built "
                    "from those), an agreement CSV with one row per site and cell, and Fleiss' kappa per class.",
    )
    con.add_argument("annotations", nargs="+", metavar="ANNOTATIONS.json",
                     help="the annotators' files of one image (at least two)")
    con.add_argument("--out", required=True,
                     help="consensus annotation file to write (or an existing folder: <image>.annotations.json "
                          "in it)")
    con.add_argument("--min-votes", type=min_votes_type, default=None, metavar="K",
                     help="agreeing votes a label needs to be trusted (default: a strict majority)")
    con.add_argument("--tolerance", type=fraction_type, default=0.35, metavar="F",
                     help="match items closer than F times the nearest-neighbour distance (default 0.35)")
    con.add_argument("--csv", default=None, help="agreement CSV (default: beside --out, <name>.agreement.csv)")
    con.add_argument("--training-set", default=None, metavar="DIR",
                     help="also export the trusted cells as a training set folder (needs the image file)")
    return con


__all__ = ["add_consensus_parser", "kappa_text", "run_consensus_command"]
