"""Reading STEM files (through rosettasciio) into calibrated :class:`StemImage` objects."""

from .stem_image import LENGTH_UNIT, StemImage, StemReadError

__all__ = ["LENGTH_UNIT", "StemImage", "StemReadError"]
