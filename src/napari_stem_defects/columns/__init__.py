"""Atom columns: detection, sub-pixel refinement, lattice sites, sublattice and species.

The headless API (no Qt, no torch unless ``method="deep"``)::

    from napari_stem_defects.columns import detect_columns
    result = detect_columns(image, material="MoS2", pixel_size=0.12)
    result.sites  # one row per lattice site, empty sites included
"""

from .pipeline import (
    DEFAULT_THRESHOLD,
    METHODS,
    REFINEMENTS,
    ColumnDetectionError,
    DetectionMap,
    columns_from_map,
    compute_detection_map,
    detect_columns,
    validate_image,
)
from .refine import GaussianFit, refine_com, refine_gaussian
from .result import EMPTY, SITE_COLUMNS, SITES_CSV_COLUMNS, ColumnResult, SpeciesFit

__all__ = [
    "DEFAULT_THRESHOLD", "EMPTY", "METHODS", "REFINEMENTS", "SITES_CSV_COLUMNS", "SITE_COLUMNS",
    "ColumnDetectionError", "ColumnResult", "DetectionMap", "GaussianFit", "SpeciesFit",
    "columns_from_map", "compute_detection_map", "detect_columns", "refine_com", "refine_gaussian",
    "validate_image",
]
