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
#: A column between these fractions of its sublattice's median has lost about half its scattering:
#: one atom of an X2 pair (a metal column is full, empty or another metal).
HALF_RANGE: tuple[float, float] = (0.3, 0.7)
#: Where brightness cannot decide, the sublattice with at least this many such columns, and this many
#: times the other's share of them, is taken as the chalcogen one.
HALF_MIN_COLUMNS: int = 8
HALF_RATIO: float = 2.0

#: What a note asks for where the image alone leaves the metal sublattice open.
_ASK = "give the microscope settings (--kv, --detector, or the Microscope row)"

__all__ = ["HALF_MIN_COLUMNS", "HALF_RANGE", "HALF_RATIO", "central_mean", "metal_coset"]


def _expected_ratio(material: Material) -> float:
    """Expected metal / X2 column intensity ratio."""
    m = sum(f * ATOMIC_NUMBER[e] ** _GAMMA for e, f in material.metals.items())
    x = 2 * sum(f * ATOMIC_NUMBER[e] ** _GAMMA for e, f in material.chalcogens.items())
    return m / x


def metal_coset(a: int, b: int, med: dict[int, float], material: Material | None,
                metal_ratio: float | None = None,
                values: dict[int, np.ndarray] | None = None) -> tuple[int, str]:
    """Which of two cosets holds metals, from the ratio of their median intensities, and a note.

    ``metal_ratio`` is the expected metal / X2 intensity ratio (from the multislice table at the
    microscope settings); without it, ``sum Z**1.7`` of the material's columns, and a note says so
    when the table allows either answer at some microscope settings. In that case, given the
    cosets' column intensities (``values``), the lost-atom population decides when it is clear:
    an X2 column that lost one atom keeps about half its intensity (:data:`HALF_RANGE`), which
    a metal column cannot, so a coset with at least :data:`HALF_MIN_COLUMNS` such columns and
    :data:`HALF_RATIO` times the other's share of them is the chalcogen one. The same rule decides
    where the expected ratio itself is close to 1 (Janus MoSSe: Mo against S+Se). In an alloy the
    cosets are compared by the mean of their central columns instead of the median, which falls on
    whichever content is commoner (in MoWSSe at 60 kV: on Mo, dimmer than the X2 median, while the
    metal columns' central mean is a sixth above it).

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
    >>> values = {0: np.full(100, 1.0), 1: np.r_[np.full(88, 1.15), np.full(12, 0.55)]}  # 12 lost an atom
    >>> metal, note = metal_coset(0, 1, {0: 1.0, 1: 1.15}, parse_material("WSe2"), values=values)
    >>> metal, "12 against 0" in note  # the brighter sublattice is the chalcogen one here
    (0, True)
    >>> metal, note = metal_coset(0, 1, {0: 1.0, 1: 1.15}, parse_material("Janus-MoSSe"), values=values)
    >>> metal, note.startswith("in Janus-MoSSe metal and X2 columns are nearly equally bright; the sublattice")
    (0, True)
    """
    if material is not None and values is not None and _mixed(material):
        # an alloy's median falls on one of its contents (Mo or W, whichever is commoner): the central
        # mean weighs them as the expected ratio does
        med = {**med, **{c: central_mean(values[c], med[c]) for c in (a, b)}}
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
        metal, why = bright, f"in {material.name} metal and X2 columns are nearly equally bright"
        sure = "" if typed else f"; {_ASK} to be sure"
        undecided = f"the metal sublattice assignment is uncertain{sure}"
    else:
        metal = bright if abs(measured - expected) <= abs(-measured - expected) else dim
        why = None if typed else _either_sublattice(material, float(np.exp(measured)))
        if why is None:
            return metal, ""
        sure, undecided = f"; {_ASK} to be sure", f"{_ASK} to decide"
    # where brightness cannot decide, the lost atoms may
    by_lost_atoms = None if values is None else _lost_atom_metal(a, b, med, values)
    if by_lost_atoms is None:
        return metal, f"{why}; {undecided}"
    metal, n_x, n_metal = by_lost_atoms
    return metal, (f"{why}; the sublattice with more half-intensity columns (an X2 pair that lost one atom: "
                   f"{n_x} against {n_metal}) was taken as the chalcogen one{sure}")


def _mixed(material: Material) -> bool:
    """Whether a sublattice of ``material`` holds several contents (a metal or chalcogen alloy)."""
    return len(material.metals) > 1 or (len(material.chalcogens) > 1 and not material.janus)


def central_mean(values: np.ndarray, fallback: float) -> float:
    """Mean of a coset's column intensities between their 10th and 90th percentiles (vacancies and
    adatoms left out), or ``fallback`` with fewer than 10 columns."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 10:
        return fallback
    lo, hi = np.percentile(v, [10, 90])
    kept = v[(v >= lo) & (v <= hi)]
    return float(kept.mean()) if len(kept) else fallback


def _lost_atom_metal(a: int, b: int, med: dict[int, float],
                     values: dict[int, np.ndarray]) -> tuple[int, int, int] | None:
    """The metal coset by the lost-atom rule, with both cosets' half-intensity counts; None when unclear."""
    halves = {c: _half_columns(values[c], med[c]) for c in (a, b)}
    x_coset, metal = sorted((a, b), key=lambda c: -halves[c][1])
    (n_x, share_x), (n_metal, share_metal) = halves[x_coset], halves[metal]
    if n_x >= HALF_MIN_COLUMNS and share_x >= HALF_RATIO * share_metal:
        return metal, n_x, n_metal
    return None


def _half_columns(values: np.ndarray, median: float) -> tuple[int, float]:
    """How many columns of a coset are at about half its median intensity, and their share."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    n = int(np.count_nonzero((v > HALF_RANGE[0] * median) & (v < HALF_RANGE[1] * median)))
    return n, n / max(len(v), 1)


def _either_sublattice(material: Material, bright_over_dim: float) -> str | None:
    """Why, without microscope settings, either sublattice could be the metal one here; None when not."""
    from ..simulate.cross_sections import plausible_metal_x2_ratios

    lo, hi = plausible_metal_x2_ratios(material)
    if not (lo <= 1.0 / bright_over_dim and bright_over_dim <= hi):
        return None
    return (f"which sublattice holds the metals is uncertain: in {material.name} a metal column is "
            f"{lo:.2f} to {hi:.2f} times as bright as an X2 column depending on beam energy and detector "
            f"(multislice table), and the two sublattices here differ by {bright_over_dim:.2f}")
