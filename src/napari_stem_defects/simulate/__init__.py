"""Digital twins: fast, seeded HAADF-STEM simulations of 2H-MX2 monolayers with exact labels.

Pure numpy/scipy. The main entry points are :func:`simulate_twin` (one 2H grain) and
:func:`simulate_sample` (a composite specimen: grains, mirror twins, 1T/1T' regions, holes,
amorphous patches, NaN masks). Column cross-sections follow ``sum Z**gamma`` or, with
:func:`calibrated_imaging`, a table calibrated to multislice (:mod:`.cross_sections`).
:func:`simulate_multislice_twin` computes the same twin's image with abTEM (the ``multislice``
extra; imported only when called).
"""

from .defects import CELL_CLASSES, DEFECT_TYPES, SITE_DEFECTS, species_string
from .imaging import ImagingParams
from .imaging_conditions import calibrated_imaging, random_imaging
from .lattice import HoneycombLattice
from .microscope import MicroscopeSettings
from .multislice import simulate_multislice_twin
from .regions import Amorphous, Disc, Grain, HalfPlane, Hole, Mask, MirrorRegion, PhaseRegion, Polygon, Rect
from .sample import simulate_sample
from .sample_tables import SAMPLE_CELL_COLUMNS, SAMPLE_SITE_COLUMNS
from .stack import StackTwin, simulate_stack
from .twin import CELL_COLUMNS, SITE_COLUMNS, DigitalTwin, simulate_twin, with_dose

__all__ = [
    "CELL_CLASSES",
    "CELL_COLUMNS",
    "DEFECT_TYPES",
    "SAMPLE_CELL_COLUMNS",
    "SAMPLE_SITE_COLUMNS",
    "SITE_COLUMNS",
    "SITE_DEFECTS",
    "Amorphous",
    "DigitalTwin",
    "Disc",
    "Grain",
    "HalfPlane",
    "Hole",
    "HoneycombLattice",
    "ImagingParams",
    "MicroscopeSettings",
    "Mask",
    "MirrorRegion",
    "PhaseRegion",
    "Polygon",
    "Rect",
    "StackTwin",
    "calibrated_imaging",
    "random_imaging",
    "simulate_multislice_twin",
    "simulate_sample",
    "simulate_stack",
    "simulate_twin",
    "species_string",
    "with_dose",
]
