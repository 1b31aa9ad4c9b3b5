"""How well *could* a cell be classified? Ideal observers for the faintest distinctions.

A one-atom vacancy in an X2 column (V_X1) is the faintest defect of the cell
classes: the column loses one chalcogen's worth of signal. A metal antisite
(M_X) and a substituted chalcogen (sub_X) both brighten the X2 column and
differ only through the Z exponent. Whether a classifier's score on them is
poor because the classifier is weak or because the image does not hold the
information is answered here with an *ideal observer*: it knows the twin's
noise-free image (probe, neighbours, background, amorphous texture) and only
has to decide, from the recorded counts around the X2 column, between the
column's possible contents under one class and under the other, by the
Poisson likelihood ratio. No classifier that sees the same image can beat it
on average, so its F1 is an upper bound for those classes
(benchmarks/bench_cells.py reports it beside the CNN).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from ..columns.species import candidates, components
from ..simulate.defects import elements_content
from ..simulate.imaging import content_cross_section, render
from ..simulate.twin import DigitalTwin


def x_column_hypotheses(material) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """Contents of a perfect X2 column and of a one-atom (V_X1) column, with their weights.

    A mixed pair counts in both orders (:func:`~napari_stem_defects.columns.species.components`).

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> perfect, single = x_column_hypotheses(parse_material("MoWSSe"))
    >>> sorted(perfect), sorted(single)
    ([('S', 'S'), ('S', 'Se'), ('Se', 'S'), ('Se', 'Se')], [('S',), ('Se',)])
    """
    perfect = {els: float(w) for _, els, w in components(candidates(material, "X"))[0] if len(els) == 2 and w > 0}
    total = sum(perfect.values())
    perfect = {k: v / total for k, v in perfect.items()}
    shares = {el: float(f) for el, f in material.chalcogens.items() if f > 0}
    single = {(el,): f / sum(shares.values()) for el, f in shares.items()}
    return perfect, single


def column_contents(species: str) -> tuple[str, ...]:
    """Elements of a column from its species string (:func:`~napari_stem_defects.simulate.defects.species_string`).

    Examples
    --------
    >>> column_contents("SSe"), column_contents("Se2"), column_contents("Mo"), column_contents("")
    (('S', 'Se'), ('Se', 'Se'), ('Mo',), ())
    """
    return tuple(el for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", species) for _ in range(int(n or 1)))


def _x_column_evidence(twin: DigitalTwin, hypotheses: dict[str, dict[tuple[str, ...], float]],
                       radius_nn: float) -> pd.DataFrame:
    """Log-likelihood of each class's X2-column contents for the cells of those classes.

    ``hypotheses`` maps two cell classes to the contents their X2 column may
    hold, with weights; ``llr`` is log p(counts | second class) - log p(counts | first).
    """
    im = twin.imaging
    if im.dose is None:
        raise ValueError("the ideal observer needs a twin recorded with a finite dose")
    (first, h_first), (second, h_second) = hypotheses.items()
    nn = twin.nn_px
    # each hypothesis's cross-section under the twin's own column model (table or Z**gamma)
    sigma = {k: content_cross_section(elements_content(k), im)
             for h in hypotheses.values() for k in h}
    counts = (twin.image.astype(np.float64) - im.offset) / im.gain
    expected = twin.expected.astype(np.float64)
    quiet = dataclasses.replace(im, background=0.0, background_variation=0.0, texture=0.0, line_jitter=0.0,
                                dose=None)
    sites = twin.sites.set_index("site_id")
    cells = twin.cells[twin.cells["class"].isin([first, second]) & (twin.cells["x_site_id"] >= 0)
                       & (twin.cells["m_site_id"] >= 0)]
    r = int(np.ceil(radius_nn * nn))
    h, w = counts.shape
    rng = np.random.default_rng(0)  # render needs one; nothing random is drawn with `quiet`
    rows = []
    for cell_id, cls, sid in zip(cells["cell_id"], cells["class"], cells["x_site_id"]):
        y, x = float(sites.at[sid, "y_px"]), float(sites.at[sid, "x_px"])
        y0, x0 = int(round(y)), int(round(x))
        if y0 - r < 0 or x0 - r < 0 or y0 + r >= h or x0 + r >= w:
            continue
        window = (slice(y0 - r, y0 + r + 1), slice(x0 - r, x0 + r + 1))
        unit, _ = render(np.array([[y - (y0 - r), x - (x0 - r)]]), np.array([1.0]),
                         (2 * r + 1, 2 * r + 1), twin.pixel_size, quiet, rng)
        unit = unit.astype(np.float64) * im.dose * twin.pixel_size**2  # counts per Å^2 of cross-section
        base = expected[window] - float(sites.at[sid, "cross_section_A2"]) * unit
        c = counts[window]

        def loglik(key: tuple[str, ...]) -> float:
            e = np.maximum(base + sigma[key] * unit, 1e-9)
            return float(np.sum(c * np.log(e) - e))

        lp = logsumexp([loglik(k) + np.log(v) for k, v in h_first.items()])
        lv = logsumexp([loglik(k) + np.log(v) for k, v in h_second.items()])
        rows.append((int(cell_id), cls, lv - lp))
    return pd.DataFrame(rows, columns=["cell_id", "class", "llr"])


def ideal_vx1_evidence(twin: DigitalTwin, radius_nn: float = 1.2) -> pd.DataFrame:
    """Ideal observer's evidence for V_X1 against perfect, for each perfect or V_X1 cell of a twin.

    Parameters
    ----------
    twin : DigitalTwin
        A twin recorded with a finite dose.
    radius_nn : float
        Half width of the square window around the X2 column used, in units of
        the metal to chalcogen distance.

    Returns
    -------
    DataFrame
        One row per complete, fully inside cell of class perfect or V_X1:
        ``cell_id``, ``class`` and ``llr`` = log p(counts | one-atom column) -
        log p(counts | perfect column), each side a mixture over the
        contents the material allows (:func:`x_column_hypotheses`).
    """
    perfect, single = x_column_hypotheses(twin.material)
    return _x_column_evidence(twin, {"perfect": perfect, "V_X1": single}, radius_nn)


def ideal_antisite_evidence(twin: DigitalTwin, radius_nn: float = 1.2) -> pd.DataFrame:
    """Ideal observer's evidence for a substituted chalcogen (sub_X) against a metal antisite (M_X).

    Both put something brighter than a normal X2 column on the chalcogen site:
    a metal atom (M_X) or a heavier chalcogen in one of the two places (sub_X).
    Their intensities differ only through the Z exponent (in MoS2, Mo and S+Se
    are equally bright at an exponent of 1.4). The observer knows the contents
    the twin's own M_X and sub_X columns hold (with their shares in the twin)
    and the noise-free image around them.

    Returns
    -------
    DataFrame
        One row per complete, fully inside cell of class M_X or sub_X:
        ``cell_id``, ``class`` and ``llr`` = log p(counts | sub_X) - log p(counts | M_X);
        empty when the twin lacks either class.
    """
    species = twin.sites.set_index("site_id")["species"]
    hyps: dict[str, dict[tuple[str, ...], float]] = {}
    for cls in ("M_X", "sub_X"):
        ids = twin.cells.loc[(twin.cells["class"] == cls) & (twin.cells["x_site_id"] >= 0), "x_site_id"]
        contents = pd.Series([column_contents(species.at[i]) for i in ids], dtype=object).value_counts(normalize=True)
        if contents.empty:
            return pd.DataFrame(columns=["cell_id", "class", "llr"])
        hyps[cls] = {tuple(k): float(v) for k, v in contents.items()}
    return _x_column_evidence(twin, hyps, radius_nn)


def ideal_pair_f1(evidence: pd.DataFrame, positive: str) -> float:
    """F1 of the ideal observer for class ``positive`` against the other class of ``evidence``.

    ``evidence["llr"]`` is the log-likelihood ratio for ``positive``; the decision
    threshold is the log of (other cells / ``positive`` cells), the Bayes rule
    for the cells' own class shares.

    Examples
    --------
    >>> ev = pd.DataFrame({"class": ["perfect"] * 8 + ["V_X1"] * 2, "llr": [-9.0] * 7 + [5.0] + [9.0, 1.0]})
    >>> round(ideal_pair_f1(ev, "V_X1"), 3)
    0.5
    """
    pos = evidence["class"].to_numpy() == positive
    if not pos.any():
        return float("nan")
    n_other = max(int((~pos).sum()), 1)
    called = evidence["llr"].to_numpy() > np.log(n_other / pos.sum())
    tp = int((called & pos).sum())
    return 2 * tp / max(2 * tp + int((called & ~pos).sum()) + int((~called & pos).sum()), 1)


def ideal_vx1_f1(evidence: pd.DataFrame) -> float:
    """F1 of the ideal observer for V_X1 when it knows how rare V_X1 is (:func:`ideal_pair_f1`)."""
    return ideal_pair_f1(evidence, "V_X1")
