"""Unit-cell defect classifier: a small CNN on two-channel cell crops plus material context.

The 2DIP-Net idea: each unit cell (metal site M and its partner X2 column) is
classified from :func:`~napari_stem_defects.cells.crops.cell_crops` (channel 0
centred on X, channel 1 on M, rotation-normalised, nn = 11 px) and a context
vector (:func:`context_vector`) describing the material, the scale and the
image's normal columns, into the classes
:data:`~napari_stem_defects.simulate.defects.CELL_CLASSES` the material
allows (:func:`~napari_stem_defects.composition.allowed_classes`).

The network has two outputs: logits over the classes, and one "defective"
logit. ``mode="single"`` uses the first (softmax); ``mode="two-stage"``
decides perfect versus defective from the second, then the subtype from the
first (the Janus-MoWSSe study's two stages, trained jointly).

torch is imported lazily, inside functions, so that importing this module
(and napari's plugin discovery) stays fast.

The weights are trained on digital twins by ``scripts/train_cell_cnn.py``
(see ``models/cell_cnn.md``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..materials import Material, parse_material
from ..network_io import load_model, packaged_weights_path
from ..vocabulary import CELL_CLASSES
from ..composition import class_mask
from .crops import CANONICAL_NN_PX, CROP_SIZE, cell_crops, prepare_image, strength_context
from .z_contrast import refine_antisites

#: Length of :func:`context_vector`'s output; its last 6 entries are image strengths.
N_CONTEXT = 12
#: Architecture of the shipped model.
DEFAULT_ARCH: dict[str, Any] = {
    "in_channels": 2, "crop_size": CROP_SIZE, "channels": (16, 32, 64), "hidden": 128,
    "n_context": N_CONTEXT, "n_classes": len(CELL_CLASSES), "two_stage": True,
}
#: Ways to turn the network's outputs into class probabilities.
MODES = ("single", "two-stage")
#: Logit given to classes the material does not allow.
_MASKED = -1e4
#: Named class priors of :func:`probabilities` (a number is the share of perfect cells).
PRIORS = ("image", "balanced")
#: Pseudo-count per allowed class of the image prior (:func:`image_prior`): keeps a class
#: the image barely shows from being ruled out, and a small image's prior near balanced.
PRIOR_PSEUDO_COUNT = 2.0
#: File name of the packaged weights (in ``napari_stem_defects/models``).
WEIGHTS_NAME = "cell_cnn.pt"


# --------------------------------------------------------------------------- context


def context_vector(material: str | Material, nn_px: float, strengths: np.ndarray | None = None) -> np.ndarray:
    """Material, scale and image descriptor fed to the network next to the crops.

    Parameters
    ----------
    material : str or Material
        Host material, e.g. ``"MoS2"``, ``"MoWSSe"``, ``"Janus-MoSSe"``.
    nn_px : float
        Metal to chalcogen distance in image pixels.
    strengths : ndarray, shape (6,), optional
        :func:`~napari_stem_defects.cells.crops.strength_context` of the image
        (zeros if not given).

    Returns
    -------
    ndarray of float32, shape (12,)
        ``[mean Z metal / 74, std Z metal / 20, mean Z chalcogen / 52,
        std Z chalcogen / 20, 1 if Janus else 0, log(nn_px / 11)]`` followed by
        the 6 strengths.
    """
    mat = parse_material(material)
    zm, sm, zx, sx = mat.context_vector()
    janus = 1.0 if getattr(mat, "janus", False) else 0.0
    tail = np.zeros(N_CONTEXT - 6, np.float32) if strengths is None else np.asarray(strengths, np.float32)
    if tail.shape != (N_CONTEXT - 6,):
        raise ValueError(f"strengths must have {N_CONTEXT - 6} entries, not {tail.shape}")
    head = [zm / 74.0, sm / 20.0, zx / 52.0, sx / 20.0, janus, math.log(float(nn_px) / CANONICAL_NN_PX)]
    return np.concatenate([np.array(head, dtype=np.float32), tail])


# --------------------------------------------------------------------------- network


@functools.lru_cache(maxsize=1)
def _cnn_class() -> type:
    """The torch module class, defined on first use so that torch is imported lazily."""
    import torch
    from torch import nn

    def conv(c_in: int, c_out: int, k: int) -> list:
        return [nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    class CellCNN(nn.Module):
        """Strided 5x5 then 3x3 convolutions (BatchNorm, ReLU), each halving the crop,
        flattened (the position of a feature in the canonical frame matters: centre
        cell versus neighbours), concatenated with the context vector, then an MLP
        giving class logits and, with ``two_stage``, a last "defective" logit."""

        def __init__(
            self, in_channels: int = 2, crop_size: int = CROP_SIZE, channels: tuple = (16, 32, 64),
            hidden: int = 128, n_context: int = N_CONTEXT, n_classes: int = len(CELL_CLASSES),
            two_stage: bool = True,
        ) -> None:
            super().__init__()
            layers: list = []
            c_in = in_channels
            for i, c in enumerate(channels):
                layers += conv(c_in, c, 5 if i == 0 else 3)
                c_in = c
            self.features = nn.Sequential(*layers)
            side = crop_size
            for _ in channels:
                side = (side + 1) // 2
            self.context = nn.Sequential(nn.Linear(n_context, 32), nn.ReLU(inplace=True))
            self.head = nn.Sequential(
                nn.Linear(c_in * side * side + 32, hidden), nn.ReLU(inplace=True),
                nn.Dropout(0.1), nn.Linear(hidden, n_classes + (1 if two_stage else 0)),
            )

        def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            f = self.features(x).flatten(1)
            return self.head(torch.cat([f, self.context(ctx)], dim=1))

    return CellCNN


def build_cell_cnn(**arch: Any) -> Any:
    """Build an untrained cell classifier (a ``torch.nn.Module`` mapping (crops, context) to logits).

    Parameters
    ----------
    **arch
        Overrides of :data:`DEFAULT_ARCH` (``channels``, ``hidden``, ...).

    Returns
    -------
    torch.nn.Module
    """
    kw = {**DEFAULT_ARCH, **arch}
    kw["channels"] = tuple(int(c) for c in kw["channels"])
    return _cnn_class()(**kw)


# --------------------------------------------------------------------------- weights


def default_weights_path() -> Path:
    """Path of the packaged weights file (it may not exist yet)."""
    return packaged_weights_path(WEIGHTS_NAME)


def load_cell_model(path: str | Path | None = None) -> Any:
    """Load the cell classifier in evaluation mode on the CPU (cached per path).

    ``path`` is a file written by :func:`napari_stem_defects.training.cell_cnn.save_weights`, None
    for the packaged ``models/cell_cnn.pt``; the model carries its metadata as ``model.metadata``
    (see :func:`napari_stem_defects.network_io.load_model`).

    Raises
    ------
    FileNotFoundError, napari_stem_defects.network_io.WeightsFileError
        The file is missing, or not a cell classifier of this package.
    """
    return load_model(path, WEIGHTS_NAME, _build_from_metadata, "cell classifier", "scripts/train_cell_cnn.py")


def _build_from_metadata(meta: dict[str, Any]) -> Any:
    return build_cell_cnn(**meta.get("arch", {}))


# --------------------------------------------------------------------------- inference


def predict_logits(model: Any, crops: np.ndarray, context: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Run the model on crops (N, 2, S, S) and context (12,) or (N, 12).

    Returns
    -------
    ndarray of float32, shape (N, C) or (N, C + 1)
        Class logits, then the "defective" logit for a two-stage model.
    """
    import torch

    crops = np.ascontiguousarray(crops, dtype=np.float32)
    ctx = np.asarray(context, dtype=np.float32)
    if ctx.ndim == 1:
        ctx = np.broadcast_to(ctx, (len(crops), ctx.shape[0]))
    out = []
    model.eval()
    device = next(model.parameters()).device  # the CPU, unless a training loop runs on a GPU
    with torch.inference_mode():
        for s in range(0, len(crops), max(1, int(batch))):
            x = torch.from_numpy(crops[s : s + batch]).to(device)
            c = torch.from_numpy(np.ascontiguousarray(ctx[s : s + batch])).to(device)
            out.append(model(x, c).float().cpu().numpy())
    arch = {**DEFAULT_ARCH, **getattr(model, "metadata", {}).get("arch", {})}
    width = int(arch["n_classes"]) + (1 if arch.get("two_stage") else 0)
    return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)


