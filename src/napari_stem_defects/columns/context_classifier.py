"""The context-encoder column classifier: Zernike contrast of each column plus what the pixels cannot tell.

After Dan, Zhang, Loh, Eda and Loh: each atom-centred patch is expanded in Zernike polynomials
(:mod:`.zernike`; rotation-invariant magnitudes, self-calibrated by the image's own median metal
column), the site's context (stated composition as electron-shell occupancies, beam energy, detector
type, sublattice; :mod:`.context_vector`) is encoded beside it, the context gates the contrast
features (a sigmoid attention over the contrast embedding), and a small head gives the column's
type (:data:`~.context_vector.COLUMN_TYPES`: host, dopant, single, empty, antisite).

The types become species posteriors (:func:`~.context_types.context_posteriors`): the classifier says *what kind*
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
from .context_types import (
    INTENSITY_EVIDENCE,
    SUPPORT_SHARE,
    context_posteriors,
    image_supported_types,
    stated_types,
)
from .context_vector import (
    COLUMN_TYPES,
    CONTEXT_LENGTH,
    SUBLATTICE_TYPES,
    context_vector,
)
from .intensity import background_map
from .zernike import zernike_features, zernike_indices

#: Highest Zernike order of the contrast encoder.
N_MAX: int = 8
#: Patch radius in metal-to-chalcogen distances (half-way to the nearest neighbour).
PATCH_RADIUS_NN: float = 0.5
#: Length of :func:`contrast_features`.
CONTRAST_LENGTH: int = len(zernike_indices(N_MAX)) + 4
#: Packaged weights.
WEIGHTS_NAME = "context_classifier.pt"
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
