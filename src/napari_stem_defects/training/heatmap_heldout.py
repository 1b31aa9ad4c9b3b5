"""Held-out scores of the heatmap networks: the twins they never saw, scored per dose.

Training-side evaluation (it draws the training generator's held-out twins), used by
``scripts/train_heatmap_nets.py`` for the model cards; the scoring itself is
:mod:`napari_stem_defects.heatmaps.evaluate`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..heatmaps.evaluate import add_counts, localisation_counts, scores
from ..heatmaps.regions import MIN_AREA_NN2
from .cell_cnn import heldout_twin, twin_nn_px
from .heatmap_nets import TEST_SEED_BASE


def heldout_scores(
    engine: str, model: Any = None, doses: tuple[float, ...] = (1e4, 1e5, 1e6),
    materials: tuple[str, ...] = ("MoS2", "WSe2", "MoTe2", "MoWSSe"), n_per: int = 4, *, size: int = 256,
    threshold: float = 0.5, imaging: str = "clean", min_area_nn2: float = MIN_AREA_NN2,
) -> dict[float, pd.DataFrame]:
    """Scores per dose over held-out twins (seeds the heatmap networks never saw).

    Twins are :func:`napari_stem_defects.training.cell_cnn.heldout_twin` from
    :data:`napari_stem_defects.training.heatmap_nets.TEST_SEED_BASE`.
    """
    from ..heatmaps.engines import compute_heatmaps

    out = {}
    for dose in doses:
        total: dict[str, dict[str, int]] = {}
        for mat in materials:
            for i in range(n_per):
                twin, _ = heldout_twin(mat, dose, i, size=size, seed_base=TEST_SEED_BASE, imaging=imaging)
                nn = twin_nn_px(twin)
                res = compute_heatmaps(twin.image, twin.material, engine, nn_px=nn, model=model)
                add_counts(total, localisation_counts(res.maps, twin.sites, nn, threshold, min_area_nn2=min_area_nn2))
        out[float(dose)] = scores(total)
    return out
