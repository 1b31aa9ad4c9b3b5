"""Whole-image defect heatmaps from either engine, with an uncertainty map.

:func:`compute_heatmaps` is what the widget, ``napari-stem-defects analyze``
and the benchmark call. The image is resampled to the network's scale,
prepared like the cell classifier's input (smooth background removed,
normalised), run in seamless tiles (:mod:`napari_stem_defects.tiling`) and the
maps are brought back onto the image's own pixel grid.

- ``sliding-window``: the patch classifier on every window. The window (in
  image pixels) sets the resampling: a window of ``w`` pixels becomes the
  network's 64. Windows are evaluated every ``w / 8`` pixels in one fully
  convolutional pass; a coarser ``stride`` keeps every k-th of them. Each
  window's probability sits at its centre and the map between centres is
  bilinear.
- ``attention-unet``: the per-pixel segmentation network at the canonical
  scale (nn = 11 px).

torch is imported lazily (through the networks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..materials import Material, parse_material
from ..network_inputs import canonical_shape, flatten_and_normalize, resample
from ..network_io import load_model
from ..tiling import predict_dense, predict_windows
from .classes import HEATMAP_CLASSES
from .networks import NATIVE_STRIDE, WINDOW, build_attention_unet, build_patch_net

#: Engine names, as the widget and the command line spell them.
ENGINES: tuple[str, ...] = ("sliding-window", "attention-unet")
#: Packaged weights of each engine.
WEIGHTS: dict[str, str] = {"sliding-window": "heatmap_patch.pt", "attention-unet": "heatmap_unet.pt"}
#: nn distance, in network pixels, the patch classifier was trained on (window = 64 px).
PATCH_NN_RANGE: tuple[float, float] = (7.0, 16.0)
#: Default window of the sliding-window engine, in image pixels (as the Janus MoWSSe study).
DEFAULT_WINDOW_PX: float = 64.0
#: Largest image side accepted (a 4096 x 4096 image is fine on a laptop; beyond, crop or bin first).
MAX_SIDE: int = 8192
#: Smallest image side: a few unit cells.
MIN_NN_PER_SIDE: float = 6.0


@dataclass
class HeatmapResult:
    """Heatmaps of one image.

    Attributes
    ----------
    maps : ndarray of float32, shape (len(classes), H, W)
        Probability of each defect family at each pixel, in [0, 1].
    uncertainty : ndarray of float32, shape (H, W)
        Binary entropy (bits, 0-1) of the ``defect`` map: 1 where the engine
        cannot tell defect from lattice, 0 where it is sure.
    engine : str
        Which engine made the maps.
    window_px, stride_px : float or None
        Window and stride used, in image pixels (sliding-window engine only).
    nn_px : float or None
        Metal to chalcogen distance used (given, or measured from the image), in pixels.
    classes : tuple of str
        Channel names (:data:`HEATMAP_CLASSES`).
    """

    maps: np.ndarray
    uncertainty: np.ndarray
    engine: str
    window_px: float | None = None
    stride_px: float | None = None
    nn_px: float | None = None
    classes: tuple[str, ...] = field(default=HEATMAP_CLASSES)


def heatmap_context(material: str | Material, nn_net_px: float) -> np.ndarray:
    """Context vector of the heatmap networks: composition and scale (the first six numbers
    of :func:`napari_stem_defects.cells.cnn.context_vector`)."""
    from ..cells.cnn import context_vector

    return context_vector(material, nn_net_px)[:6].astype(np.float32)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a Bernoulli probability map (0 at p = 0 or 1, 1 at p = 0.5).

    Examples
    --------
    >>> binary_entropy(np.array([0.0, 0.5, 1.0])).round(3).tolist()
    [0.0, 1.0, 0.0]
    """
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    h = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    return np.where((p <= 0) | (p >= 1), 0.0, h).astype(np.float32)


