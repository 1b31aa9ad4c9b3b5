"""Digital twins: fast, seeded HAADF-STEM simulations of 2H-MX2 monolayers with exact labels.

Pure numpy/scipy. The main entry point is :func:`simulate_twin`.
"""

from .defects import CELL_CLASSES, DEFECT_TYPES, SITE_DEFECTS, species_string
from .imaging import ImagingParams, random_imaging
from .lattice import HoneycombLattice
from .stack import StackTwin, simulate_stack
from .twin import CELL_COLUMNS, SITE_COLUMNS, DigitalTwin, simulate_twin

__all__ = [
    "CELL_CLASSES",
    "CELL_COLUMNS",
    "DEFECT_TYPES",
    "SITE_COLUMNS",
    "SITE_DEFECTS",
    "DigitalTwin",
    "HoneycombLattice",
    "ImagingParams",
    "StackTwin",
    "random_imaging",
    "simulate_stack",
    "simulate_twin",
    "species_string",
]
