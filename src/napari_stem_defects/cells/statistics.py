"""Defect statistics of a classified cell table: counts, concentrations per cm^2 with 95 % intervals, composition."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..materials import Material, parse_material
from ..vocabulary import CELL_CLASSES
from .geometry import cell_area_A2
from .uncertainty import LEVEL, count_intervals

#: 1 Å^2 in cm^2.
A2_TO_CM2 = 1e-16


@dataclass
class DefectStatistics:
    """Counts and concentrations of cell classes over an analysed area.

    Attributes
    ----------
    n_cells : int
        Complete cells counted (metal and X2 column both in the image).
    area_nm2 : float
        Analysed area: ``n_cells`` unit cells, in nm^2.
    counts : dict of str to int
        Cells of each class.
    concentration_cm2 : dict of str to float
        Defective cells of each class per cm^2 (nan without a calibration).
    fraction : dict of str to float
        Share of cells in each class.
    composition : dict of str to float
        Share of metal sites ('M:Mo', 'M:W', 'M:empty', ...) and of X sites
        ('X:S2', 'X:SSe', 'X:S', 'X:empty', ...) holding each content.
    expected_count : dict of str to float
        Sum of the cells' probabilities of each class (the count a calibrated
        classifier expects; verified cells count as certain).
    count_variance : dict of str to float
        Variance of that count from the classification, ``sum p (1 - p)``.
    count_ci95 : dict of str to [float, float]
        95 % interval of the expected number of cells of each class in the analysed
        area: counting (Poisson) and classification uncertainty combined
        (:func:`napari_stem_defects.cells.uncertainty.rate_interval`).
    concentration_ci95_cm2 : dict of str to [float, float]
        ``count_ci95`` over the analysed area, per cm^2 (nan without a calibration).
    interval_level : float
        The level of those intervals (0.95).
    """

    n_cells: int
    area_nm2: float
    counts: dict[str, int]
    concentration_cm2: dict[str, float]
    fraction: dict[str, float]
    composition: dict[str, float]
    expected_count: dict[str, float] = field(default_factory=dict)
    count_variance: dict[str, float] = field(default_factory=dict)
    count_ci95: dict[str, list[float]] = field(default_factory=dict)
    concentration_ci95_cm2: dict[str, list[float]] = field(default_factory=dict)
    interval_level: float = LEVEL

    def as_dict(self) -> dict:
        """Plain dict (for JSON)."""
        return asdict(self)

    def table(self) -> pd.DataFrame:
        """One row per class: count, fraction, concentration per cm^2 and its 95 % interval."""
        nan = [float("nan"), float("nan")]
        return pd.DataFrame({
            "class": list(self.counts),
            "count": list(self.counts.values()),
            "fraction": [self.fraction[c] for c in self.counts],
            "concentration_cm2": [self.concentration_cm2[c] for c in self.counts],
            "concentration_lo95_cm2": [self.concentration_ci95_cm2.get(c, nan)[0] for c in self.counts],
            "concentration_hi95_cm2": [self.concentration_ci95_cm2.get(c, nan)[1] for c in self.counts],
        })


def defect_statistics(cells: pd.DataFrame, material: str | Material, pixel_size_A: float | None,
                      include_boundary: bool = False) -> DefectStatistics:
    """Count classes over the complete cells and turn counts into concentrations.

    The analysed area is the number of complete cells times the unit-cell
    area of the material (``sqrt(3)/2 a^2``), so the concentration of a
    defect is ``count / (n_cells * cell area)`` and does not depend on how
    much of the image is vacuum or cut off. Each concentration carries a 95 %
    interval combining counting and classification uncertainty (from the
    ``p_<class>`` columns when present; see :mod:`napari_stem_defects.cells.uncertainty`).

    Parameters
    ----------
    cells : DataFrame
        Cell table with ``class``, ``m_species``, ``x_species`` and ``complete``
        (and from a classifier ``p_<class>``, ``verified``, ``classifier``).
    material : str or Material
        Sets the unit-cell area.
    pixel_size_A : float or None
        Only whether the image is calibrated matters (the cell area comes from
        the material); without one, concentrations are nan.
    include_boundary : bool
        Also count the cells on a domain or grain boundary or at the edge of a
        hole, amorphous patch or masked area (``boundary`` True); by default
        they are left out, with their area, so boundaries do not pass for defects.

    Examples
    --------
    >>> cells = pd.DataFrame({"class": ["perfect"] * 98 + ["V_X1", "V_M"], "complete": True,
    ...                       "m_species": ["Mo"] * 99 + ["empty"], "x_species": ["S2"] * 98 + ["S", "S2"]})
    >>> stats = defect_statistics(cells, "MoS2", 0.1)
    >>> stats.counts["V_X1"], round(stats.area_nm2, 3), f"{stats.concentration_cm2['V_X1']:.3g}"
    (1, 8.648, '1.16e+13')
    >>> [f"{v:.3g}" for v in stats.concentration_ci95_cm2["V_X1"]]   # no probabilities: Poisson only
    ['1.25e+12', '5.41e+13']
    """
    mat = parse_material(material)
    keep = cells["complete"].to_numpy(bool).copy() if "complete" in cells else np.ones(len(cells), bool)
    if "boundary" in cells and not include_boundary:
        keep &= ~cells["boundary"].to_numpy(bool)
    use = cells[keep]
    n = int(len(use))
    area_A2 = n * cell_area_A2(mat.a)
    counts = {c: int((use["class"] == c).sum()) for c in CELL_CLASSES}
    calibrated = pixel_size_A is not None and n > 0
    conc = {c: (k / (area_A2 * A2_TO_CM2) if calibrated else float("nan")) for c, k in counts.items()}
    frac = {c: (k / n if n else float("nan")) for c, k in counts.items()}
    composition: dict[str, float] = {}
    for prefix, col in (("M", "m_species"), ("X", "x_species")):
        shares = use[col].replace("", "empty").value_counts(normalize=True)
        composition.update({f"{prefix}:{k}": float(v) for k, v in shares.items()})
    expected, variance, count_ci = count_intervals(use, CELL_CLASSES)
    per_cm2 = 1.0 / (area_A2 * A2_TO_CM2) if calibrated else float("nan")
    conc_ci = {c: [lo * per_cm2, hi * per_cm2] for c, (lo, hi) in count_ci.items()}
    return DefectStatistics(n, area_A2 / 100.0, counts, conc, frac, composition, expected, variance, count_ci,
                            conc_ci, LEVEL)


__all__ = ["A2_TO_CM2", "DefectStatistics", "defect_statistics"]
