"""What a consensus says, for people: the agreement table (CSV), the kappa table, the disagreements to review.

:mod:`.consensus` merges the annotators' files; this module reports on the result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .consensus import ABSENT, Consensus
from .store import SIDECAR_SUFFIX, Annotations

__all__ = [
    "AGREEMENT_COLUMNS",
    "Disagreements",
    "agreement_table",
    "consensus_paths",
    "disagreement_layer_data",
    "disagreements",
    "kappa_rows",
]


#: Columns of :func:`agreement_table` (a contract: add, never rename).
AGREEMENT_COLUMNS = ("kind", "item", "index", "frame", "y_px", "x_px", "label", "votes", "n_annotators",
                     "agreement", "unanimous", "tie", "trusted", "n_verified", "vote_counts", "labels")


def agreement_table(consensus: Consensus) -> pd.DataFrame:
    """One row per matched site and cell: where it is, the majority label and how the annotators voted.

    Columns (:data:`AGREEMENT_COLUMNS`): ``kind`` (sites/cells), ``item`` (its number among
    that kind's matched items), ``index`` (its row in the consensus file's layer, -1 when the
    majority said :data:`ABSENT` and it was left out), ``frame`` (-1 for a 2D image),
    ``y_px``, ``x_px`` (mean position; cells: centre), ``label``, ``votes``, ``n_annotators``,
    ``agreement`` (votes / annotators), ``unanimous``, ``tie``, ``trusted`` (in the training set:
    at least ``min_votes`` votes, no tie, not absent), ``n_verified``, ``vote_counts``
    (``"Mo:2;W:1"``) and ``labels`` (``"alice=Mo;bob=W;carol=Mo"``).
    """
    tables = []
    for votes in consensus.votes():
        m = len(votes.majority)
        kept = votes.majority != ABSENT
        index = np.full(m, -1, dtype=np.int64)
        index[kept] = np.arange(int(kept.sum()))
        pos = votes.positions
        frame = np.round(pos[:, 0]).astype(np.int64) if pos.shape[1] == 3 else np.full(m, -1, np.int64)
        tables.append(pd.DataFrame({
            "kind": votes.kind, "item": np.arange(m), "index": index, "frame": frame,
            "y_px": pos[:, -2] if m else [], "x_px": pos[:, -1] if m else [],
            "label": votes.majority.astype(str), "votes": votes.votes, "n_annotators": len(votes.annotators),
            "agreement": votes.votes / len(votes.annotators), "unanimous": votes.unanimous, "tie": votes.tie,
            "trusted": votes.trusted(consensus.min_votes), "n_verified": votes.n_verified,
            "vote_counts": [_counts_text(votes.categories, row) for row in votes.counts],
            "labels": [";".join(f"{a}={lab}" for a, lab in zip(votes.annotators, row)) for row in votes.labels],
        }, columns=list(AGREEMENT_COLUMNS)))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(AGREEMENT_COLUMNS))


def _counts_text(categories: Sequence[str], row: np.ndarray) -> str:
    order = np.argsort(-row, kind="stable")
    return ";".join(f"{categories[j]}:{int(row[j])}" for j in order if row[j] > 0)


def kappa_rows(consensus: Consensus) -> list[dict[str, Any]]:
    """Fleiss' kappa per kind and class, overall first: ``{"kind", "class", "share", "kappa"}`` rows."""
    out: list[dict[str, Any]] = []
    for votes in consensus.votes():
        if votes.kappa is None:
            continue
        out.append({"kind": votes.kind, "class": "(all)", "share": 1.0, "kappa": votes.kappa.overall})
        out += [{"kind": votes.kind, "class": c, "share": votes.kappa.share[c], "kappa": votes.kappa.per_category[c]}
                for c in votes.categories]
    return out


@dataclass
class Disagreements:
    """The items annotators disagree on, to draw and review.

    Attributes
    ----------
    sites, cells : DataFrame
        Their :func:`agreement_table` rows (not unanimous).
    site_points : ndarray, shape (N, 2) or (N, 3)
        Mean positions (pixels) of those sites.
    cell_polygons : ndarray, shape (M, 4, 2) or (M, 4, 3)
        The polygon of each of those cells, as its first annotator drew it.
    """

    sites: pd.DataFrame
    cells: pd.DataFrame
    site_points: np.ndarray
    cell_polygons: np.ndarray


