"""Bring your own AtomAI model: column detection with a user's trained atomai ``Segmentor``.

atomai (the field's deep-learning library for STEM) saves a trained
``Segmentor`` as a ``*.tar`` "meta-state dictionary" (e.g.
``model_metadict_final.tar``) that :func:`atomai.load_model` reads back.
:func:`atomai_detection_map` runs such a model through atomai's own
predictor (``Segmentor.predict``, i.e. ``atomai.predictors.SegPredictor``)
and turns its per-pixel class probabilities into a detection map (1 minus
the background probability), which then goes through the same peaks,
refinement, lattice sites and species as the other engines
(:func:`~napari_stem_defects.columns.pipeline.columns_from_map`).

Safety: atomai's files are pickles, and loading one runs whatever Python
objects it holds. :func:`load_atomai_model` therefore refuses unless the
caller says ``trust_model_file=True`` (the dock's checkbox, the command
line's ``--trust-model-file``): only load files you made yourself or got
from someone you trust. Our own shipped weights never go this way; they are
loaded with ``torch.load(..., weights_only=True)``.

The image is given to the model at its own pixel scale (atomai's habit: the
model sees what it was trained on), or resampled so that the metal to
chalcogen distance becomes ``model_nn_px`` when the model was trained at a
fixed scale (e.g. on :func:`~napari_stem_defects.annotations.atomai_pairs.atomai_training_arrays`
with ``nn_px``). Images are normalised as :func:`atomai_normalize` does for
the training pairs. atomai (and torch) are imported only inside the functions.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

#: What the dock and the command line print next to the trust opt-in.
TRUST_WARNING = (
    "an AtomAI model file is a Python pickle: loading it runs the code it holds. "
    "Only load model files you trained yourself or got from someone you trust."
)


class UntrustedModelError(PermissionError):
    """An atomai model file was to be loaded without the explicit ``trust_model_file=True`` opt-in."""


def atomai_normalize(image: np.ndarray) -> np.ndarray:
    """Image scaled to 0-1 between its 0.1 and 99.9 percentiles (NaN to the median), float32.

    The same scaling for the training pairs and for prediction, so a model
    sees its inputs as it was trained on them (atomai's own ``norm=True``
    scales by the plain minimum and maximum, which one hot pixel upsets).

    Examples
    --------
    >>> x = atomai_normalize(np.array([[0.0, 1.0], [2.0, np.nan]]))
    >>> float(x.min()), float(x.max()), x.dtype.name
    (0.0, 1.0, 'float32')
    """
    x = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.any():
        raise ValueError("the image holds no finite values")
    x = np.where(finite, x, np.median(x[finite]))
    lo, hi = np.percentile(x, [0.1, 99.9])
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    return np.clip((x - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0).astype(np.float32)


def load_atomai_model(path: str | Path, *, trust_model_file: bool = False) -> Any:
    """Load a trained atomai ``Segmentor`` from the file atomai's trainer saved (cached per path).

    Parameters
    ----------
    path : str or Path
        e.g. ``model_metadict_final.tar`` written by ``Segmentor.fit`` or ``Segmentor.save_model``.
    trust_model_file : bool
        Must be True: the file is unpickled (see :data:`TRUST_WARNING`).

    Returns
    -------
    atomai.models.Segmentor
        On the CPU (or the GPU where torch sees one), in eval mode.

    Raises
    ------
    UntrustedModelError
        ``trust_model_file`` is not True.
    FileNotFoundError
        No such file.
    ValueError
        The file is not an atomai segmentation model.
    """
    if trust_model_file is not True:
        raise UntrustedModelError(
            f"not loading {path}: {TRUST_WARNING} If you trust it, tick 'trust this file' in the columns dock "
            "(command line: --trust-model-file; Python: trust_model_file=True)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"AtomAI model file not found: {p}")
    return _load_cached(str(p.resolve()), p.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, _mtime: int) -> Any:
    import atomai

    try:
        model = atomai.load_model(path)
    except Exception as exc:  # noqa: BLE001 - a pickle of anything, cut short, a torch file of another kind
        raise ValueError(f"{path} is not an AtomAI model file atomai can load "
                         f"({type(exc).__name__}: {exc})") from None
    if not (hasattr(model, "predict") and hasattr(model, "net") and hasattr(model, "nb_classes")):
        raise ValueError(f"{path} holds an AtomAI {type(model).__name__}, not a segmentation model "
                         "(atomai.models.Segmentor); train one with Segmentor.fit")
    model.net.eval()
    return model


def atomai_model(model: Any, trust_model_file: bool = False) -> Any:
    """A loaded Segmentor as is, or one loaded from a path with :func:`load_atomai_model`."""
    if model is None:
        raise ValueError("the atomai method needs a model file (a trained atomai Segmentor, "
                         "--column-model FILE on the command line)")
    if isinstance(model, (str, Path)):
        return load_atomai_model(model, trust_model_file=trust_model_file)
    return model


def atomai_probabilities(model: Any, image: np.ndarray) -> np.ndarray:
    """Per-pixel class probabilities of an image from atomai's predictor, shape (H, W, nb_classes).

    The image is normalised with :func:`atomai_normalize` (atomai's own
    normalisation is switched off) and padded by atomai to its network's
    down-sampling factor; the padding is cut off again.
    """
    x = atomai_normalize(image)
    out = model.predict(x[None], compute_coords=False, norm=False, verbose=False)
    out = np.asarray(out)[0]
    return out[: x.shape[0], : x.shape[1]].astype(np.float32)


def atomai_detection_map(
    image: np.ndarray,
    nn_px: float,
    *,
    model: Any,
    trust_model_file: bool = False,
    model_nn_px: float | None = None,
) -> np.ndarray:
    """Detection map of a HAADF image from a user's atomai ``Segmentor``.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    nn_px : float
        Metal to chalcogen distance of the image in pixels (smooths the map
        by 0.1 nn so a flat-topped column blob has one peak, at its centre).
    model : atomai Segmentor or str or Path
        A loaded model, or the file atomai saved (needs ``trust_model_file``).
    trust_model_file : bool
        Opt-in to unpickle a model file (see :func:`load_atomai_model`).
    model_nn_px : float, optional
        The nn distance in pixels the model was trained at; the image is
        resampled to it and the map back. None: the image's own scale.

    Returns
    -------
    ndarray of float32, shape (H, W)
        1 - P(background) for a multi-class model (class 0 is background, as
        in atomai's masks and in our exported masks), P(column) for a
        one-class model; 0-1.
    """
    from .unet import resample

    seg = atomai_model(model, trust_model_file)
    img = np.asarray(image, dtype=np.float32)
    shape = img.shape
    if model_nn_px is not None:
        z = float(model_nn_px) / float(nn_px)
        img = resample(img, (max(8, round(shape[0] * z)), max(8, round(shape[1] * z))))
    prob = atomai_probabilities(seg, img)
    dmap = 1.0 - prob[..., 0] if prob.shape[-1] > 1 else prob[..., 0]
    if dmap.shape != shape:
        dmap = resample(dmap, shape)
    dmap = ndimage.gaussian_filter(dmap, 0.1 * float(nn_px))
    return np.clip(dmap, 0.0, 1.0).astype(np.float32)
