"""The context-encoder column classifier: Zernike contrast of each column plus what the pixels cannot tell.

After Dan, Zhang, Loh, Eda and Loh: each atom-centred patch is expanded in Zernike polynomials
(:mod:`.zernike`; rotation-invariant magnitudes, self-calibrated by the image's own median metal
column), the site's context (stated composition as electron-shell occupancies, beam energy, detector
type, sublattice; :mod:`.context_vector`) is encoded beside it, the context gates the contrast
features (a sigmoid attention over the contrast embedding), and a small head gives the column's
type (:data:`~.context_vector.COLUMN_TYPES`: host, dopant, single, empty, antisite).

The types become species posteriors (:func:`context_posteriors`): the classifier says *what kind*
of content a column holds relative to the stated host, the Z-contrast mixture of the image says
*which* content of that kind and, counted in part, how well each kind explains the column's
intensity; the cells and the site species then follow from those posteriors
through the one joint decision (:func:`napari_stem_defects.cells.joint.one_answer`), so sites and
cells never contradict each other. torch is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..materials import Material
from ..network_io import load_model
from .context_vector import (
    COLUMN_TYPES,
    CONTEXT_LENGTH,
    SUBLATTICE_TYPES,
    column_type,
    context_vector,
)
from .intensity import background_map
from .species import host_labels
from .zernike import zernike_features, zernike_indices

#: Highest Zernike order of the contrast encoder.
N_MAX: int = 8
#: Patch radius in metal-to-chalcogen distances (half-way to the nearest neighbour).
PATCH_RADIUS_NN: float = 0.5
#: Length of :func:`contrast_features`.
CONTRAST_LENGTH: int = len(zernike_indices(N_MAX)) + 4
#: Packaged weights.
WEIGHTS_NAME = "context_classifier.pt"
#: Power at which the image's own Z-contrast likelihood of each column type joins the classifier's type
#: probabilities (:func:`context_posteriors`): the classifier sees the same intensity, so the fit's
#: evidence counts in part.
INTENSITY_EVIDENCE: float = 0.2
#: Smallest likelihood of a type, relative to the likeliest one of its site, that
#: :func:`context_posteriors` lets the fit give (a type the fit's mixture has no room for is not ruled out).
_LIKELIHOOD_FLOOR: float = 1e-12
#: Column classifiers of ``analyze --column-classifier``.
COLUMN_CLASSIFIERS: tuple[str, ...] = ("intensity", "context")
DEFAULT_ARCH: dict[str, Any] = {"hidden": 64, "use_contrast": True, "use_context": True}


def contrast_features(image: np.ndarray, positions: np.ndarray, sublattices: np.ndarray, nn_px: float) -> np.ndarray:
    """Self-calibrated Zernike features of each column.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The frame (any offset and gain).
    positions : ndarray, shape (N, 2)
        Column centres (y, x) in pixels.
    sublattices : ndarray of str, shape (N,)
        'M' or 'X' per column.
    nn_px : float
        Metal to chalcogen distance in pixels.

    Returns
    -------
    ndarray, shape (N, CONTRAST_LENGTH)
        The Zernike magnitudes of the background-subtracted patch over the median A_00 of the
        image's metal sites; A_00 over its own sublattice's median, and the log of that ratio; the
        robust spread (MAD / median) of A_00 on the metal and on the X2 sublattice (noise and
        disorder of the image, the same for every column).
    """
    img = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, np.nanmedian(img) if finite.any() else 0.0)
    flat = img - background_map(img, nn_px)
    z = zernike_features(flat, positions, PATCH_RADIUS_NN * float(nn_px), N_MAX)
    a00 = z[:, 0]
    sub = np.asarray(sublattices).astype(str)
    refs, spreads = {}, {}
    for s in ("M", "X"):
        values = a00[sub == s]
        ref = float(np.median(values)) if len(values) else float(np.median(a00)) if len(a00) else 1.0
        ref = ref if ref > 1e-12 else max(float(np.abs(a00).max(initial=0.0)), 1e-12)
        refs[s] = ref
        spreads[s] = float(np.median(np.abs(values - ref)) / ref) if len(values) else 0.0
    own = np.where(sub == "M", refs["M"], refs["X"])
    ratio = a00 / own
    return np.column_stack([z / refs["M"], ratio, np.log(np.clip(ratio, 1e-2, None)),
                            np.full(len(z), spreads["M"]), np.full(len(z), spreads["X"])])


def _classifier_class() -> type:
    """The torch module class, defined on first use so that torch is imported lazily."""
    import torch
    from torch import nn

    class ContextClassifier(nn.Module):
        """Contrast MLP and context MLP; the context gates the contrast embedding (sigmoid attention);
        a head on both gives column-type logits. Inputs are standardised with the training set's
        mean and spread (buffers, saved with the weights). ``use_contrast`` / ``use_context`` False
        zero that input (the ablations)."""

        def __init__(self, n_contrast: int = CONTRAST_LENGTH, n_context: int = CONTEXT_LENGTH, hidden: int = 64,
                     n_types: int = len(COLUMN_TYPES), use_contrast: bool = True, use_context: bool = True) -> None:
            super().__init__()
            self.use_contrast, self.use_context = bool(use_contrast), bool(use_context)
            self.register_buffer("z_mean", torch.zeros(n_contrast))
            self.register_buffer("z_std", torch.ones(n_contrast))
            self.contrast = nn.Sequential(nn.Linear(n_contrast, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            self.context = nn.Sequential(nn.Linear(n_context, hidden), nn.ReLU())
            self.attention = nn.Linear(2 * hidden, hidden)
            self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(0.1),
                                      nn.Linear(hidden, n_types))

        def forward(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            z = (z - self.z_mean) / self.z_std
            if not self.use_contrast:
                z = torch.zeros_like(z)
            if not self.use_context:
                ctx = torch.zeros_like(ctx)
            ez, ec = self.contrast(z), self.context(ctx)
            gate = torch.sigmoid(self.attention(torch.cat([ez, ec], dim=1)))
            return self.head(torch.cat([gate * ez, ec], dim=1))

    return ContextClassifier


def build_context_classifier(**arch: Any) -> Any:
    """An untrained classifier (``torch.nn.Module`` mapping (contrast, context) to type logits)."""
    return _classifier_class()(**{**DEFAULT_ARCH, **arch})


def load_context_classifier(path: str | Path | None = None) -> Any:
    """The classifier in evaluation mode (cached per path); None loads the packaged ``models/context_classifier.pt``.

    Raises
    ------
    FileNotFoundError, napari_stem_defects.network_io.WeightsFileError
        The file is missing, or not a context classifier of this package.
    """
    return load_model(path, WEIGHTS_NAME, _build_from_metadata, "context column classifier",
                      "scripts/train_context_classifier.py")


def _build_from_metadata(meta: dict[str, Any]) -> Any:
    return build_context_classifier(**meta.get("arch", {}))


def type_mask(sublattices: np.ndarray) -> np.ndarray:
    """(N, len(COLUMN_TYPES)) bool: the types each site's sublattice allows."""
    sub = np.asarray(sublattices).astype(str)
    out = np.zeros((len(sub), len(COLUMN_TYPES)), dtype=bool)
    for s, types in SUBLATTICE_TYPES.items():
        out[np.ix_(sub == s, [COLUMN_TYPES.index(t) for t in types])] = True
    return out


