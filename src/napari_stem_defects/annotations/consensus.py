"""Consensus labels: several annotators' files of one image merged into votes, agreement and one trusted file.

Each annotator saves their own annotation file of the same image (the
``saved_by`` entry names them). Annotators may add, delete and move points, so
items are matched **by position**, not by row: sites by their point, cells by
the centre of their polygon, within ``tolerance`` times the nearest-neighbour
distance (:func:`match_positions`: mutual nearest neighbours, one annotator at
a time). An annotator who has no item at a matched place votes :data:`ABSENT`
there. Each site's label is its ``species``, each cell's its ``class``.

:func:`build_consensus` then counts the votes, takes the majority label
(:mod:`.agreement`), computes Fleiss' kappa overall and per class, and writes
one consensus :class:`~.store.Annotations`: every item whose majority is not
:data:`ABSENT`, at the annotators' mean position (cells: the first
annotator's polygon), with the majority label, and

* ``votes`` (int): annotators who gave that label; ``agreement`` = votes / annotators;
* ``unanimous`` (bool): everybody agreed;
* ``verified`` (bool): True only for labels with at least ``min_votes`` agreeing votes
  and no tie: the labels a training set is built from
  (:func:`~.training_set_export.export_training_set` exports verified cells only);
* ``confidence`` (cells) / ``probability`` (sites): the agreement, so the
  correction dock's "Next uncertain" visits the disputed items first.

Every label in an annotator's file counts as that annotator's vote (a label
left as the model drew it counts as accepted); the agreement table's
``n_verified`` says how many annotators had marked it verified.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .agreement import Kappa, fleiss_kappa, majority_labels, vote_counts
from .edits import SOURCE_HUMAN, sync_positions
from .store import AnnotationFileError, Annotations, LayerAnnotation, load_annotations

__all__ = ["ABSENT", "Consensus", "ConsensusError", "Votes", "annotator_names", "build_consensus", "item_votes",
           "load_annotator_files", "match_positions"]

#: The vote of an annotator who has no site or cell at a matched place (deleted it, or never added it).
ABSENT = "absent"
#: Default matching tolerance, as a fraction of the nearest-neighbour distance.
TOLERANCE_NN = 0.35
#: The label column of each kind.
LABEL_COLUMN = {"sites": "species", "cells": "class"}
#: Frame coordinate weight when matching (frame, y, x) points: points of different frames never match.
_FRAME_WEIGHT = 1e6


class ConsensusError(ValueError):
    """Annotator files that cannot be merged: unreadable, too few, or of different images."""


def load_annotator_files(paths: Sequence[str | os.PathLike]) -> list[Annotations]:
    """Read several annotators' files of one image.

    Raises
    ------
    ConsensusError
        Fewer than two files, a file that cannot be read (the message names it and says why),
        or files of different images (another image hash or shape).
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ConsensusError(f"consensus needs the files of at least two annotators, not {len(paths)}")
    anns = []
    for p in paths:
        try:
            anns.append(load_annotations(p))
        except FileNotFoundError:
            raise ConsensusError(f"{p}: no such annotation file") from None
        except (AnnotationFileError, OSError) as err:
            raise ConsensusError(f"cannot read {p}: {err}") from None
    first = anns[0].image
    for p, ann in zip(paths[1:], anns[1:]):
        if tuple(ann.image.shape) != tuple(first.shape) or ann.image.sha256 != first.sha256:
            raise ConsensusError(
                f"{paths[0].name} and {p.name} annotate different images (shape {tuple(first.shape)} vs "
                f"{tuple(ann.image.shape)}, sha256 {first.sha256[:12]}... vs {ann.image.sha256[:12]}...); "
                "consensus merges several annotators' files of ONE image")
    return anns


def annotator_names(anns: Sequence[Annotations], paths: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """Each file's annotator: its ``saved_by``, else the file's name; repeated names get ``#2``, ``#3``...

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> annotator_names([NS(saved_by="ann"), NS(saved_by="ann"), NS(saved_by=None)], ["a", "b", "c.json"])
    ['ann', 'ann#2', 'c.json']
    """
    names: list[str] = []
    for k, ann in enumerate(anns):
        base = (ann.saved_by or "").strip() or (Path(paths[k]).name if paths is not None else f"annotator {k + 1}")
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}#{n}"
        names.append(name)
    return names