def disagreements(consensus: Consensus, anns: Sequence[Annotations]) -> Disagreements:
    """The sites and cells that not every annotator labelled the same (see :class:`Disagreements`)."""
    table = agreement_table(consensus)
    out: dict[str, Any] = {}
    for kind, votes in (("sites", consensus.sites), ("cells", consensus.cells)):
        rows = table[(table["kind"] == kind) & ~table["unanimous"].astype(bool)].reset_index(drop=True)
        out[kind] = rows
        if votes is None or not len(rows):
            out[kind + "_data"] = np.zeros((0, 2) if kind == "sites" else (0, 4, 2))
            continue
        items = rows["item"].to_numpy(int)
        if kind == "sites":
            out[kind + "_data"] = votes.positions[items]
            continue
        owner = np.argmax(votes.rows[items] >= 0, axis=1)
        out[kind + "_data"] = np.stack([np.asarray(anns[k].cells.data, float)[votes.rows[i, k]]
                                        for i, k in zip(items, owner)])
    return Disagreements(sites=out["sites"], cells=out["cells"], site_points=out["sites_data"],
                         cell_polygons=out["cells_data"])


#: Edge colour of a disputed item whose majority label is still trusted, and of one without (a tie, too few votes).
TRUSTED_COLOUR, UNTRUSTED_COLOUR = "#ffb000", "#ff2050"


def disagreement_layer_data(consensus: Consensus, found: Disagreements) -> list[tuple[Any, dict[str, Any], str]]:
    """napari layer data of the disagreements: a Points layer of the sites, a Shapes layer of the cells.

    Named ``<image> disagreements`` and ``<image> disputed cells``; placed with the image's
    scale, units and translate; the :func:`agreement_table` rows as features, the vote counts
    as text; edges :data:`TRUSTED_COLOUR` where the majority is still trusted, else
    :data:`UNTRUSTED_COLOUR`.
    """
    from .layers import image_placement

    ref = consensus.annotations.image
    points = np.asarray(found.site_points, float).reshape(len(found.sites), -1) if len(found.sites) else \
        np.zeros((0, 2))
    votes = consensus.sites
    size = max(2.0, 2.0 * votes.tolerance_px) if votes is not None else 10.0
    site_kwargs = {"name": f"{ref.name} disagreements", **image_placement(ref, points.shape[1]),
                   "features": found.sites, "face_color": "transparent", "border_color": _colours(found.sites),
                   "border_width": 0.15, "size": size, "symbol": "ring",
                   "text": {"string": "{vote_counts}", "size": 9, "color": "white", "anchor": "upper_left"}}
    polygons = np.asarray(found.cell_polygons, float)
    n = polygons.shape[-1] if polygons.ndim == 3 and len(polygons) else 2
    cell_kwargs = {"name": f"{ref.name} disputed cells", **image_placement(ref, n), "features": found.cells,
                   "shape_type": "polygon", "edge_color": _colours(found.cells), "face_color": "transparent",
                   "edge_width": 1.0, "text": {"string": "{vote_counts}", "size": 8, "color": "white"}}
    return [(points, site_kwargs, "points"), (list(polygons), cell_kwargs, "shapes")]


def _colours(table: pd.DataFrame) -> np.ndarray | str:
    if not len(table):
        return UNTRUSTED_COLOUR
    return np.where(table["trusted"].to_numpy(bool), TRUSTED_COLOUR, UNTRUSTED_COLOUR)


def consensus_paths(out: str | os.PathLike, image_file: str | None, image_name: str,
                    csv: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The consensus annotation file and its agreement CSV.

    ``out`` is the file, or an existing folder (then ``<image file name>.annotations.json``
    inside it); the CSV is ``--csv`` or the file's name with ``.annotations.json`` (or
    ``.json``) replaced by ``.agreement.csv``.

    Examples
    --------
    >>> [p.name for p in consensus_paths("c.annotations.json", None, "twin", None)]
    ['c.annotations.json', 'c.agreement.csv']
    """
    target = Path(out)
    if target.is_dir():
        target = target / f"{Path(image_file).name if image_file else image_name}{SIDECAR_SUFFIX}"
    if csv is not None:
        return target, Path(csv)
    name = target.name
    for suffix in (SIDECAR_SUFFIX, ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return target, target.with_name(name + ".agreement.csv")