def type_probabilities(model: Any, contrast: np.ndarray, context: np.ndarray, mask: np.ndarray,
                       batch: int = 8192) -> np.ndarray:
    """Softmax of the model's logits over the allowed types of each site (N, len(COLUMN_TYPES))."""
    import torch

    out = np.zeros((len(contrast), len(COLUMN_TYPES)))
    with torch.inference_mode():
        for s in range(0, len(contrast), batch):
            z = torch.as_tensor(np.ascontiguousarray(contrast[s:s + batch]), dtype=torch.float32)
            c = torch.as_tensor(np.ascontiguousarray(context[s:s + batch]), dtype=torch.float32)
            logits = model(z, c).double()
            logits = logits.masked_fill(~torch.as_tensor(mask[s:s + batch]), float("-inf"))
            out[s:s + batch] = torch.softmax(logits, dim=1).numpy()
    return out


def site_contexts(material: Material, microscope: Any | None, sublattices: np.ndarray,
                  energy_kV: float | None = None) -> np.ndarray:
    """The context vector of every site (the two sublattices' vectors, row by row); ``energy_kV``: the beam
    energy alone where the microscope is not known (:func:`~.context_vector.context_vector`)."""
    sub = np.asarray(sublattices).astype(str)
    vectors = {s: context_vector(material, microscope, s, energy_kV) for s in ("M", "X")}
    return np.stack([vectors[s] for s in sub]) if len(sub) else np.zeros((0, CONTEXT_LENGTH))