def load_heatmap_model(engine: str, path: Any = None) -> Any:
    """The network of an engine (packaged weights unless ``path``), cached, in eval mode."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    script = "scripts/train_heatmap_nets.py --engine " + engine
    build = _build_patch if engine == "sliding-window" else _build_unet
    return load_model(path, WEIGHTS[engine], build, f"{engine} heatmap network", script)


def _build_patch(meta: dict[str, Any]) -> Any:
    return build_patch_net(**meta.get("arch", {}))


def _build_unet(meta: dict[str, Any]) -> Any:
    return build_attention_unet(**meta.get("arch", {}))


def check_image(image: Any, nn_px: float) -> np.ndarray:
    """The image as finite float32 (H, W), or a ValueError that says what is wrong with it."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"heatmaps need a single 2D image, got an array of shape {img.shape}")
    if not (np.isfinite(nn_px) and nn_px > 0):
        raise ValueError(f"the lattice spacing must be a positive number of pixels, got {nn_px!r}")
    if max(img.shape) > MAX_SIDE:
        raise ValueError(f"image of {img.shape[0]} x {img.shape[1]} pixels is larger than {MAX_SIDE} a side; "
                         "crop or bin it first")
    if min(img.shape) < MIN_NN_PER_SIDE * nn_px:
        raise ValueError(f"image of {img.shape[0]} x {img.shape[1]} pixels holds fewer than "
                         f"{MIN_NN_PER_SIDE:g} atom spacings ({nn_px:.1f} px) a side")
    from ..image_values import finite_intensities

    try:  # NaN/inf replaced, values beyond float32's range rescaled, hot pixels clipped
        return finite_intensities(img, np.float32)[0]
    except ValueError:
        raise ValueError("the image has no finite values") from None


def resolve_window(nn_px: float, window_px: float | None) -> float:
    """Window in image pixels: the one asked for, or 64 px when the lattice suits it, else the
    window that shows the lattice at the network's usual scale.

    Raises
    ------
    ValueError
        If an explicit window shows the lattice outside the trained range
        (:data:`PATCH_NN_RANGE` nn in 64 px).
    """
    lo, hi = PATCH_NN_RANGE
    if window_px is None:
        nn_net = nn_px * WINDOW / DEFAULT_WINDOW_PX
        return DEFAULT_WINDOW_PX if lo <= nn_net <= hi else WINDOW * nn_px / 11.0
    if not (np.isfinite(window_px) and window_px > 0):
        raise ValueError(f"the window must be a positive number of pixels, got {window_px!r}")
    nn_net = nn_px * WINDOW / float(window_px)
    if not lo <= nn_net <= hi:
        raise ValueError(
            f"a window of {window_px:g} px holds {WINDOW / nn_net:.1f} atom spacings; the patch classifier "
            f"was trained on {WINDOW / hi:.1f}-{WINDOW / lo:.1f} (windows of {WINDOW * nn_px / hi:.0f}-"
            f"{WINDOW * nn_px / lo:.0f} px here)")
    return float(window_px)