def match_positions(positions: Sequence[np.ndarray], tolerance: float) -> np.ndarray:
    """Match items of several annotators by position.

    Annotators are taken in order: each one's items are matched to the places
    found so far (their mean position) as mutual nearest neighbours closer than
    ``tolerance``; the rest become new places.

    Parameters
    ----------
    positions : sequence of ndarray, shape (N_k, 2) or (N_k, 3)
        Each annotator's item positions in pixels, (y, x) or (frame, y, x).
    tolerance : float
        Largest distance (pixels) between matched items.

    Returns
    -------
    ndarray of int, shape (M, K)
        For each place, the row of each annotator's item there, -1 where the annotator has none.

    Examples
    --------
    >>> a = np.array([[0.0, 0.0], [10.0, 0.0]])
    >>> b = np.array([[10.2, 0.1], [20.0, 0.0]])
    >>> match_positions([a, b], 1.0).tolist()
    [[0, -1], [1, 0], [-1, 1]]
    """
    from scipy.spatial import cKDTree

    pts = [_match_coordinates(p) for p in positions]
    dim = max((p.shape[1] for p in pts if p.size), default=2)
    pts = [p if p.shape[1] == dim else np.zeros((0, dim)) for p in pts]
    k_all = len(pts)
    rows = np.full((len(pts[0]), k_all), -1, dtype=np.int64)
    rows[:, 0] = np.arange(len(pts[0]))
    sums, counts = pts[0].copy(), np.ones(len(pts[0]))
    for k in range(1, k_all):
        new = pts[k]
        matched = np.zeros(len(new), bool)
        if len(new) and len(sums):
            centres = sums / counts[:, None]
            d_new, near_place = cKDTree(centres).query(new)
            _, near_item = cKDTree(new).query(centres)
            items = np.arange(len(new))
            ok = (d_new <= tolerance) & (near_item[near_place] == items)
            rows[near_place[ok], k] = items[ok]
            sums[near_place[ok]] += new[ok]
            counts[near_place[ok]] += 1
            matched = ok
        extra = np.flatnonzero(~matched)
        block = np.full((len(extra), k_all), -1, dtype=np.int64)
        block[:, k] = extra
        rows = np.vstack([rows, block])
        sums = np.vstack([sums, new[extra]])
        counts = np.concatenate([counts, np.ones(len(extra))])
    return rows


