"""Named digital twins: the bundled samples, reproducible by name and seed."""

from __future__ import annotations

from collections.abc import Callable

from .imaging import ImagingParams
from .regions import Amorphous, Disc, Grain, HalfPlane, Hole, Mask, MirrorRegion, PhaseRegion, Polygon, Rect
from .sample import simulate_sample
from .twin import DigitalTwin, simulate_twin


def mos2_vacancies(seed: int = 2024) -> DigitalTwin:
    """MoS2 at high dose (1e6 e/Å^2) with chalcogen and metal vacancies and their complexes."""
    return simulate_twin(
        "MoS2", (512, 512), 0.12, rotation_deg=7.0, seed=seed,
        defects={"V_X1": 0.04, "V_X2": 0.015, "V_M": 0.01, "V_X1+V_M": 0.005, "V_X2+V_M": 0.005},
        imaging=ImagingParams(dose=1e6, line_jitter=0.1, tail_fraction=0.12),
    )


def wse2_low_dose(seed: int = 2025) -> DigitalTwin:
    """WSe2 at low dose (1e4 e/Å^2) with vacancies, antisites and Mo dopants."""
    return simulate_twin(
        "WSe2", (512, 512), 0.12, rotation_deg=-12.0, seed=seed,
        defects={"V_X1": 0.03, "V_X2": 0.01, "V_M": 0.005, "M_X": 0.005, "dopant_M": 0.02},
        imaging=ImagingParams(dose=1e4, read_noise=0.5, line_jitter=0.15, background=5e-3),
    )


def mowsse_alloy(seed: int = 2026) -> DigitalTwin:
    """Quaternary Mo0.5W0.5SSe alloy at 1e5 e/Å^2 with chalcogen vacancies and adatoms."""
    return simulate_twin(
        "MoWSSe", (512, 512), 0.14, rotation_deg=21.0, seed=seed,
        defects={"V_X1": 0.03, "V_X2": 0.01, "V_M": 0.005, "adatom": 0.005},
        imaging=ImagingParams(dose=1e5, line_jitter=0.1),
    )


def mos2_real_sample(seed: int = 2028) -> DigitalTwin:
    """MoS2 as real specimens look, 1024x1024 at 0.12 Å/px, 2e5 e/Å^2, with exact truth.

    Two grains 18 degrees apart (a tilt grain boundary running down the right
    side), a mirror twin domain in the first grain (above a line along its a1
    direction), a 1T' region in the first grain (a 2H/1T' interface), a hole
    (radius 80 px, about 5 neighbour distances), an amorphous patch with a
    contamination blob in the second grain, and a 140x170 px NaN mask; point
    defects in the cells off every boundary.
    """
    regions = [
        Grain(None, rotation_deg=7.0),
        MirrorRegion(HalfPlane.along((330.0, 0.0), 7.0)),
        Grain(HalfPlane.along((0.0, 760.0), -80.0), rotation_deg=25.0),
        PhaseRegion(Polygon(((640.0, 180.0), (610.0, 330.0), (700.0, 450.0), (860.0, 430.0), (950.0, 300.0),
                             (900.0, 160.0), (760.0, 120.0))), "1T", distorted=True, distortion_A=0.15),
        Hole(Disc((500.0, 470.0), 80.0)),
        Amorphous(Disc((250.0, 880.0), 110.0), contamination=6.0),
        Mask(Rect(840.0, 820.0, 980.0, 990.0)),
    ]
    return simulate_sample(
        "MoS2", (1024, 1024), 0.12, regions=regions, seed=seed,
        defects={"V_X1": 0.03, "V_X2": 0.008, "V_M": 0.005, "V_X1+V_M": 0.003, "adatom": 0.003},
        imaging=ImagingParams(dose=2e5, line_jitter=0.08),
    )


#: Presets by name (the CLI's ``--preset`` and the napari sample keys).
PRESETS: dict[str, Callable[..., DigitalTwin]] = {
    "mos2_vacancies": mos2_vacancies,
    "wse2_low_dose": wse2_low_dose,
    "mowsse_alloy": mowsse_alloy,
    "mos2_real_sample": mos2_real_sample,
}