def compute_heatmaps(
    image: np.ndarray,
    material: str | Material,
    engine: str = "sliding-window",
    *,
    nn_px: float | None = None,
    pixel_size: float | tuple[float, float] | None = None,
    window_px: float | None = None,
    stride_px: float | None = None,
    tile: int = 512,
    model: Any = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> HeatmapResult:
    """Per-family defect probability maps of a HAADF image.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image (any dtype, offset or gain; NaN replaced by the median).
    material : str or Material
        Host material (the networks' context).
    engine : {'sliding-window', 'attention-unet'}
        Which network.
    nn_px : float, optional
        Metal to chalcogen distance in pixels (e.g. ``ColumnResult.nn_px``);
        measured from the image's lattice when not given.
    pixel_size : float or (float, float), optional
        Å per pixel; helps find the lattice of noisy images when ``nn_px`` is not given.
    window_px : float, optional
        Sliding-window side in image pixels (default 64 px, see :func:`resolve_window`).
    stride_px : float, optional
        Step between windows in image pixels, rounded to a multiple of
        ``window / 8`` (the default and the finest).
    tile : int
        Tile side in network pixels (memory: a few 100 MB at 512).
    model : torch.nn.Module, optional
        Network to use instead of the packaged one.
    progress, cancel : callable, optional
        ``progress(fraction)``; ``cancel()`` returning True raises InterruptedError.

    Returns
    -------
    HeatmapResult

    Raises
    ------
    ValueError
        Not a 2D image, no finite values, too small or too large, a window outside the trained range.
    napari_stem_defects.columns.ColumnDetectionError
        ``nn_px`` not given and no lattice found in the image.
    InterruptedError
        ``cancel()`` returned True.
    """
    mat = parse_material(material)
    if nn_px is None:
        from ..columns.pipeline import lattice_spacing, validate_image

        nn_px = lattice_spacing(validate_image(image), mat, pixel_size)[1]
    img = check_image(image, nn_px)
    model = model if model is not None else load_heatmap_model(engine)
    shape = img.shape
    if engine == "sliding-window":
        window = resolve_window(nn_px, window_px)
        z = WINDOW / window
        net_shape = (max(1, int(round(shape[0] * z))), max(1, int(round(shape[1] * z))))
        zy, zx = net_shape[0] / shape[0], net_shape[1] / shape[1]
        x = flatten_and_normalize(resample(img, net_shape), nn_px * z)
        if stride_px is not None and not (np.isfinite(stride_px) and stride_px > 0):
            raise ValueError(f"the stride must be a positive number of pixels, got {stride_px!r}")
        k = 1 if stride_px is None else max(1, int(round(float(stride_px) * z / NATIVE_STRIDE)))
        grid = predict_windows(model, x, window=WINDOW, stride=NATIVE_STRIDE, context=heatmap_context(mat, nn_px * z),
                               progress=progress, cancel=cancel)[:, ::k, ::k]
        step = NATIVE_STRIDE * k
        maps = np.stack([_grid_to_pixels(g, shape, step, (zy, zx)) for g in grid])
        result = HeatmapResult(maps, binary_entropy(maps[0]), engine, window, step / z)
    elif engine == "attention-unet":
        from .networks import CANONICAL_NN_PX, UNET_TILE_MARGIN

        canon = canonical_shape(shape, nn_px)
        x = flatten_and_normalize(resample(img, canon), CANONICAL_NN_PX)
        out = predict_dense(model, x, tile=tile, margin=UNET_TILE_MARGIN, align=8,
                            context=heatmap_context(mat, CANONICAL_NN_PX),
                            progress=progress, cancel=cancel)
        maps = np.stack([resample(o, shape) if o.shape != shape else o for o in out])
        result = HeatmapResult(np.clip(maps, 0, 1), binary_entropy(np.clip(maps[0], 0, 1)), engine)
    else:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    result.maps = result.maps.astype(np.float32, copy=False)
    result.nn_px = float(nn_px)
    return result


def _grid_to_pixels(grid: np.ndarray, shape: tuple[int, int], step: float, zoom: tuple[float, float]) -> np.ndarray:
    """Bilinear map of window values on image pixels.

    Window (i, j) covers network pixels ``i * step - 32 .. i * step + 31``, so its
    centre is at ``(i * step - 0.5, j * step - 0.5)`` in pixel-centre coordinates.
    """
    out = grid.astype(np.float32)
    for axis, (n, z) in enumerate(zip(shape, zoom)):
        pos = (np.arange(n) + 0.5) * z / step  # image pixel -> network pixel (+0.5) -> window index
        pos = np.clip(pos, 0, out.shape[axis] - 1)
        i0 = np.minimum(np.floor(pos).astype(int), out.shape[axis] - 2) if out.shape[axis] > 1 else np.zeros(n, int)
        f = (pos - i0).astype(np.float32) if out.shape[axis] > 1 else np.zeros(n, np.float32)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, np.minimum(i0 + 1, out.shape[axis] - 1), axis=axis)
        shape_f = [1, 1]
        shape_f[axis] = n
        out = a + (b - a) * f.reshape(shape_f)
    return out.astype(np.float32)