def _match_coordinates(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    p = p.reshape(len(p), -1) if p.size else np.zeros((0, 2))
    if p.shape[1] == 3:
        p = p.copy()
        p[:, 0] = np.round(p[:, 0]) * _FRAME_WEIGHT
    return p


def _nn_distance(points: Sequence[np.ndarray]) -> float:
    """Median nearest-neighbour distance (pixels) over the annotators' items (1.0 when undefined)."""
    from scipy.spatial import cKDTree

    values = []
    for p in points:
        p = _match_coordinates(p)
        if len(p) >= 2:
            d, _ = cKDTree(p).query(p, k=2)
            values.append(d[:, 1][(d[:, 1] > 0) & (d[:, 1] < _FRAME_WEIGHT / 2)])
    d = np.concatenate(values) if values else np.zeros(0)
    return float(np.median(d)) if d.size else 1.0


@dataclass
class Votes:
    """The annotators' labels of one kind of item (sites or cells), matched by position.

    Attributes
    ----------
    kind : {'sites', 'cells'}
    annotators : list of str
    rows : ndarray of int, shape (M, K)
        Each annotator's row for each matched item (-1: none).
    positions : ndarray, shape (M, 2) or (M, 3)
        Mean position (pixels) of each item (cells: of their centres).
    labels : ndarray of object, shape (M, K)
        Each annotator's label, :data:`ABSENT` where they have no item.
    categories : list of str
    counts : ndarray of int, shape (M, C)
    majority : ndarray of object, shape (M,)
    votes : ndarray of int, shape (M,)
        Annotators who gave the majority label.
    tie : ndarray of bool, shape (M,)
    n_verified : ndarray of int, shape (M,)
        Annotators whose row was marked verified.
    kappa : Kappa or None
        Fleiss' kappa (None for fewer than one item).
    tolerance_px : float
        The matching distance used.
    """

    kind: str
    annotators: list[str]
    rows: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    categories: list[str]
    counts: np.ndarray
    majority: np.ndarray
    votes: np.ndarray
    tie: np.ndarray
    n_verified: np.ndarray
    kappa: Kappa | None
    tolerance_px: float

    @property
    def unanimous(self) -> np.ndarray:
        """True where every annotator gave the same label."""
        return self.votes == len(self.annotators)

    def trusted(self, min_votes: int) -> np.ndarray:
        """Items with a label (not :data:`ABSENT`) given by at least ``min_votes`` annotators, not tied."""
        return (self.votes >= min_votes) & ~self.tie & (self.majority != ABSENT)


def _centres(layer: LayerAnnotation) -> np.ndarray:
    data = np.asarray(layer.data, dtype=float)
    return data.mean(axis=1) if data.ndim == 3 else data


def item_votes(kind: str, layers: Sequence[LayerAnnotation], annotators: Sequence[str],
               tolerance_nn: float = TOLERANCE_NN) -> Votes:
    """Match one kind of item across annotators and count their labels.

    Parameters
    ----------
    kind : {'sites', 'cells'}
    layers : sequence of LayerAnnotation
        Each annotator's layer of that kind.
    annotators : sequence of str
    tolerance_nn : float
        Matching distance as a fraction of the nearest-neighbour distance.
    """
    column = LABEL_COLUMN[kind]
    for name, layer in zip(annotators, layers):
        if len(layer.features) and column not in layer.features:
            raise ConsensusError(f"{name}'s {kind} have no {column!r} column to vote with")
    points = [_centres(layer) for layer in layers]
    tolerance = tolerance_nn * _nn_distance(points)
    rows = match_positions(points, tolerance)
    m, k_all = rows.shape
    labels = np.full((m, k_all), ABSENT, dtype=object)
    verified = np.zeros((m, k_all), bool)
    sums = np.zeros((m, points[0].shape[1] if points[0].ndim == 2 and points[0].size else 2))
    present = rows >= 0
    for k, layer in enumerate(layers):
        have = np.flatnonzero(present[:, k])
        r = rows[have, k]
        feats = layer.features
        labels[have, k] = feats[column].astype(str).to_numpy()[r] if len(r) else []
        if "verified" in feats and len(r):
            verified[have, k] = feats["verified"].to_numpy(bool)[r]
        if len(r) and points[k].shape[1] == sums.shape[1]:
            sums[have] += points[k][r]
    positions = sums / np.maximum(present.sum(axis=1), 1)[:, None]
    categories, counts = vote_counts(labels)
    majority, votes, tie = majority_labels(labels, categories, counts, avoid=ABSENT)
    kappa = fleiss_kappa(counts, categories) if m else None
    return Votes(kind=kind, annotators=list(annotators), rows=rows, positions=positions, labels=labels,
                 categories=categories, counts=counts, majority=majority, votes=votes, tie=tie,
                 n_verified=verified.sum(axis=1), kappa=kappa, tolerance_px=float(tolerance))


@dataclass
class Consensus:
    """Several annotators' files of one image, merged.

    Attributes
    ----------
    annotators : list of str
    sites, cells : Votes or None
        None when no annotator has that kind of layer.
    annotations : Annotations
        The consensus file's content (see the module notes).
    min_votes : int
        Agreeing votes a label needs to be trusted (``verified``).
    """

    annotators: list[str]
    sites: Votes | None
    cells: Votes | None
    annotations: Annotations
    min_votes: int

    def votes(self) -> list[Votes]:
        """The sites' and cells' votes, those present."""
        return [v for v in (self.sites, self.cells) if v is not None]


def build_consensus(anns: Sequence[Annotations], annotators: Sequence[str] | None = None,
                    min_votes: int | None = None, tolerance_nn: float = TOLERANCE_NN) -> Consensus:
    """Merge several annotators' annotations of one image (see the module notes).

    Parameters
    ----------
    anns : sequence of Annotations
        At least two, of the same image (:func:`load_annotator_files` checks).
    annotators : sequence of str, optional
        Their names (default :func:`annotator_names`).
    min_votes : int, optional
        Agreeing votes a label needs to be trusted; default a strict majority (2 of 3, 3 of 4...).
    tolerance_nn : float
        Matching distance as a fraction of the nearest-neighbour distance.

    Raises
    ------
    ConsensusError
        Fewer than two annotators, ``min_votes`` outside 1..annotators, or nothing to vote on.
    """
    anns = list(anns)
    if len(anns) < 2:
        raise ConsensusError(f"consensus needs at least two annotators, not {len(anns)}")
    names = list(annotators) if annotators is not None else annotator_names(anns)
    k_all = len(anns)
    min_votes = k_all // 2 + 1 if min_votes is None else int(min_votes)
    if not 1 <= min_votes <= k_all:
        raise ConsensusError(f"min_votes must lie between 1 and the {k_all} annotators, not {min_votes}")
    votes: dict[str, Votes | None] = {}
    layers: dict[str, LayerAnnotation | None] = {}
    for kind in ("sites", "cells"):
        own = [getattr(ann, kind) for ann in anns]
        if all(layer is None for layer in own):
            votes[kind] = layers[kind] = None
            continue
        template = next(layer for layer in own if layer is not None)
        own = [layer if layer is not None else _empty_like(template) for layer in own]
        votes[kind] = item_votes(kind, own, names, tolerance_nn)
        layers[kind] = _consensus_layer(votes[kind], own, min_votes, anns[0].image.scale)
    if votes["sites"] is None and votes["cells"] is None:
        raise ConsensusError("none of the files holds sites or cells to vote on")
    first = anns[0]
    material = next((a.material for a in anns if a.material), None)
    merged = Annotations(image=first.image, material=material, sites=layers["sites"], cells=layers["cells"],
                         saved_by=consensus_author(names))
    return Consensus(annotators=names, sites=votes["sites"], cells=votes["cells"], annotations=merged,
                     min_votes=min_votes)


def consensus_author(annotators: Sequence[str]) -> str:
    """The ``saved_by`` of a consensus file: ``"consensus of alice, bob, carol"``."""
    return "consensus of " + ", ".join(annotators)


def _empty_like(layer: LayerAnnotation) -> LayerAnnotation:
    data = np.zeros((0, *np.asarray(layer.data).shape[1:]), dtype=float)
    return LayerAnnotation(layer.kind, layer.name, data, layer.features.iloc[:0].copy(), dict(layer.metadata))


def _consensus_layer(votes: Votes, layers: Sequence[LayerAnnotation], min_votes: int,
                     scale: Sequence[float]) -> LayerAnnotation:
    """The merged layer: kept items, each from its first annotator's row, relabelled by the vote."""
    keep = np.flatnonzero(votes.majority != ABSENT)
    owner = np.argmax(votes.rows[keep] >= 0, axis=1)
    parts, data_parts, order = [], [], []
    for k, layer in enumerate(layers):
        mine = keep[owner == k]
        if not mine.size:
            continue
        r = votes.rows[mine, k]
        parts.append(layer.features.iloc[r].reset_index(drop=True))
        data_parts.append(np.asarray(layer.data, dtype=float)[r])
        order.append(mine)
    template = layers[0]
    if parts:
        sequence = np.argsort(np.concatenate(order), kind="stable")
        features = _stack(parts).iloc[sequence].reset_index(drop=True)
        data = np.concatenate(data_parts)[sequence]
    else:
        features = template.features.iloc[:0].copy()
        data = np.zeros((0, *np.asarray(template.data).shape[1:]))
    kept = np.sort(keep)
    features[LABEL_COLUMN[votes.kind]] = votes.majority[kept].astype(str)
    agreement = votes.votes[kept] / len(votes.annotators)
    trusted = votes.trusted(min_votes)[kept]
    features["votes"] = votes.votes[kept].astype(np.int64)
    features["agreement"] = agreement.astype(float)
    features["unanimous"] = votes.unanimous[kept]
    features["verified"] = trusted
    features["confidence" if votes.kind == "cells" else "probability"] = agreement.astype(float)
    if "source" in features or trusted.any():
        source = features["source"].astype(object) if "source" in features else pd.Series([None] * len(features))
        features["source"] = np.where(trusted, SOURCE_HUMAN, source.to_numpy(object))
    if votes.kind == "sites" and len(data):
        data = votes.positions[kept].copy()
        features = sync_positions(features, data, scale)
    metadata = dict(template.metadata)
    metadata["consensus"] = {"annotators": list(votes.annotators), "min_votes": int(min_votes),
                             "tolerance_px": votes.tolerance_px}
    return LayerAnnotation(votes.kind, template.name, np.asarray(data, dtype=float), features, metadata)


def _stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of several annotators' tables in one table; ids and flags a table lacked become -1 / False."""
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].copy()
    for name in out.columns:
        kinds = {p[name].dtype.kind for p in parts if name in p}
        missing = out[name].isna()
        if kinds <= set("iu") and kinds and out[name].dtype.kind not in "iu":
            out[name] = out[name].where(~missing, -1).astype(np.int64)
        elif kinds == {"b"} and out[name].dtype.kind != "b":
            out[name] = out[name].where(~missing, False).astype(bool)
    return out
