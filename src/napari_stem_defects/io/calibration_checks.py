"""Is a pixel size plausible? Checks for calibrations read from files and given on the command line.

A damaged header can give a pixel of 0.014 x 56.8 Å, and a typo on the
command line a pixel of 100 Å or 1e-6 Å; neither is an atomic-resolution
HAADF image, and an analysis that trusts them writes wrong lengths and
concentrations without a word. These helpers say so.

Decisions
---------
* **Files** (:func:`calibration_warning`): a pixel size outside
  :data:`FILE_PIXEL_RANGE_A` (0.1 pm to 10 µm) is implausible for any
  electron microscope image; y and x sizes that differ by more than
  :data:`MAX_ASPECT` (20 %) are strongly non-square (scan distortion stays
  within a few per cent). Both are warned about, not refused: the image
  opens with the file's calibration and the warning, and the calibration
  check can measure the real value from the lattice.
* **Values a person gives** (:func:`check_pixel_size`, the ``--pixel-size``
  options): zero, negative, NaN and infinite values are refused, and so are
  values outside :data:`ATOMIC_PIXEL_RANGE_A` (0.005 to 2 Å), where no
  atom column of a TMD can be resolved or a pixel would be smaller than
  any STEM scans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ATOMIC_PIXEL_RANGE_A", "FILE_PIXEL_RANGE_A", "MAX_ASPECT", "calibration_warning", "check_pixel_size"]

#: Pixel sizes (Å) a file's calibration may have without a warning.
FILE_PIXEL_RANGE_A = (1e-3, 1e5)
#: Pixel sizes (Å) of an atomic-resolution image of a TMD: columns ~1.8 Å apart need < 0.7 Å per pixel.
ATOMIC_PIXEL_RANGE_A = (0.005, 2.0)
#: Largest ratio of the y and x pixel sizes that is not called strongly non-square.
MAX_ASPECT = 1.2


def calibration_warning(pixel_size: Sequence[float] | None, what: str) -> str | None:
    """A warning for an implausible or strongly non-square pixel size (y, x) in Å, or None.

    Parameters
    ----------
    pixel_size : (float, float) or None
        The calibration read from a file.
    what : str
        The file (and signal), named in the message.

    Returns
    -------
    str or None

    Examples
    --------
    >>> calibration_warning((0.12, 0.12), "a.dm4") is None
    True
    >>> print(calibration_warning((0.014, 56.8), "a.mrc"))  # doctest: +NORMALIZE_WHITESPACE
    a.mrc: the file's pixel size 0.014 x 56.8 Å is strongly non-square (y/x 0.00025); the header may be
    damaged. Check it with the calibration widget or `napari-stem-defects calibrate`.
    """
    if pixel_size is None:
        return None
    py, px = (float(v) for v in pixel_size)
    sizes = f"{py:.3g} x {px:.3g} Å"
    low, high = FILE_PIXEL_RANGE_A
    check = " Check it with the calibration widget or `napari-stem-defects calibrate`."
    if not all(math.isfinite(v) and low <= v <= high for v in (py, px)):
        return (f"{what}: the file's pixel size {sizes} is outside the {low:g} to {high:g} Å any electron "
                f"microscope image has; the calibration is probably damaged.{check}")
    if max(py, px) > MAX_ASPECT * min(py, px):
        return (f"{what}: the file's pixel size {sizes} is strongly non-square (y/x {py / px:.2g}); the header "
                f"may be damaged.{check}")
    return None


def check_pixel_size(value: float, name: str = "pixel size") -> float:
    """``value`` as a float when it is a plausible atomic-resolution pixel size in Å; ValueError otherwise.

    Examples
    --------
    >>> check_pixel_size(0.12)
    0.12
    >>> check_pixel_size(0)
    Traceback (most recent call last):
    ...
    ValueError: pixel size 0 is not a pixel size: give a positive number of Å per pixel (e.g. 0.12)
    """
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number of Å per pixel (e.g. 0.12)") from None
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"{name} {value:g} is not a pixel size: give a positive number of Å per pixel (e.g. 0.12)")
    low, high = ATOMIC_PIXEL_RANGE_A
    if not low <= size <= high:
        raise ValueError(f"{name} {size:g} Å is not a plausible pixel size of an atomic-resolution image "
                         f"({low:g} to {high:g} Å; typically 0.05-0.3 Å). Is it in nm or pm? Give Å")
    return size
