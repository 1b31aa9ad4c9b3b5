"""Array layout of one signal: is it an image, and in which axis order.

Given the data and axes of one rsciio signal, this module checks the values,
tells images from spectra, spectrum images, 4D-STEM and diffraction
patterns, and returns the data as (y, x) or (t, y, x). It also turns gray
images stored with colour channels into one channel. It imports neither
napari, Qt nor a parser.

Decisions
---------
* **Diffraction patterns** (signal axes in reciprocal length, e.g.
  ``1/nm``, or in angle, e.g. ``mrad``) are refused with a
  :class:`StemReadError`: the plugin finds atom columns in real space.
* **Spectra, spectrum images, 4D-STEM** and data of more dimensions are
  refused with a :class:`StemReadError` saying what the file holds.
* **RGB(A) images.** Alpha is ignored. If R = G = B, the R channel is the
  grayscale image (exact, no rescaling). With a tolerance (the reader gives
  one for JPEG, whose decoding can leave channels of a gray image a level or
  two apart), channels within it are averaged (rounded, same dtype). Any
  other colour image is refused.
* **Axis order.** Data come out as (y, x) or (t, y, x). When rsciio names
  the two signal axes ``X`` then ``Y`` in array order (its NCEM EMD reader
  transposes the stored array), they are swapped back so rows are Y, as the
  file's own ``dim1 = Y`` label says.
* **Empty, complex, non-numeric and all-NaN/inf data** are refused, and so
  are "images" with a side under :data:`MIN_IMAGE_SIDE` pixels (a (512, 512,
  1) array is not 512 frames of 512 x 1 pixels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .stem_image import StemReadError
from .units import unit_kind

#: Smallest side (pixels) of an image: narrower arrays are profiles or misread channel axes.
MIN_IMAGE_SIDE = 4

__all__ = [
    "axes_for",
    "check_values",
    "collapse_channels",
    "drop_unit_navigation",
    "image_layout",
    "structured_rgb_to_gray",
]


# --------------------------------------------------------------------------- channels


def collapse_channels(data: np.ndarray, filename: str, tolerance: int = 0) -> np.ndarray:
    """Turn a gray image stored as RGB(A) (channels last) into one channel.

    Alpha (4th channel, or 2nd of a gray+alpha image) is ignored. The result
    is the first channel when all colour channels are equal; with
    ``tolerance`` > 0 channels that differ by at most that many levels are
    averaged and rounded to the input dtype.

    Parameters
    ----------
    data : ndarray
        Image with 2, 3 or 4 channels on the last axis.
    filename : str
        Named in the error message.
    tolerance : int, optional
        Gray levels the colour channels may differ by and still count as gray.

    Returns
    -------
    ndarray
        The image without its channel axis, in the input dtype.

    Raises
    ------
    StemReadError
        The channels differ: a real colour image.
    """
    if data.shape[-1] == 2:  # gray + alpha
        return data[..., 0]
    r, g, b = (data[..., i] for i in range(3))
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r)
    if tolerance > 0:
        rgb = data[..., :3].astype(np.int64)
        if int((rgb.max(axis=-1) - rgb.min(axis=-1)).max()) <= tolerance:
            return np.rint(rgb.mean(axis=-1)).astype(data.dtype)
    raise StemReadError(
        f"{filename} is a colour (RGB) image whose red, green and blue channels differ, for "
        "example a figure, a false-colour map or an annotated picture. The plugin needs raw "
        "detector intensities: open the original grayscale file (dm3/dm4/emd/tif), or save "
        "a single-channel grayscale copy if you accept that intensities come from a rendering."
    )


def structured_rgb_to_gray(data: np.ndarray, filename: str) -> np.ndarray:
    """rsciio's RGB(A) structured arrays (fields R, G, B, A) to one channel.

    Parameters
    ----------
    data : ndarray
        A structured array with fields ``R``, ``G``, ``B`` (and maybe ``A``).
    filename : str
        Named in the error message.

    Returns
    -------
    ndarray
        The gray image, as :func:`collapse_channels` makes it.

    Raises
    ------
    StemReadError
        The fields are not R, G, B, or the channels differ.
    """
    names = [n for n in ("R", "G", "B") if n in (data.dtype.names or ())]
    if len(names) != 3:
        raise StemReadError(f"{filename} holds a structured array with fields "
                            f"{data.dtype.names}, not an image.")
    stacked = np.stack([np.asarray(data[n]) for n in names], axis=-1)
    return collapse_channels(stacked, filename)


# --------------------------------------------------------------------------- axes and values


def axes_for(data: np.ndarray, axes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Axes in array order, one per dimension (filled in when the reader gave fewer)."""
    if len(axes) == data.ndim:
        sizes = [a.get("size") for a in axes]
        if any(s is not None and int(s) != n for s, n in zip(sizes, data.shape)):
            indexed = [a.get("index_in_array") for a in axes]
            if sorted(i for i in indexed if i is not None) == list(range(data.ndim)):
                axes = sorted(axes, key=lambda a: a["index_in_array"])
        return axes
    # The reader gave no or partial axes: last two are the image, the rest navigation.
    return [{"size": n, "scale": 1.0, "units": None, "navigate": i < data.ndim - 2}
            for i, n in enumerate(data.shape)]