def probabilities(logits: np.ndarray, mask: np.ndarray | None = None, mode: str = "single",
                  prior: str | float = "balanced") -> np.ndarray:
    """Class probabilities from network outputs, over the allowed classes only.

    Parameters
    ----------
    logits : ndarray, shape (N, C) or (N, C + 1)
        :func:`predict_logits` output.
    mask : ndarray of bool, shape (C,) or (N, C), optional
        Allowed classes (:func:`~napari_stem_defects.composition.class_mask`);
        the others get probability 0.
    mode : {'single', 'two-stage'}
        'single': softmax of the class logits. 'two-stage': P(defective) from
        the last logit, times the softmax over the allowed defect classes;
        P(perfect) = 1 - P(defective).
    prior : {'balanced', 'image'} or float
        Class prior the probabilities are for. The network was trained on
        class-balanced batches, so its raw output ('balanced') takes every
        allowed class as equally likely, which overcalls rare defects in a
        layer that is mostly perfect. 'image' estimates the share of each
        class from these cells themselves (:func:`image_prior`: the N cells
        must be one image or one consistent set). A number is the expected
        share of perfect cells, the rest shared equally by the allowed defect
        classes (Bayes' rule on the logits).

    Returns
    -------
    ndarray of float32, shape (N, C)

    Examples
    --------
    >>> p = probabilities(np.array([[0.0, 0.0, 2.0, 0.0]]), np.array([True, True, True]), "two-stage")
    >>> p.round(3)
    array([[0.5 , 0.06, 0.44]], dtype=float32)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if isinstance(prior, str) and prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS} or a share of perfect cells, not {prior!r}")
    z = np.asarray(logits, dtype=np.float64)
    n_classes = len(CELL_CLASSES) if mask is None else np.shape(mask)[-1]
    cls = z[:, :n_classes].copy()
    allowed = np.ones(cls.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), cls.shape)
    cls = np.where(allowed, cls, _MASKED)
    perfect_share = None if isinstance(prior, str) else float(prior)
    shift = np.zeros(len(cls))
    if perfect_share is not None:
        if not 0.0 < perfect_share < 1.0:
            raise ValueError("a numeric prior (share of perfect cells) must be between 0 and 1")
        n_defect = np.maximum(allowed[:, 1:].sum(axis=1), 1)
        # log of (prior of perfect / prior of one defect class); balanced training had ratio 1
        shift = np.log(perfect_share) - np.log((1.0 - perfect_share) / n_defect)
    if mode == "two-stage":
        if z.shape[1] != n_classes + 1:
            raise ValueError("this model has no two-stage output; use mode='single'")
        if perfect_share is not None:
            # balanced batches held one perfect crop per (classes - 1) defective ones
            shift = np.log(perfect_share / (1.0 - perfect_share)) + np.log(n_classes - 1.0)
        p_def = 1.0 / (1.0 + np.exp(-(z[:, n_classes] - shift)))
        sub = cls[:, 1:] - cls[:, 1:].max(axis=1, keepdims=True)
        e = np.exp(sub)
        e /= e.sum(axis=1, keepdims=True)
        out = np.concatenate([(1 - p_def)[:, None], p_def[:, None] * e], axis=1)
    else:
        cls[:, 0] += shift
        cls -= cls.max(axis=1, keepdims=True)
        e = np.exp(cls)
        out = e / e.sum(axis=1, keepdims=True)
    if prior == "image":
        out, _ = image_prior(out, allowed)
    return out.astype(np.float32)


def image_prior(balanced: np.ndarray, allowed: np.ndarray | None = None,
                pseudo_count: float = PRIOR_PSEUDO_COUNT, n_iter: int = 200,
                tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors under the class shares of the image itself, estimated by EM.

    The network's class-balanced probabilities are re-weighted by the ratio of
    the image's class shares to the balanced ones, and the shares are
    re-estimated as the mean re-weighted probability, until they settle (the
    EM of Saerens, Latinne & Decaestecker, Neural Computation 14, 2002). A
    Dirichlet pseudo-count per allowed class keeps every allowed class
    possible: a dozen cells stay close to the balanced answer, a whole image
    speaks for itself.

    Parameters
    ----------
    balanced : ndarray, shape (N, C)
        Class probabilities under a uniform prior over the allowed classes.
    allowed : ndarray of bool, shape (C,) or (N, C), optional
        Allowed classes; defaults to those with any probability.
    pseudo_count : float
        Dirichlet pseudo-count added to every allowed class.
    n_iter : int
        Most EM iterations.
    tol : float
        Stop when no share changes by more than this.

    Returns
    -------
    posteriors : ndarray of float64, shape (N, C)
    shares : ndarray of float64, shape (C,)
        Estimated share of each class in the image.

    Examples
    --------
    Ninety cells that look perfect and ten that could be either: the image
    says perfect is common, so the ten lean to perfect.

    >>> p = np.array([[0.9, 0.1]] * 90 + [[0.5, 0.5]] * 10)
    >>> post, shares = image_prior(p)
    >>> shares.round(2), post[-1].round(2)
    (array([0.98, 0.02]), array([0.98, 0.02]))
    """
    p = np.asarray(balanced, dtype=np.float64)
    if len(p) == 0:
        return p.copy(), np.zeros(p.shape[1])
    ok = (p > 0).any(axis=0) if allowed is None else np.asarray(allowed, bool).reshape(-1, p.shape[1]).any(axis=0)
    uniform = np.where(ok, 1.0 / ok.sum(), 0.0)
    shares = uniform.copy()
    safe_uniform = np.where(ok, uniform, 1.0)
    post = p
    for _ in range(int(n_iter)):
        post = p * (shares / safe_uniform)
        post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
        new = np.where(ok, post.sum(axis=0) + pseudo_count, 0.0)
        new /= new.sum()
        done = np.abs(new - shares).max() < tol
        shares = new
        if done:
            break
    post = p * (shares / safe_uniform)
    post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
    return post, shares


