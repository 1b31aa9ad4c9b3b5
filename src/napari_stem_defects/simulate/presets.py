"""Named digital twins: the bundled samples, reproducible by name and seed."""

from __future__ import annotations

from collections.abc import Callable

from .imaging import ImagingParams
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


#: Presets by name (the CLI's ``--preset`` and the napari sample keys).
PRESETS: dict[str, Callable[..., DigitalTwin]] = {
    "mos2_vacancies": mos2_vacancies,
    "wse2_low_dose": wse2_low_dose,
    "mowsse_alloy": mowsse_alloy,
}
