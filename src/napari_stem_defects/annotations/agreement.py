"""Agreement between annotators: votes per item, the majority label, and Fleiss' kappa.

Plain functions on label arrays (one row per item, one column per annotator);
:mod:`.consensus` builds those arrays from annotation files.

Fleiss' kappa (Fleiss 1971, *Psychological Bulletin* 76, 378) for ``N`` items
each rated by ``n`` annotators into categories ``j``, with ``n_ij`` the
annotators who put item ``i`` in category ``j``:

* ``P_i = (sum_j n_ij**2 - n) / (n (n - 1))``, the agreement on item ``i``;
* ``p_j = sum_i n_ij / (N n)``, the share of all labels in category ``j``;
* ``kappa = (mean(P_i) - sum_j p_j**2) / (1 - sum_j p_j**2)``;
* per category: ``kappa_j = 1 - sum_i n_ij (n - n_ij) / (N n (n - 1) p_j (1 - p_j))``.

Examples
--------
>>> labels = np.array([["Mo", "Mo", "Mo"], ["W", "W", "Mo"], ["S2", "S2", "S2"]], dtype=object)
>>> categories, counts = vote_counts(labels)
>>> categories, counts.tolist()
(['Mo', 'S2', 'W'], [[3, 0, 0], [1, 0, 2], [0, 3, 0]])
>>> majority_labels(labels, categories, counts)[0].tolist()
['Mo', 'W', 'S2']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Kappa", "fleiss_kappa", "majority_labels", "vote_counts"]


def vote_counts(labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The categories used and how many annotators gave each item each of them.

    Parameters
    ----------
    labels : ndarray of str, shape (N, K)
        Label of item ``i`` by annotator ``k``.

    Returns
    -------
    categories : list of str
        Sorted.
    counts : ndarray of int, shape (N, C)
        ``counts[i, j]``: annotators who gave item ``i`` category ``j``; each row sums to ``K``.
    """
    labels = np.asarray(labels, dtype=object)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a table of items x annotators, not shape {labels.shape}")
    categories = sorted({str(v) for v in labels.ravel()})
    index = {c: j for j, c in enumerate(categories)}
    codes = np.array([[index[str(v)] for v in row] for row in labels], dtype=np.int64).reshape(labels.shape)
    counts = np.zeros((labels.shape[0], len(categories)), dtype=np.int64)
    for k in range(labels.shape[1]):
        np.add.at(counts, (np.arange(labels.shape[0]), codes[:, k]), 1)
    return categories, counts


def majority_labels(labels: np.ndarray, categories: list[str], counts: np.ndarray,
                    avoid: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The label most annotators gave each item, its number of votes, and whether it was a tie.

    A tie is broken by the annotators' order (the first annotator's label among
    the tied ones), never in favour of ``avoid`` when another label is tied with it.

    Parameters
    ----------
    labels : ndarray of str, shape (N, K)
        As for :func:`vote_counts`.
    categories, counts
        :func:`vote_counts` of ``labels``.
    avoid : str, optional
        A label that loses ties (e.g. "absent").

    Returns
    -------
    majority : ndarray of object, shape (N,)
    votes : ndarray of int, shape (N,)
        Annotators who gave the majority label.
    tie : ndarray of bool, shape (N,)
        True when another label had as many votes.
    """
    labels = np.asarray(labels, dtype=object)
    n = counts.shape[0]
    votes = counts.max(axis=1) if counts.size else np.zeros(n, np.int64)
    tie = (counts == votes[:, None]).sum(axis=1) > 1 if counts.size else np.zeros(n, bool)
    majority = np.empty(n, dtype=object)
    index = {c: j for j, c in enumerate(categories)}
    for i in range(n):
        tied = [str(v) for v in labels[i] if counts[i, index[str(v)]] == votes[i]]
        preferred = [v for v in tied if v != avoid]
        majority[i] = (preferred or tied)[0]
    return majority, votes.astype(np.int64), tie


@dataclass
class Kappa:
    """Fleiss' kappa of a set of items, overall and per category.

    Attributes
    ----------
    overall : float
        Fleiss' kappa (NaN when undefined: every label in one category).
    per_category : dict of str to float
        Fleiss' per-category kappa (NaN for a category nobody or everybody used).
    share : dict of str to float
        ``p_j``, the share of all labels in each category.
    observed, expected : float
        Mean observed agreement ``mean(P_i)`` and chance agreement ``sum p_j**2``.
    n_items, n_raters : int
    """

    overall: float
    per_category: dict[str, float]
    share: dict[str, float]
    observed: float
    expected: float
    n_items: int
    n_raters: int


def fleiss_kappa(counts: np.ndarray, categories: list[str] | None = None) -> Kappa:
    """Fleiss' kappa from a table of counts (items x categories), overall and per category.

    Parameters
    ----------
    counts : array of int, shape (N, C)
        Annotators per item and category; every row must sum to the same number of annotators (>= 2).
    categories : list of str, optional
        Names of the columns (default ``"0"``, ``"1"``...).

    Returns
    -------
    Kappa

    Raises
    ------
    ValueError
        Rows of different totals, fewer than two annotators, negative counts, or no items.

    Examples
    --------
    >>> k = fleiss_kappa(np.array([[2, 0], [0, 2], [1, 1]]), ["a", "b"])
    >>> round(k.overall, 4), round(k.per_category["a"], 4)
    (0.3333, 0.3333)
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("Fleiss' kappa needs at least one item (a table of items x categories)")
    if (counts < 0).any():
        raise ValueError("counts cannot be negative")
    totals = counts.sum(axis=1)
    n = int(totals[0])
    if (totals != n).any():
        raise ValueError(f"every item needs the same number of annotators; the rows sum to "
                         f"{sorted(set(totals.tolist()))}")
    if n < 2:
        raise ValueError(f"agreement needs at least two annotators, not {n}")
    names = [str(j) for j in range(counts.shape[1])] if categories is None else [str(c) for c in categories]
    c = counts.astype(float)
    n_items = counts.shape[0]
    p_i = ((c * c).sum(axis=1) - n) / (n * (n - 1))
    p_j = c.sum(axis=0) / (n_items * n)
    observed, expected = float(p_i.mean()), float((p_j * p_j).sum())
    overall = (observed - expected) / (1.0 - expected) if expected < 1.0 else float("nan")
    disagreement = (c * (n - c)).sum(axis=0)
    spread = n_items * n * (n - 1) * p_j * (1.0 - p_j)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(spread > 0, 1.0 - disagreement / np.where(spread > 0, spread, 1.0), np.nan)
    return Kappa(overall=float(overall), per_category={k: float(v) for k, v in zip(names, per)},
                 share={k: float(v) for k, v in zip(names, p_j)}, observed=observed, expected=expected,
                 n_items=int(n_items), n_raters=n)
