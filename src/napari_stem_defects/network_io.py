"""What the shipped networks share: packaged weights files, safe loading and saving, input normalisation.

torch is imported inside the functions that need it, so importing this
module (and the detectors built on it) keeps napari's start-up light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def packaged_weights_path(name: str) -> Path:
    """Path of a weights file shipped in ``napari_stem_defects/models`` (it may not exist yet)."""
    from importlib.resources import files

    return Path(str(files("napari_stem_defects") / "models" / name))


def read_weights(path: str | Path, what: str, script: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """State dict and metadata of a weights file, loaded with ``weights_only=True`` on the CPU.

    Parameters
    ----------
    path : str or Path
        The ``.pt`` file written by :func:`save_weights`.
    what : str
        What the weights are for, for the error message (e.g. "column U-Net").
    script : str
        The training script that writes them, named in the error message.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    WeightsFileError
        The file is not a weights file written by :func:`save_weights` (another
        format, a pickle that ``weights_only`` refuses, cut short).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path}; train them with `python {script}`")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...: not our file
        raise WeightsFileError(f"{path} is not a {what} weights file written by napari-stem-defects (torch "
                               f"cannot load it safely: {type(exc).__name__}); give a .pt file written by "
                               "`napari-stem-defects train`, or a model version name") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict) \
            or not isinstance(payload.get("metadata", {}), dict):
        raise WeightsFileError(f"{path} is not a {what} weights file written by napari-stem-defects "
                               "(no state_dict and metadata)")
    return payload["state_dict"], dict(payload.get("metadata", {}))


class WeightsFileError(ValueError):
    """A weights file that cannot be loaded: another format, damaged, or for another network."""


def load_model(
    path: str | Path | None,
    default_name: str,
    build: Callable[[dict[str, Any]], Any],
    what: str,
    script: str,
) -> Any:
    """Load a network in evaluation mode on the CPU, cached per resolved path.

    Parameters
    ----------
    path : str or Path or None
        Weights file written by :func:`save_weights`; None for the packaged
        ``models/<default_name>``.
    default_name : str
        File name of the packaged weights.
    build : callable
        Builds the untrained module from the file's metadata (its ``arch``).
    what, script : str
        For the message when the file is missing (see :func:`read_weights`).

    Returns
    -------
    torch.nn.Module
        In eval mode, with the metadata dict as ``model.metadata``.
    """
    resolved = Path(path) if path is not None else packaged_weights_path(default_name)
    return _load_cached(str(resolved.expanduser().resolve()), build, what, script)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, build: Callable[[dict[str, Any]], Any], what: str, script: str) -> Any:
    state, meta = read_weights(path, what, script)
    try:
        model = build(meta)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise WeightsFileError(f"{path} holds weights that do not fit the {what} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    model.eval()
    model.metadata = meta
    return model


def state_snapshot(model: Any) -> dict[str, Any]:
    """A detached CPU copy of a model's state dict (e.g. the best weights seen while training)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_weights(model: Any, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write the state dict (as CPU tensors) and plain-python metadata, loadable with
    ``weights_only=True``; atomically (a temporary file beside it, then renamed), so that
    an interrupted run never leaves a half-written file."""
    import os

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"state_dict": state_snapshot(model), "metadata": metadata}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Robust per-image normalisation: median to 0, the 0.5-99.5 percentile range to 1.

    Parameters
    ----------
    image : ndarray
        Any dtype, offset or gain; NaN/inf are replaced by the median; float64 values
        beyond float32's range (1e300) are rescaled first.

    Returns
    -------
    ndarray of float32
        The normalised image, clipped to [-4, 6].

    Examples
    --------
    >>> x = normalize_image(np.arange(100.0).reshape(10, 10))
    >>> round(float(np.median(x)), 3), x.dtype
    (0.0, dtype('float32'))
    """
    arr = np.asarray(image)
    if arr.size and arr.dtype.kind == "f" and arr.dtype.itemsize > 4:  # values float32 cannot hold: rescale first
        finite_values = arr[np.isfinite(arr)]
        peak = float(np.abs(finite_values).max()) if finite_values.size else 0.0
        if peak > 1e30 or 0.0 < peak < 1e-30:
            from .image_values import finite_intensities

            arr = finite_intensities(arr, np.float64)[0]
    x = np.asarray(arr, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, np.median(x[finite]) if finite.any() else 0.0).astype(np.float32)
    lo, med, hi = np.percentile(x, [0.5, 50.0, 99.5])
    scale = float(hi - lo)
    if not np.isfinite(scale) or scale <= 0:
        scale = float(x.std()) or 1.0
    return np.clip((x - med) / scale, -4.0, 6.0).astype(np.float32)