def classify_cells(
    image: np.ndarray,
    m_positions: np.ndarray,
    x_positions: np.ndarray,
    nn_px: float | None,
    material: str | Material,
    pixel_size: float | None = None,
    batch: int = 4096,
    *,
    mode: str = "single",
    prior: str | float = "image",
    model: Any = None,
    z_contrast: bool = True,
) -> np.ndarray:
    """Class probabilities of unit cells from their metal and X2 positions.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        HAADF image (any dtype, offset or gain).
    m_positions, x_positions : ndarray, shape (N, 2)
        (y, x) in pixels of each cell's metal site and X2 column (from the
        ground truth or a column detector; errors up to ~0.1 nn are tolerated).
        All the image's cells should be given at once: the column strengths of
        those inside the image calibrate the network
        (:func:`~napari_stem_defects.cells.crops.strength_context`).
    nn_px : float or None
        Metal to chalcogen distance in pixels; None derives it from the
        material's lattice constant and ``pixel_size`` (``a / sqrt(3) / pixel_size``).
    material : str or Material
        Host material (sets the context vector and the allowed classes).
    pixel_size : float, optional
        Å per pixel; only used when ``nn_px`` is None.
    batch : int
        Cells per forward pass.
    mode : {'single', 'two-stage'}
        See :func:`probabilities`.
    prior : {'image', 'balanced'} or float
        Class prior (see :func:`probabilities`): 'image' (default) estimates
        each class's share from the cells given, 'balanced' keeps the
        network's class-balanced output, a number is the share of perfect cells.
    model : torch.nn.Module, optional
        Classifier to use; defaults to :func:`load_cell_model`.
    z_contrast : bool
        Check the CNN's metal antisites against chalcogen substitutions by
        the image's own Z contrast (:func:`~napari_stem_defects.cells.z_contrast.refine_antisites`;
        hosts with one metal and one chalcogen only).

    Returns
    -------
    ndarray of float32, shape (N, len(CELL_CLASSES))
        Probabilities, columns in the order of ``CELL_CLASSES``; classes the
        material does not allow are 0.
    """
    mat = parse_material(material)
    if nn_px is None:
        if pixel_size is None or pixel_size <= 0:
            raise ValueError("give nn_px, or a positive pixel_size to derive it from the material")
        nn_px = mat.a / math.sqrt(3.0) / float(pixel_size)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    model = model if model is not None else load_cell_model()
    prepared = prepare_image(image, nn_px)
    m = np.asarray(m_positions, dtype=np.float64).reshape(-1, 2)
    x = np.asarray(x_positions, dtype=np.float64).reshape(-1, 2)
    if len(m) == 0:
        return np.zeros((0, len(CELL_CLASSES)), dtype=np.float32)
    h, w = prepared.shape
    inside = np.all((m >= 0) & (x >= 0) & (m <= (h - 1, w - 1)) & (x <= (h - 1, w - 1)), axis=1)
    ref = inside if inside.any() else np.ones(len(m), bool)
    ctx = context_vector(mat, nn_px, strength_context(prepared, m[ref], x[ref], nn_px))
    parts = []
    step = max(1, int(batch))
    for s in range(0, len(m), step):
        crops = cell_crops(prepared, m[s : s + step], x[s : s + step], nn_px, prepared=True)
        parts.append(predict_logits(model, crops, ctx, batch=step))
    probs = probabilities(np.concatenate(parts), class_mask(mat), mode, prior)
    if z_contrast:
        probs, _ = refine_antisites(probs, prepared, m, x, nn_px, mat)
    return probs