def drop_unit_navigation(data: np.ndarray, axes: list[dict[str, Any]]
                         ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Remove navigation axes of length 1 (a 'stack' of one frame is an image)."""
    keep = [i for i, a in enumerate(axes) if not (a.get("navigate") and data.shape[i] == 1)]
    if len(keep) == data.ndim:
        return data, axes
    return data.reshape([data.shape[i] for i in keep]), [axes[i] for i in keep]


def check_values(data: np.ndarray, what: str, scan: bool = True) -> None:
    """Refuse empty, complex and all-NaN/inf data.

    ``scan=False`` checks only the shape and type (a lazy array's values are
    checked frame by frame when they are read).

    Raises
    ------
    StemReadError
        The data hold no usable intensities; the message names ``what``.
    """
    if data.size == 0:
        raise StemReadError(f"{what} holds an empty array (shape {data.shape}); there is no "
                            "image to analyse.")
    if np.iscomplexobj(data):
        raise StemReadError(f"{what} holds complex values (an FFT or exit wave?), not "
                            "detector intensities. Open the real-space HAADF image instead.")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise StemReadError(f"{what} holds {data.dtype} values, not image intensities.")
    if scan and np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).any():
        raise StemReadError(f"{what} holds only NaN or infinite values; the acquisition or "
                            "export failed. Re-export the image.")


def _shape_text(shape: tuple[int, ...]) -> str:
    """``(64, 128)`` -> ``'64 × 128'``."""
    return " × ".join(str(n) for n in shape)


# --------------------------------------------------------------------------- layout


def image_layout(data: np.ndarray, axes: list[dict[str, Any]], what: str
                 ) -> tuple[np.ndarray, list[dict[str, Any]], tuple[dict, dict]]:
    """Check the signal/navigation structure; return data as (y, x) or (t, y, x).

    Parameters
    ----------
    data : ndarray
        The signal's data, one axis dict per dimension in ``axes``.
    axes : list of dict
        rsciio axis dicts in array order (``navigate``, ``units``, ``name``).
    what : str
        The file (and signal) named in error messages.

    Returns
    -------
    data, navigation axes, (y axis, x axis)

    Raises
    ------
    StemReadError
        The signal is a spectrum, spectrum image, 4D-STEM dataset,
        diffraction pattern or has more dimensions than a stack of frames.
    """
    nav_i = [i for i, a in enumerate(axes) if a.get("navigate")]
    sig_i = [i for i, a in enumerate(axes) if not a.get("navigate")]
    nav_shape = tuple(data.shape[i] for i in nav_i)
    sig_shape = tuple(data.shape[i] for i in sig_i)
    if len(sig_i) == 1:
        unit = axes[sig_i[0]].get("units")
        unit_txt = f" in {unit}" if unit else ""
        if not nav_i:
            raise StemReadError(
                f"{what} holds a single spectrum ({sig_shape[0]} channels{unit_txt}), not an "
                "image. Open it in HyperSpy or another spectroscopy tool; this plugin needs a "
                "2D HAADF-STEM image.")
        raise StemReadError(
            f"{what} holds a spectrum image or line scan ({_shape_text(nav_shape)} positions, "
            f"{sig_shape[0]} channels{unit_txt}), not an image. Open the HAADF/ADF image "
            "acquired with it, or make an image from it in HyperSpy.")
    if len(sig_i) != 2:
        raise StemReadError(
            f"{what} holds a {data.ndim}D dataset (shape {data.shape}) with {len(sig_i)} "
            "signal axes, not a 2D image or a stack of 2D frames.")
    if [str(axes[i].get("name") or "").strip().lower() for i in sig_i] == ["x", "y"]:
        # rsciio says the rows are X (its NCEM EMD reader transposes the stored (Y, X)
        # array): put Y on the rows again, as the file's own dim labels and ncempy have it.
        sig_i = sig_i[::-1]
        sig_shape = sig_shape[::-1]
    _check_real_space(axes[sig_i[0]], axes[sig_i[1]], what, sig_shape, nav_shape)
    if min(sig_shape) < MIN_IMAGE_SIDE:
        frames = f"{_shape_text(nav_shape)} frames of " if nav_shape else ""
        raise StemReadError(
            f"{what} holds {frames}{_shape_text(sig_shape)} pixels, not an image (a side under "
            f"{MIN_IMAGE_SIDE} pixels). If the array has a channel or frame axis in another place, save it "
            "as (y, x) or (t, y, x).")
    if len(nav_i) == 2:
        raise StemReadError(
            f"{what} holds 4D-STEM data (scan {_shape_text(nav_shape)}, patterns "
            f"{_shape_text(sig_shape)}), not an image. Make a virtual HAADF/ADF image (e.g. in "
            "py4DSTEM or HyperSpy) and open that.")
    if len(nav_i) > 2:
        raise StemReadError(
            f"{what} holds a {data.ndim}D dataset (shape {data.shape}); the plugin opens 2D "
            "images and (t, y, x) stacks. Export the frames you need as a stack.")
    order = nav_i + sig_i
    if order != list(range(data.ndim)):
        data = np.transpose(data, order)
    return data, [axes[i] for i in nav_i], (axes[sig_i[0]], axes[sig_i[1]])


def _check_real_space(ax_y: Mapping[str, Any], ax_x: Mapping[str, Any], what: str,
                      sig_shape: tuple[int, ...], nav_shape: tuple[int, ...]) -> None:
    """Refuse 2D signals whose axes are not in real space (diffraction, energy, time)."""
    kinds = {unit_kind(ax_y.get("units")), unit_kind(ax_x.get("units"))}
    units = f"{ax_y.get('units')}, {ax_x.get('units')}"
    if kinds & {"reciprocal", "angle"}:
        if len(nav_shape) == 2:
            return  # 4D-STEM: reported by the caller with its own message
        raise StemReadError(
            f"{what} holds a diffraction pattern or FFT ({_shape_text(sig_shape)}, axes in "
            f"{units}), not a real-space image. This plugin finds atom columns in HAADF-STEM "
            "images; open the real-space image of the same area.")
    if kinds & {"energy", "time"}:
        raise StemReadError(
            f"{what} holds a 2D signal with axes in {units} (for example an energy-time "
            "map), not a real-space image.")
