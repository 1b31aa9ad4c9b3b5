"""Defect heatmaps on a multislice validation library, next to the painted-classifier peer and the fast twins.

For every image of a library written by ``scripts/build_multislice_library.py`` (abTEM PRISM twins that
no training ever saw), both network heatmap engines, the ``cells`` engine (``analyze --heatmaps cells``:
maps drawn from the default analysis's cells, material only) and the peer of ``bench_heatmaps.py`` (maps
painted from the cell CNN's probabilities on detected columns, told the image's microscope settings) are
scored against
the library's true defective sites, with the scoring of the viewer and ``analyze``
(:func:`~napari_stem_defects.heatmaps.evaluate.localisation_counts`: threshold 0.5, regions under
0.6 nn^2 dropped, a site found when a region of its family comes within 0.5 nn). The same truth imaged by
the fast engine (its calibrated cross-section table and probe, same dose) is scored the same way: the gap
between the two is what the fast simulator misses.

Usage::

    .venv/bin/python benchmarks/bench_multislice_heatmaps.py --library DIR [--settings 60kV 200kV]
        [--engines sliding-window attention-unet cells peer]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import pandas as pd

from bench_heatmaps import cell_classifier_maps
from bench_multislice_classes import fast_image, library_index, load, typed_settings
from napari_stem_defects.analyze import analyze_image
from napari_stem_defects.heatmaps.engines import ENGINES, compute_heatmaps
from napari_stem_defects.heatmaps.evaluate import add_counts, localisation_counts, scores
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.materials import parse_material

PEER = "cell classifier (peer)"
CELLS = "cells"


def heatmap_counts(image, material: str, px: float, sites: pd.DataFrame, meta: dict,
                   engines: tuple[str, ...] = (*ENGINES, CELLS, PEER)) -> dict[str, dict]:
    """Localisation counts of each engine and of the peer on one image."""
    nn = parse_material(material).a / math.sqrt(3.0) / px
    out = {}
    for name in engines:
        if name == PEER:
            maps = cell_classifier_maps(image, material, (px, px), typed_settings(meta))
            if maps is None:
                continue
        elif name == CELLS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                maps = analyze_image(StemImage(image, (px, px), "library", {}), material=material, force=True,
                                     heatmaps=CELLS).heatmaps[0].maps
        else:
            maps = compute_heatmaps(image, material, name, nn_px=nn, pixel_size=(px, px)).maps
        out[name] = localisation_counts(maps, sites, nn)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="*", default=[*ENGINES, CELLS, "peer"],
                        choices=[*ENGINES, CELLS, "peer"], help="which maps to score (default all)")
    args, index = library_index(parser)
    engines = tuple(PEER if e == "peer" else e for e in args.engines)
    t0 = time.time()
    rows = []
    for (setting, dose), group in index.groupby(["setting", "dose"], sort=True):
        totals: dict[tuple[str, str], dict] = {}
        for row in group.itertuples(index=False):
            image, px, sites, _, meta = load(args.library / row.path)
            fast = fast_image(sites, image.shape, px, meta, seed=int(row.seed) % 2**31)
            for kind, img in (("multislice", image), ("fast", fast)):
                for name, counts in heatmap_counts(img, row.material, px, sites, meta, engines).items():
                    add_counts(totals.setdefault((kind, name), {}), counts)
        for (kind, name), counts in totals.items():
            for family, r in scores(counts).iterrows():
                rows.append({"setting": setting, "dose": dose, "image": kind, "engine": name, "family": family,
                             **r.to_dict()})
    table = pd.DataFrame(rows)
    print("| setting | dose | image | engine | family | sites | region P | region R | region F1 | pixel F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table.itertuples(index=False):
        print(f"| {r.setting} | {r.dose:.0e} | {r.image} | {r.engine} | {r.family} | {r.sites} | "
              f"{r.region_precision:.3f} | {r.region_recall:.3f} | {r.region_f1:.3f} | {r.pixel_f1:.3f} |")
    print("\nTarget (issue 24): region F1 of the defect map >= 0.95 at >= 1e5 on multislice images.")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
