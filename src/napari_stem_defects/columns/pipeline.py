"""Headless column detection: detection map, peaks, refinement, lattice sites and species.

The steps are split so that a viewer can cache the detection map (the only
expensive or model-dependent step) and re-threshold without recomputing it:
:func:`compute_detection_map` then :func:`columns_from_map`;
:func:`detect_columns` runs both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..calibration import LatticeMeasurement, LatticeNotFoundError, measure_lattice, measure_lattice_near
from ..image_values import finite_intensities
from ..materials import Material, parse_material
from .classical import classical_detection_map
from .intensity import background_map, integrated_intensity
from .refine import refine_com, refine_gaussian
from .result import ColumnDetectionError, ColumnResult
from .site_table import build_site_table

#: Detection methods.
METHODS = ("classical", "deep", "atomai")
#: Refinement methods.
REFINEMENTS = ("gaussian", "com")
#: Default peak threshold on the detection map, per method.
DEFAULT_THRESHOLD = {"classical": 0.05, "deep": 0.3, "atomai": 0.3}
#: Smallest and largest image side (pixels) and largest pixel count accepted.
MIN_SIDE, MAX_PIXELS = 32, 8192 * 8192
#: Refinement disc radius as a fraction of the nearest-neighbour distance.
REFINE_RADIUS = 0.4
#: Peaks closer to the border than this fraction of the neighbour distance are not used.
EDGE_MARGIN = 0.25


@dataclass
class DetectionMap:
    """A map with a peak on every atom column, and the lattice measured from the image.

    Attributes
    ----------
    map : ndarray of float32, shape (H, W)
        Peaks at column centres, roughly 0 (background) to 1 (brightest column).
    lattice : LatticeMeasurement
        The hexagonal lattice measured from the image's FFT.
    nn_px : float
        Metal to chalcogen (nearest-neighbour) distance in pixels.
    method : str
        'classical' or 'deep'.
    background : ndarray of float32, shape (H, W), optional
        Local background under the columns (image units), for intensities.
    """

    map: np.ndarray
    lattice: LatticeMeasurement
    nn_px: float
    method: str
    background: np.ndarray | None = None


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check an image can be analysed and return it as float32.

    Isolated NaN or infinite pixels (e.g. a blanked region) are replaced by
    the median of the rest; values beyond float32's range are rescaled and
    extreme outliers (hot pixels) clipped
    (:func:`~napari_stem_defects.image_values.finite_intensities`).

    Raises
    ------
    ColumnDetectionError
        With a message a person can act on: not 2D, RGB, too small or too
        large, no finite values, or constant.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        raise ColumnDetectionError(f"this looks like an RGB(A) image (shape {arr.shape}); "
                                   "open the raw microscope file or convert it to grayscale")
    if arr.ndim != 2:
        raise ColumnDetectionError(f"column detection needs a 2D image, got shape {arr.shape}; "
                                   "pick one frame of a stack (or run on all frames)")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ColumnDetectionError(f"image data type {arr.dtype} is not a real-valued image")
    if min(arr.shape) < MIN_SIDE:
        raise ColumnDetectionError(f"image of {arr.shape[0]} x {arr.shape[1]} px is too small; "
                                   f"at least {MIN_SIDE} x {MIN_SIDE} px with several unit cells is needed")
    if arr.size > MAX_PIXELS:
        raise ColumnDetectionError(f"image of {arr.shape[0]} x {arr.shape[1]} px is too large "
                                   "(over 8192 x 8192 px); crop or bin it first")
    try:  # NaN/inf replaced, extreme magnitudes rescaled, hot pixels clipped (see image_values)
        img, _ = finite_intensities(arr, np.float32)
    except ValueError:
        raise ColumnDetectionError("the image holds no finite values (all NaN or infinite)") from None
    if float(img.max() - img.min()) <= 1e-12 * max(1.0, float(abs(img).max())):
        raise ColumnDetectionError("the image is constant: there are no atom columns to find")
    return img


def _nn_px(lattice: LatticeMeasurement) -> float:
    return float(np.mean([np.linalg.norm(lattice.a1), np.linalg.norm(lattice.a2)]) / np.sqrt(3.0))


def compute_detection_map(
    image: np.ndarray,
    method: str = "classical",
    *,
    material: str | Material | None = None,
    pixel_size: tuple[float, float] | float | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    model: Any = None,
    lattice: tuple[LatticeMeasurement, float] | None = None,
    trust_model_file: bool = False,
) -> DetectionMap:
    """Measure the lattice and compute the detection map of one 2D image.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    method : {'classical', 'deep', 'atomai'}
        Band-pass filter matched to the column spacing, the shipped U-Net, or
        a user's trained atomai Segmentor (``model``: its file; see
        :mod:`~napari_stem_defects.columns.atomai_engine`).
    material, pixel_size : optional
        When both are known and the free FFT search finds no lattice (low
        dose), the spots are looked for on the ring the material's spacing
        implies.
    progress : callable, optional
        Called with the fraction done (deep method, per tile).
    cancel : callable, optional
        Returns True to stop (deep method); raises InterruptedError.
    model : torch.nn.Module or str or Path, optional
        Deep method: the column U-Net, loaded or as a weights file (e.g. a
        fine-tuned version, see :func:`napari_stem_defects.model_registry.resolve_model`);
        default the shipped one. Ignored by the classical method.
    lattice : (LatticeMeasurement, float), optional
        The image's lattice and nn distance from :func:`lattice_spacing`, when
        already measured (e.g. by the image check); measured here otherwise.
    trust_model_file : bool
        atomai method: opt-in to unpickle the model file (atomai's files are pickles).

    Returns
    -------
    DetectionMap

    Raises
    ------
    ColumnDetectionError
        Bad input, or no lattice found.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    img = validate_image(image)
    lattice, nn = lattice if lattice is not None else lattice_spacing(img, material, pixel_size)
    if method == "deep":
        from .unet import deep_detection_map

        dmap = deep_detection_map(img, nn, progress=progress, cancel=cancel, model=model)
        background = background_map(img, nn)
    elif method == "atomai":
        from .atomai_engine import atomai_detection_map

        dmap = atomai_detection_map(img, nn, model=model, trust_model_file=trust_model_file)
        background = background_map(img, nn)
    else:
        dmap, background = classical_detection_map(img, nn)
    if progress is not None:
        progress(1.0)
    return DetectionMap(np.asarray(dmap, np.float32), lattice, nn, method, background)


def lattice_spacing(
    image: np.ndarray, material: str | Material | None = None, pixel_size: tuple[float, float] | float | None = None,
) -> tuple[LatticeMeasurement, float]:
    """The lattice of an image and its metal to chalcogen distance in pixels, checked for usability.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Finite image (see :func:`validate_image`).
    material, pixel_size : optional
        As in :func:`compute_detection_map`.

    Returns
    -------
    lattice : LatticeMeasurement
    nn_px : float

    Raises
    ------
    ColumnDetectionError
        No lattice found, or columns too close (< 2.5 px) or too far apart for the image.
    """
    lattice = _lattice(_central_crop(image, 1024), material, pixel_size)
    nn = _nn_px(lattice)
    if nn < 2.5:
        raise ColumnDetectionError(f"columns are only {nn:.1f} px apart: the image is too coarsely "
                                   "sampled to resolve atom columns")
    if nn > min(image.shape) / 3:
        raise ColumnDetectionError(f"columns are {nn:.0f} px apart, too few fit in this "
                                   f"{image.shape[0]} x {image.shape[1]} px image")
    return lattice, nn


def _lattice(img: np.ndarray, material, pixel_size) -> LatticeMeasurement:
    """The lattice from the free FFT search, or near the expected spacing when that fails."""
    try:
        return measure_lattice(img)
    except LatticeNotFoundError as err:
        if material is None or pixel_size is None:
            raise ColumnDetectionError(f"no crystal lattice found: {err}") from err
        first_error = err
    size = float(np.mean(pixel_size))
    d100_px = parse_material(material).d100 / size
    try:
        return measure_lattice_near(img, d100_px)
    except LatticeNotFoundError as err:
        raise ColumnDetectionError(f"no crystal lattice found: {first_error}; {err}") from err


def _central_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` part of a larger image (the lattice is the same, the FFT cheaper)."""
    h, w = image.shape
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[y0:y0 + min(h, size), x0:x0 + min(w, size)]


def columns_from_map(
    image: np.ndarray,
    dmap: DetectionMap,
    *,
    threshold: float | None = None,
    refine: str = "gaussian",
    material: str | Material | None = None,
    pixel_size: tuple[float, float] | float | None = None,
    mask: np.ndarray | None = None,
    microscope: Any = None,
) -> ColumnResult:
    """Peaks, refinement, lattice sites and species from a (cached) detection map.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image the map was computed from (intensities are measured on it).
    dmap : DetectionMap
        From :func:`compute_detection_map`.
    threshold : float, optional
        Lowest map value of a peak; default :data:`DEFAULT_THRESHOLD` of the method.
    refine : {'gaussian', 'com'}
        Batched 2D Gaussian fits (starting from the centre of mass) or centre of mass only.
    material : str or Material, optional
        Host material; sets the species candidates and which sublattice is the
        metal. Without it a free mixture is fitted and the brighter sublattice
        is taken as the metal.
    pixel_size : float or (float, float), optional
        Å per pixel (y, x), stored on the result.
    mask : ndarray of bool, shape (H, W), optional
        Pixels not to analyse (e.g. drawn by the user); NaN or infinite pixels
        of the image are always masked. No site is placed there.
    microscope : MicroscopeSettings, optional
        Beam energy, convergence and detector angles of the image: the metal sublattice is then
        the one the multislice-calibrated table expects to be brighter or dimmer
        (:func:`~napari_stem_defects.simulate.cross_sections.metal_x2_ratio` at these settings;
        ``frozen_phonons > 0`` for a real, vibrating lattice), instead of Z^1.7.

    Returns
    -------
    ColumnResult
    """
    if refine not in REFINEMENTS:
        raise ValueError(f"refine must be one of {REFINEMENTS}, not {refine!r}")
    img = validate_image(image)
    if dmap.map.shape != img.shape:
        raise ValueError(f"detection map shape {dmap.map.shape} does not match image shape {img.shape}")
    masked = _analysis_mask(np.asarray(image), mask)
    mat = parse_material(material) if material is not None else None
    thr = DEFAULT_THRESHOLD[dmap.method] if threshold is None else float(threshold)
    nn = dmap.nn_px
    peaks = find_peaks(np.where(masked, 0.0, dmap.map) if masked is not None else dmap.map,
                       min_distance=max(1, int(0.5 * nn)), threshold=thr)
    if len(peaks) < 6:
        raise ColumnDetectionError(f"only {len(peaks)} peaks above threshold {thr:g}; lower the threshold")
    radius = REFINE_RADIUS * nn
    peaks, refined_by = _refine_peaks(img, dmap, peaks, radius, refine)
    # A column cut by the border gives a peak pushed inside the image: such sites are placed
    # by the lattice fitted to the columns further in.
    edge = EDGE_MARGIN * nn
    inner = ((peaks[:, 0] >= edge) & (peaks[:, 1] >= edge)
             & (peaks[:, 0] <= img.shape[0] - 1 - edge) & (peaks[:, 1] <= img.shape[1] - 1 - edge))
    peaks, refined_by = peaks[inner], refined_by[inner]
    background = dmap.background if dmap.background is not None else background_map(img, nn)

    def measure(positions: np.ndarray) -> np.ndarray:
        return integrated_intensity(img, background, positions, nn)

    ratio = None
    if microscope is not None and mat is not None:
        from ..simulate.cross_sections import metal_x2_ratio

        ratio = metal_x2_ratio(mat, microscope)
    sites, fits, info, messages = build_site_table(peaks, refined_by, dmap.lattice.a1, dmap.lattice.a2, nn,
                                                   img.shape, measure, mat, mask=masked, image=img,
                                                   metal_ratio=ratio, microscope=microscope)
    if ratio is not None:
        messages.append(f"metal sublattice from the multislice table at {microscope.describe()}: "
                        f"a metal column {ratio:.2f} times as bright as an X2 column")
    if pixel_size is not None and np.isscalar(pixel_size):
        pixel_size = (float(pixel_size), float(pixel_size))
    return ColumnResult(
        sites=sites, detection_map=dmap.map, peaks=peaks, a1=info["a1"], a2=info["a2"], nn_px=nn,
        m_offset=info["m_offset"], species_fits=fits,
        pixel_size=None if pixel_size is None else tuple(map(float, pixel_size)),
        method=dmap.method, messages=messages, posteriors=info["posteriors"],
        unexplained=info["unexplained"], regions=info["regions"], domains=info["domains"],
    )


def _analysis_mask(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Pixels not to analyse: the user's mask and the image's non-finite pixels, grown by one pixel (None: none).

    Raises
    ------
    ValueError
        A mask of another shape than the image.
    """
    out = ~np.isfinite(image) if np.issubdtype(image.dtype, np.floating) else np.zeros(image.shape, bool)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != image.shape:
            raise ValueError(f"the mask's shape {mask.shape} does not match the image's {image.shape}")
        out = out | mask
    if not out.any():
        return None
    return ndimage.binary_dilation(out, iterations=1)


def find_peaks(dmap: np.ndarray, min_distance: int, threshold: float) -> np.ndarray:
    """Local maxima of a map above ``threshold``, at least ``min_distance`` px apart (y, x as float).

    A pixel is a peak when it is the maximum of the (2 min_distance + 1)
    square around it; of equal neighbouring maxima (plateaus) one is kept.

    Examples
    --------
    >>> m = np.zeros((20, 20)); m[5, 5] = 1.0; m[5, 7] = 0.9; m[15, 15] = 0.5
    >>> find_peaks(m, min_distance=3, threshold=0.2)
    array([[ 5.,  5.],
           [15., 15.]])
    """
    size = 2 * int(min_distance) + 1
    local_max = ndimage.maximum_filter(dmap, size=size, mode="nearest")
    mask = (dmap >= local_max) & (dmap > threshold)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros((0, 2))
    coords = np.argwhere(mask)
    _, first = np.unique(labels[mask], return_index=True)
    return coords[first].astype(float)


def _refine_peaks(img: np.ndarray, dmap: DetectionMap, peaks: np.ndarray, radius: float,
                  refine: str) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel positions of the peaks and how each was found ('gaussian', 'com' or 'map')."""
    anchor = None
    if dmap.method in ("deep", "atomai"):
        # The network was trained to peak on the column itself, even a dim one on a bright
        # neighbour's probe tail, where fits on the image are pulled toward the neighbour.
        anchor = refine_com(dmap.map, peaks, 0.25 * dmap.nn_px, n_iter=3)
        peaks = anchor
    peaks = refine_com(img, peaks, radius, n_iter=2)
    refined_by = np.full(len(peaks), "com", dtype=object)
    if refine == "gaussian":
        fit = refine_gaussian(img, peaks, radius)
        # One probe for all columns: its width from the bright fits steadies the dim ones.
        ok = fit.converged
        bright = ok & (fit.amplitude >= np.median(fit.amplitude[ok])) if ok.any() else ok
        if bright.sum() >= 10:
            # Second pass: shared width, each column fitted with its neighbours' Gaussians removed,
            # drawn no wider than that (a free fit that came out broad would reach into the next disc).
            probe = tuple(np.median(fit.sigma[bright], axis=0))
            fit = refine_gaussian(img, peaks, radius, sigma=probe, neighbours=fit.capped(probe))
        peaks = fit.positions
        refined_by[fit.converged] = "gaussian"
    if anchor is not None:
        pulled = np.linalg.norm(peaks - anchor, axis=1) > 0.1 * dmap.nn_px
        peaks[pulled] = anchor[pulled]
        refined_by[pulled] = "map"
    return peaks, refined_by


def detect_columns(
    image: np.ndarray,
    *,
    method: str = "classical",
    material: str | Material | None = None,
    pixel_size: tuple[float, float] | float | None = None,
    threshold: float | None = None,
    refine: str = "gaussian",
    model: Any = None,
    microscope: Any = None,
    trust_model_file: bool = False,
) -> ColumnResult:
    """Find every atom column of a 2D HAADF image of a 2H-MX2 monolayer.

    Runs :func:`compute_detection_map` and :func:`columns_from_map`; see
    them for the parameters (``model``: the deep method's U-Net, loaded or a
    weights file; default the shipped one; the atomai method's Segmentor or its
    file, with ``trust_model_file``; ``microscope``: the image's
    :class:`~napari_stem_defects.simulate.microscope.MicroscopeSettings`).

    Examples
    --------
    >>> from napari_stem_defects.simulate import simulate_twin, ImagingParams
    >>> twin = simulate_twin("MoS2", shape=(256, 256), pixel_size=0.12, defects={"V_M": 0.03},
    ...                      imaging=ImagingParams(dose=1e6), seed=3)
    >>> result = detect_columns(twin.image, material="MoS2")
    >>> sorted(result.sites["sublattice"].unique())
    ['M', 'X']
    >>> abs(len(result.sites) - len(twin.sites)) <= 2  # sites on the very edge may fall either way
    True
    """
    dmap = compute_detection_map(image, method, material=material, pixel_size=pixel_size, model=model,
                                 trust_model_file=trust_model_file)
    return columns_from_map(image, dmap, threshold=threshold, refine=refine, material=material,
                            pixel_size=pixel_size, microscope=microscope)


def detect_columns_stack(
    stack: np.ndarray,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    **kwargs,
) -> list[ColumnResult]:
    """Run :func:`detect_columns` on every frame of a (T, H, W) stack.

    Parameters
    ----------
    stack : ndarray, shape (T, H, W)
    progress : callable, optional
        Called as ``progress(frames_done, n_frames)`` after each frame.
    cancel : callable, optional
        Checked before each frame; returning True raises InterruptedError.
    **kwargs
        Passed to :func:`detect_columns`.

    Returns
    -------
    list of ColumnResult
        One per frame; each site table gains a ``frame`` column.
    """
    arr = np.asarray(stack)
    if arr.ndim != 3:
        raise ColumnDetectionError(f"expected a (frames, y, x) stack, got shape {arr.shape}")
    results = []
    for t in range(arr.shape[0]):
        if cancel is not None and cancel():
            raise InterruptedError("cancelled")
        result = detect_columns(arr[t], **kwargs)
        result.sites.insert(0, "frame", t)
        results.append(result)
        if progress is not None:
            progress(t + 1, arr.shape[0])
    return results
