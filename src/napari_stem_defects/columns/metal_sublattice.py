"""Which sublattice of a 2H domain holds the metals, from the ratio of the two sublattices' intensities.

The expected metal / X2 column ratio comes from the multislice-calibrated table at the microscope's
settings when they are known, otherwise from ``sum Z**1.7``; without settings, a material whose
ratio crosses 1 between microscopes (WSe2, Janus MoSSe, ...) gets a note that brightness alone
cannot decide (:func:`~napari_stem_defects.simulate.cross_sections.plausible_metal_x2_ratios`).
"""

from __future__ import annotations

import numpy as np

from ..materials import ATOMIC_NUMBER, Material

#: Z exponent used to decide which sublattice is the metal one without microscope settings.
_GAMMA = 1.7

__all__ = ["metal_coset"]


def _expected_ratio(material: Material) -> float:
    """Expected metal / X2 column intensity ratio."""
    m = sum(f * ATOMIC_NUMBER[e] ** _GAMMA for e, f in material.metals.items())
    x = 2 * sum(f * ATOMIC_NUMBER[e] ** _GAMMA for e, f in material.chalcogens.items())
    return m / x


def metal_coset(a: int, b: int, med: dict[int, float], material: Material | None,
                metal_ratio: float | None = None) -> tuple[int, str]:
    """Which of two cosets holds metals, from the ratio of their median intensities, and a note.

    ``metal_ratio`` is the expected metal / X2 intensity ratio (from the multislice table at the
    microscope settings); without it, ``sum Z**1.7`` of the material's columns, and a note says so
    when the table allows either answer at some microscope settings.

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> metal_coset(0, 1, {0: 1.0, 1: 2.5}, parse_material("MoS2"))  # MoS2: the metal is always brighter
    (1, '')
    >>> metal, note = metal_coset(0, 1, {0: 1.0, 1: 1.15}, parse_material("WSe2"))  # Se2 may outshine W
    >>> metal, note.startswith("which sublattice holds the metals is uncertain")
    (1, True)
    >>> metal_coset(0, 1, {0: 1.0, 1: 1.15}, parse_material("WSe2"), metal_ratio=0.87)  # told: 60 kV, 50 mrad
    (0, '')
    """
    bright, dim = (a, b) if med[a] >= med[b] else (b, a)
    if material is None:
        return bright, "no material given: the brighter sublattice is taken as the metal one"
    if med[dim] <= 0 or med[bright] <= 0:
        return bright, "sublattice intensities are not positive: the brighter one is taken as metal"
    typed = bool(metal_ratio) and bool(np.isfinite(metal_ratio))
    expected = np.log(metal_ratio if typed else _expected_ratio(material))
    measured = np.log(med[bright] / med[dim])
    # the table at the microscope's settings pins the ratio far better than Z^1.7 does
    if abs(expected) < (0.05 if typed else 0.15):
        return bright, (f"in {material.name} metal and X2 columns are nearly equally bright; "
                        "the metal sublattice assignment is uncertain")
    metal = bright if abs(measured - expected) <= abs(-measured - expected) else dim
    return metal, ("" if typed else _unsure_without_microscope(material, float(np.exp(measured))))


def _unsure_without_microscope(material: Material, bright_over_dim: float) -> str:
    """A note when, without microscope settings, either sublattice could be the metal one at some settings."""
    from ..simulate.cross_sections import plausible_metal_x2_ratios

    lo, hi = plausible_metal_x2_ratios(material)
    if not (lo <= 1.0 / bright_over_dim and bright_over_dim <= hi):
        return ""
    return (f"which sublattice holds the metals is uncertain: in {material.name} a metal column is "
            f"{lo:.2f} to {hi:.2f} times as bright as an X2 column depending on beam energy and detector "
            f"(multislice table), and the two sublattices here differ by {bright_over_dim:.2f}; "
            "give the microscope settings (--kv, --detector, or the Microscope row) to decide")
