"""The context classifier's column types, weighed by the stated composition and by the image's own fit.

The classifier (:mod:`.context_classifier`) gives each metal and X2 column a type probability (host,
dopant, single, empty, antisite; :data:`~.context_vector.COLUMN_TYPES`). Before they become species
posteriors, the types are re-weighted by the composition the user states (:func:`stated_types`) and held
to the populations the image's Z-contrast fit shows (:func:`image_supported_types`); then each type's
probability is spread over its contents by the fit, and the fit's likelihood of the type counts in part
(:func:`context_posteriors`). Plain functions on tables: no torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..materials import Material
from .context_vector import COLUMN_TYPES, SUBLATTICE_TYPES, column_type  # noqa: F401 (COLUMN_TYPES: the doctests)
from .species import host_labels

#: Power at which the image's own Z-contrast likelihood of each column type joins the classifier's type
#: probabilities (:func:`context_posteriors`): the classifier sees the same intensity, so the fit's
#: evidence counts in part.
INTENSITY_EVIDENCE: float = 0.2
#: Smallest likelihood of a type, relative to the likeliest one of its site, that
#: :func:`context_posteriors` lets the fit give (a type the fit's mixture has no room for is not ruled out).
_LIKELIHOOD_FLOOR: float = 1e-12

def _label_types(table: pd.DataFrame, sub: str, material: Material) -> np.ndarray:
    """The column type (:data:`~.context_vector.COLUMN_TYPES`) of each species label of a posterior table."""
    hosts = host_labels(material, sub)
    return np.array([column_type(str(label), sub, hosts, material) for label in table.columns])


def context_posteriors(posteriors: dict[str, pd.DataFrame], types: pd.DataFrame, material: Material,
                       fit_weights: dict[str, np.ndarray] | None = None) -> dict[str, pd.DataFrame]:
    """Species posteriors whose type shares are the classifier's, weighed by the image's own evidence.

    For each site of the 'M' and 'X' posteriors, P(label) is proportional to P(type of label) x the
    intensity posterior of the label among the labels of its type (uniform among them where the
    intensity gives them nothing) x, given the fit's mixture weights (``fit_weights``), the fit's
    likelihood of that type at the site to the power :data:`INTENSITY_EVIDENCE`. The likelihood of a
    type is its labels' summed posterior over their summed weight: how well the type explains the
    column's intensity, free of how common the fit found it (the classifier is trained class-balanced;
    the stated composition's odds come in through :func:`stated_types`). The classifier sees the same
    intensity (the A_00 of its contrast), so the fit counts at a fifth: enough that a column whose
    intensity sits several widths below the host's pair, on a lone atom, is not read as the pair
    because the classifier, trained on twins of another microscope, leans that way (lone S in a
    MoWS2 alloy at 80 kV); too little to overrule the classifier between types that scatter alike,
    which is what it is for. The type of an atom the user states (``dopant`` on its sublattice, as
    ``MoSe2+W``) is not weighed by the fit, as in :func:`image_supported_types`: where the microscope is
    not known the fit cannot place it (at 60 kV W scatters like an Se2 pair on a Mo site, where
    ``Z**gamma`` puts it far above). Sites the classifier did not see, and other fits ('X1T'), keep theirs.

    Parameters
    ----------
    posteriors : dict of DataFrame
        The Z-contrast species posteriors per fit ('M', 'X', ...; index site_id, one column per species).
    types : DataFrame
        The classifier's type probabilities (index site_id, columns :data:`~.context_vector.COLUMN_TYPES`).
    material : Material
    fit_weights : dict of ndarray, optional
        Per fit, the mixture weight of each species (in the posterior table's column order). Without
        them the classifier's type shares are taken as they are.

    Returns
    -------
    dict of DataFrame
        The posteriors, 'M' and 'X' replaced.

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> post = {"X": pd.DataFrame({"S": [0.1], "S2": [0.8], "SSe": [0.1], "Se2": [0.0]}, index=[7])}
    >>> types = pd.DataFrame([[0.2, 0.7, 0.1, 0.0, 0.0]], index=[7], columns=list(COLUMN_TYPES))
    >>> out = context_posteriors(post, types, parse_material("MoS2"))["X"].round(2)
    >>> out.loc[7].to_dict()
    {'S': 0.1, 'S2': 0.2, 'SSe': 0.7, 'Se2': 0.0}

    A column the classifier leans to call the host's S2 pair, whose intensity the fit places on a lone
    S (posterior 0.99 although lone S are 2 % of the columns):

    >>> post = {"X": pd.DataFrame({"S": [0.99], "S2": [0.01]}, index=[3])}
    >>> types = pd.DataFrame([[0.7, 0.0, 0.3, 0.0, 0.0]], index=[3], columns=list(COLUMN_TYPES))
    >>> out = context_posteriors(post, types, parse_material("MoS2"), {"X": np.array([0.02, 0.98])})
    >>> out["X"].loc[3].round(2).to_dict()
    {'S': 0.7, 'S2': 0.3}
    """
    from ..composition import stated_type_weights

    out = dict(posteriors)
    for sub in ("M", "X"):
        table = posteriors.get(sub)
        if table is None or table.empty:
            continue
        kinds = _label_types(table, sub, material)
        seen = table.index.intersection(types.index)
        if not len(seen):
            continue
        old = table.loc[seen].to_numpy(float)
        p_type = types.loc[seen]
        weights = None if fit_weights is None else fit_weights.get(sub)
        weights = None if weights is None or len(weights) != table.shape[1] else np.asarray(weights, float)
        new = np.zeros_like(old)
        likelihood = {}
        for kind in np.unique(kinds):
            cols = kinds == kind
            block = old[:, cols]
            total = block.sum(axis=1, keepdims=True)
            share = np.where(total > 0, block / np.where(total > 0, total, 1.0), 1.0 / cols.sum())
            new[:, cols] = share * p_type[kind].to_numpy()[:, None]
            if weights is not None:  # the posteriors were made with weights floored at 1e-300 (species_em)
                likelihood[kind] = total[:, 0] / max(float(weights[cols].sum()), 1e-300)
        if likelihood:
            top = np.max(np.column_stack(list(likelihood.values())), axis=1)
            top = np.where(top > 0, top, 1.0)
            stated = stated_type_weights(material, sub)
            for kind, lik in likelihood.items():
                if kind == "dopant" and stated:  # a stated atom the fit may not place (as image_supported_types)
                    continue
                new[:, kinds == kind] *= np.maximum(lik / top, _LIKELIHOOD_FLOOR)[:, None] ** INTENSITY_EVIDENCE
        norm = new.sum(axis=1, keepdims=True)
        new = np.where(norm > 0, new / np.where(norm > 0, norm, 1.0), old)
        updated = table.copy()
        updated.loc[seen] = new
        out[sub] = updated
    return out


def stated_types(types: pd.DataFrame, posteriors: dict[str, pd.DataFrame], material: Material) -> pd.DataFrame:
    """Column-type probabilities re-weighted by the composition the user states, renormalised.

    The classifier is trained class-balanced, so between two types the pixels cannot tell apart
    (a V atom and an S2 pair on a Mo site at 80 kV scatter within 8 % of each other) it has no
    preference of its own. A stated foreign atom (``MoS2+V``) supplies it, with the same odds as
    the cell classes (:func:`~napari_stem_defects.composition.stated_type_weights`). The 'M' and
    'X' posterior tables name which sites belong to which sublattice.

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> post = {"M": pd.DataFrame({"Mo": [0.5], "V": [0.2], "S2": [0.3]}, index=[4])}
    >>> types = pd.DataFrame([[0.1, 0.4, 0.0, 0.5]], index=[4], columns=["host", "dopant", "empty", "antisite"])
    >>> stated_types(types, post, parse_material("MoS2+V")).loc[4].round(3).tolist()
    [0.068, 0.818, 0.0, 0.114]
    """
    from ..composition import stated_type_weights

    out = types.copy()
    for sub in ("M", "X"):
        weights = stated_type_weights(material, sub)
        table = posteriors.get(sub)
        if not weights or table is None:
            continue
        ids = table.index.intersection(out.index)
        block = out.loc[ids]
        for kind, w in weights.items():
            if kind in block:
                block[kind] *= w
        out.loc[ids] = block.div(block.sum(axis=1).where(lambda v: v > 0, 1.0), axis=0)
    return out


#: A non-host column type the classifier gives at least this share of a sublattice's columns must show
#: in the image's own Z-contrast fit (:func:`image_supported_types`).
SUPPORT_SHARE: float = 0.06


def image_supported_types(types: pd.DataFrame, posteriors: dict[str, pd.DataFrame], material: Material,
                          min_share: float = SUPPORT_SHARE) -> pd.DataFrame:
    """Column-type probabilities held to what the image's own Z-contrast fit shows, renormalised.

    The classifier learnt contrast from twins; a real image whose columns differ from every twin
    (scan noise, thickness, contamination, a detector unlike any in training) can make it give
    a non-host type (a lost atom, a substitution) to many columns that form one intensity
    population. The Z-contrast mixture of the same image (``posteriors``, calibrated on its
    perfect majority, :func:`~.species.fit_species_physics`) is the check, as
    :func:`~napari_stem_defects.cells.classify.image_support` is for the cell network: per
    sublattice, when the classifier's summed probability of a non-host type reaches ``min_share``
    of the columns and exceeds the fit's summed posterior of that type's contents, the type's
    probabilities are scaled down to the fit's total. A foreign atom the user states (``MoSe2+W``) is
    expected in numbers, so its type (``dopant`` on its sublattice) is not held: where the microscope is
    not known, the Z-contrast fit cannot place it (at 60 kV, W scatters 1.9 times Mo; Z**1.7 says 2.6).
    Types the fit holds as often (or that are
    rare) are left to the classifier, which is the better judge of *which* columns they are.

    Parameters
    ----------
    types : DataFrame
        :func:`~.context_classifier.predict_types` (index site_id, columns :data:`~.context_vector.COLUMN_TYPES`).
    posteriors : dict of DataFrame
        The Z-contrast species posteriors of the same sites ('M': the metal sites, 'X': the X2 columns).
    material : Material
    min_share : float
        Claims below this share of a sublattice's columns are not checked.

    Returns
    -------
    DataFrame
        Same shape as ``types``.

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> ids = range(10)
    >>> post = {"X": pd.DataFrame({"Se": [0.0] * 10, "Se2": [1.0] * 10}, index=ids)}  # one population
    >>> types = pd.DataFrame(0.0, index=ids, columns=list(COLUMN_TYPES))
    >>> types["host"], types.loc[[3, 4], ["host", "single"]] = 1.0, [[0.1, 0.9], [0.2, 0.8]]
    >>> held = image_supported_types(types, post, parse_material("WSe2"))
    >>> held.loc[[3, 4], "single"].round(3).tolist(), held["host"].idxmin()
    ([0.005, 0.002], 3)
    """
    from ..composition import stated_type_weights

    out = types.copy()
    for sub in ("M", "X"):
        table = posteriors.get(sub)
        if table is None or table.empty:
            continue
        ids = table.index.intersection(types.index)
        if not len(ids):
            continue
        kinds = _label_types(table, sub, material)
        block = out.loc[ids]
        stated = stated_type_weights(material, sub)
        for kind in SUBLATTICE_TYPES[sub]:
            if kind == "host" or kind not in block or (kind == "dopant" and stated):
                continue
            claimed = float(block[kind].sum())
            if claimed < min_share * len(ids):
                continue
            held = float(table.loc[ids, table.columns[kinds == kind]].to_numpy(float).sum())
            if held < claimed:
                block[kind] *= max(held, 1e-3) / claimed
        out.loc[ids] = block.div(block.sum(axis=1).where(lambda v: v > 0, 1.0), axis=0)
    return out


__all__ = [
    "INTENSITY_EVIDENCE", "SUPPORT_SHARE", "context_posteriors", "image_supported_types", "stated_types",
]
