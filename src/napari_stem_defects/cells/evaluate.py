"""How well *could* a cell be classified? An ideal observer for single chalcogen vacancies.

A one-atom vacancy in an X2 column (V_X1) is the faintest defect of the cell
classes: the column loses one chalcogen's worth of signal. Whether a
classifier's V_X1 score is poor because the classifier is weak or because the
image does not hold the information is answered here with an *ideal
observer*: it knows the twin's noise-free image (probe, neighbours, background,
amorphous texture) and only has to decide, from the recorded counts around
the X2 column, between the column's possible perfect contents and its
possible one-atom contents, by the Poisson likelihood ratio. No classifier
that sees the same image can beat it on average, so its F1 is an upper
bound for the V_X1 class (benchmarks/bench_cells.py reports it beside the CNN).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from ..columns.species import candidates
from ..materials import ATOMIC_NUMBER
from ..simulate.imaging import render
from ..simulate.twin import DigitalTwin


def x_column_hypotheses(material) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """Contents of a perfect X2 column and of a one-atom (V_X1) column, with their weights.

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> perfect, single = x_column_hypotheses(parse_material("MoWSSe"))
    >>> sorted(perfect), sorted(single)
    ([('S', 'S'), ('S', 'Se'), ('Se', 'Se')], [('S',), ('Se',)])
    """
    perfect = {els: float(w) for _, els, w in candidates(material, "X") if len(els) == 2 and w > 0}
    total = sum(perfect.values())
    perfect = {k: v / total for k, v in perfect.items()}
    shares = {el: float(f) for el, f in material.chalcogens.items() if f > 0}
    single = {(el,): f / sum(shares.values()) for el, f in shares.items()}
    return perfect, single


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
    im = twin.imaging
    if im.dose is None:
        raise ValueError("the ideal observer needs a twin recorded with a finite dose")
    nn = twin.nn_px
    perfect, single = x_column_hypotheses(twin.material)
    zsum = {k: sum(ATOMIC_NUMBER[e] ** im.gamma for e in k) for k in {**perfect, **single}}
    counts = (twin.image.astype(np.float64) - im.offset) / im.gain
    expected = twin.expected.astype(np.float64)
    quiet = dataclasses.replace(im, background=0.0, background_variation=0.0, texture=0.0, line_jitter=0.0,
                                dose=None)
    sites = twin.sites.set_index("site_id")
    cells = twin.cells[twin.cells["class"].isin(["perfect", "V_X1"]) & (twin.cells["x_site_id"] >= 0)
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
        unit, _ = render(np.array([[y - (y0 - r), x - (x0 - r)]]), np.array([im.cross_section]),
                         (2 * r + 1, 2 * r + 1), twin.pixel_size, quiet, rng)
        unit = unit.astype(np.float64) * im.dose * twin.pixel_size**2  # counts per unit of sum Z**gamma
        base = expected[window] - float(sites.at[sid, "cross_section_A2"]) / im.cross_section * unit
        c = counts[window]

        def loglik(key: tuple[str, ...]) -> float:
            e = np.maximum(base + zsum[key] * unit, 1e-9)
            return float(np.sum(c * np.log(e) - e))

        lp = logsumexp([loglik(k) + np.log(v) for k, v in perfect.items()])
        lv = logsumexp([loglik(k) + np.log(v) for k, v in single.items()])
        rows.append((int(cell_id), cls, lv - lp))
    return pd.DataFrame(rows, columns=["cell_id", "class", "llr"])


def ideal_vx1_f1(evidence: pd.DataFrame) -> float:
    """F1 of the ideal observer for V_X1 when it knows how rare V_X1 is.

    The decision threshold is the log of (perfect cells / V_X1 cells), the
    Bayes rule for the cells' own class shares.

    Examples
    --------
    >>> ev = pd.DataFrame({"class": ["perfect"] * 8 + ["V_X1"] * 2, "llr": [-9.0] * 7 + [5.0] + [9.0, 1.0]})
    >>> round(ideal_vx1_f1(ev), 3)
    0.5
    """
    vx1 = evidence["class"].to_numpy() == "V_X1"
    if not vx1.any():
        return float("nan")
    n_perfect = max(int((~vx1).sum()), 1)
    called = evidence["llr"].to_numpy() > np.log(n_perfect / vx1.sum())
    tp = int((called & vx1).sum())
    return 2 * tp / max(2 * tp + int((called & ~vx1).sum()) + int((~called & vx1).sum()), 1)

