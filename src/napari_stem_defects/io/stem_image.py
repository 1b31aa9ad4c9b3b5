"""A calibrated STEM image as every stage of the plugin sees it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The one physical unit of every layer: positions and pixel sizes are in Å.
LENGTH_UNIT = "angstrom"


class StemReadError(ValueError):
    """A file was read but holds nothing the plugin can analyse, or is corrupt.

    The message says what the file holds and what to do instead.
    """


@dataclass
class StemImage:
    """One image (y, x) or stack of frames (t, y, x) with its calibration.

    Parameters
    ----------
    data : ndarray
        Intensities, 2D (y, x) or 3D (t, y, x). Never RGB.
    pixel_size : tuple of float, optional
        Pixel size (y, x) in Å; None when the file stores no real-space
        calibration.
    name : str
        Layer name a person can read (file stem plus signal title).
    metadata : dict
        What later stages need: ``pixel_size_A`` (tuple or None),
        ``calibrated`` (bool), ``beam_energy_keV``, ``detector``,
        ``collection_angles_mrad`` (inner, outer), ``frame_interval_s``,
        ``source_path``, ``signal_title``, ``original_metadata`` (the
        reader's own tree, as a dict), when known; absent keys are None.
    """

    data: np.ndarray
    pixel_size: tuple[float, float] | None
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim not in (2, 3):
            raise StemReadError(f"{self.name}: expected a 2D image or (t, y, x) stack, got shape {self.data.shape}")
        if self.pixel_size is not None:
            self.pixel_size = (float(self.pixel_size[0]), float(self.pixel_size[1]))
            if not all(math.isfinite(v) and v > 0 for v in self.pixel_size):
                raise StemReadError(f"{self.name}: pixel size {self.pixel_size} Å is not a pair of positive numbers")
        self.metadata.setdefault("pixel_size_A", self.pixel_size)
        self.metadata.setdefault("calibrated", self.pixel_size is not None)
        for key in ("beam_energy_keV", "detector", "collection_angles_mrad", "frame_interval_s",
                    "source_path", "signal_title"):
            self.metadata.setdefault(key, None)
        self.metadata.setdefault("original_metadata", {})

    @property
    def is_stack(self) -> bool:
        """True for a (t, y, x) stack of frames."""
        return self.data.ndim == 3

    @property
    def scale(self) -> tuple[float, ...]:
        """napari layer scale: Å per pixel (1 for the frame axis; 1 Å if uncalibrated)."""
        yx = self.pixel_size if self.pixel_size is not None else (1.0, 1.0)
        return (1.0, *yx) if self.is_stack else tuple(yx)

    @property
    def units(self) -> tuple[str, ...]:
        """napari layer units matching :attr:`scale` ('pixel' if uncalibrated)."""
        unit = LENGTH_UNIT if self.pixel_size is not None else "pixel"
        return ("", unit, unit) if self.is_stack else (unit, unit)