def predict_types(image: np.ndarray, sites: pd.DataFrame, nn_px: float, material: Material,
                  microscope: Any | None, model: Any = None, energy_kV: float | None = None) -> pd.DataFrame:
    """Type probabilities of the 2H metal and X2 sites of a table.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    sites : DataFrame
        Site table (``site_id``, ``y_px``, ``x_px``, ``sublattice``); only 'M' and 'X' rows are classified.
    nn_px : float
        Metal to chalcogen distance in pixels.
    material : Material
        The stated material.
    microscope : MicroscopeSettings or None
        The image's beam and detector (None: unknown).
    model : torch.nn.Module, optional
        Default the packaged classifier.
    energy_kV : float, optional
        Without ``microscope``, the beam energy the file records (the detector stays unknown).

    Returns
    -------
    DataFrame
        Index ``site_id``; one probability column per :data:`COLUMN_TYPES`.
    """
    rows = sites[sites["sublattice"].isin(["M", "X"])]
    sub = rows["sublattice"].astype(str).to_numpy()
    model = model if model is not None else load_context_classifier()
    contrast = contrast_features(image, rows[["y_px", "x_px"]].to_numpy(float), sub, nn_px)
    probs = type_probabilities(model, contrast, site_contexts(material, microscope, sub, energy_kV), type_mask(sub))
    return pd.DataFrame(probs, index=pd.Index(rows["site_id"].to_numpy(), name="site_id"), columns=list(COLUMN_TYPES))


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
        :func:`predict_types` (index site_id, columns :data:`~.context_vector.COLUMN_TYPES`).
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


def apply_context_classifier(result: Any, image: np.ndarray, material: Material, microscope: Any | None,
                             model: Any = None, energy_kV: float | None = None) -> Any:
    """Replace a column result's 2H species posteriors, species and probabilities by the classifier's (in place).

    Parameters
    ----------
    result : ColumnResult
    image : ndarray
        The frame the result was found on.
    material : Material
    microscope : MicroscopeSettings or None
    model : torch.nn.Module, optional
    energy_kV : float, optional
        Without ``microscope``, the beam energy the file records (the detector stays unknown).

    Returns
    -------
    ColumnResult
        The same object; its ``messages`` say the classifier ran.
    """
    sites = result.sites
    if sites.empty or not set(result.posteriors) & {"M", "X"}:
        return result
    types = predict_types(image, sites, result.nn_px, material, microscope, model, energy_kV)
    types = stated_types(types, result.posteriors, material)
    types = image_supported_types(types, result.posteriors, material)
    fits = result.species_fits or {}
    weights = {sub: fits[sub].per_species(fits[sub].weights[None])[0] for sub in ("M", "X") if sub in fits}
    result.posteriors = context_posteriors(result.posteriors, types, material, weights)
    by_id = sites.set_index("site_id")
    for sub in ("M", "X"):
        table = result.posteriors.get(sub)
        if table is None or table.empty:
            continue
        ids = table.index.intersection(types.index)
        # a person's verified species stay as they are
        if "verified" in by_id:
            ids = ids[~by_id.loc[ids, "verified"].astype(bool).to_numpy()]
        best = table.loc[ids].to_numpy(float)
        rows = sites["site_id"].isin(ids).to_numpy()
        order = pd.Index(ids).get_indexer(sites.loc[rows, "site_id"])
        sites.loc[rows, "species"] = np.asarray(table.columns)[best.argmax(axis=1)][order]
        sites.loc[rows, "probability"] = best.max(axis=1)[order]
    known = ("the stated microscope" if microscope is not None
             else f"a {energy_kV:g} kV beam, detector unknown" if energy_kV
             else "no microscope settings (unknown beam and detector)")
    result.messages.append(f"column species: context-encoder classifier (Zernike contrast + {material.name} "
                           f"composition, {known})")
    return result


__all__ = [
    "COLUMN_CLASSIFIERS", "CONTRAST_LENGTH", "INTENSITY_EVIDENCE", "SUPPORT_SHARE", "apply_context_classifier",
    "build_context_classifier", "context_posteriors", "contrast_features", "image_supported_types",
    "load_context_classifier", "predict_types", "site_contexts", "stated_types", "type_mask", "type_probabilities",
]
