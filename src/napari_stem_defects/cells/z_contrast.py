"""Z-contrast check of metal antisites against chalcogen substitutions, calibrated on the image itself.

A metal atom on an X2 column (M_X) and a column with one chalcogen replaced
by a heavier one (sub_X) both brighten the column, and they differ only
through the Z exponent: in MoS2, Mo (42^gamma) against S + Se (16^gamma +
34^gamma) are 573 against 514 at gamma = 1.7, equal at 1.4. The cell CNN
confuses them (about one in six at 1e5 e/A^2). But an antisite holds *the
same atom as the metal sites*, so its column must be exactly as bright as
the image's metal columns, whatever the exponent, probe or gain; and the
exponent itself is fixed by the image's own ratio of X2 to metal brightness,
``2 Z_X^gamma / Z_M^gamma``.

This module measures that on each image:

1. neighbour-corrected amplitudes of every metal site, X2 column and hollow
   site (:func:`~napari_stem_defects.cells.column_amplitudes.column_amplitudes`);
   the hollow sites give the level of an empty site;
2. :func:`calibrate`: from the cells the CNN calls perfect, the metal and X2
   levels above the empty level, hence the exponent and the noise of one column;
3. :func:`antisite_log_odds`: for each X2 column, log p(amplitude | M_X) -
   log p(amplitude | sub_X), Gaussian about the levels the calibration
   predicts (a mixture over the host's substituents);
4. :func:`arbitrate`: the CNN's probability of M_X against sub_X is
   multiplied by that likelihood ratio to the power :data:`ANTISITE_WEIGHT`,
   leaving the cell's total M_X + sub_X probability and every other class as
   they are.

It applies to hosts with one metal and one chalcogen where the CNN offers
both classes (MoS2, WSe2, MoTe2, ...); :func:`refine_antisites` returns the
probabilities unchanged elsewhere, and when the image cannot be calibrated
(fewer than :data:`MIN_PERFECT` perfect cells, or an exponent outside
:data:`GAMMA_RANGE`).

Pure numpy/scipy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import logsumexp

from ..materials import ATOMIC_NUMBER, Material, parse_material
from ..vocabulary import CELL_CLASSES
from ..composition import allowed_classes, substituent_elements
from .column_amplitudes import column_amplitudes

#: Power of the likelihood ratio in :func:`arbitrate`, chosen on tuning twins
#: (``scripts/tune_z_contrast.py``, seeds never used for training or the benchmark).
ANTISITE_WEIGHT: float = 2.0
#: Fewest cells called perfect for a calibration.
MIN_PERFECT: int = 20
#: Exponents a calibration may find; outside, the image is not trusted.
GAMMA_RANGE: tuple[float, float] = (1.0, 2.6)
#: Smallest noise of one column, as a fraction of the metal level.
MIN_NOISE: float = 0.03

_M_X = CELL_CLASSES.index("M_X")
_SUB_X = CELL_CLASSES.index("sub_X")
_PERFECT = CELL_CLASSES.index("perfect")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Column levels of one image.

    Attributes
    ----------
    empty : float
        Amplitude of an empty site (median over hollow sites).
    metal : float
        Amplitude of a host metal column above ``empty``.
    gamma : float
        Z exponent: an X2 column is ``2 (Z_X / Z_M)^gamma`` metals bright.
    noise : float
        Standard deviation of a metal-bright column's amplitude, as a fraction of ``metal``.
    """

    empty: float
    metal: float
    gamma: float
    noise: float


def applies(material: str | Material) -> bool:
    """Whether the check is made for this host: one metal, one chalcogen, M_X and sub_X both offered.

    Examples
    --------
    >>> applies("MoS2"), applies("WSe2"), applies("MoWSSe")
    (True, True, False)
    """
    mat = parse_material(material)
    allowed = allowed_classes(mat)
    return (len(mat.metals) == 1 and len(mat.chalcogens) == 1 and not mat.janus
            and "M_X" in allowed and "sub_X" in allowed)


def _robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def calibrate(metal: np.ndarray, x2: np.ndarray, hollow: np.ndarray, material: str | Material) -> Calibration | None:
    """Levels of an image from the amplitudes of its perfect cells' sites.

    Parameters
    ----------
    metal, x2 : ndarray, shape (N,)
        Amplitudes of the metal sites and X2 columns of cells called perfect.
    hollow : ndarray, shape (K,)
        Amplitudes of hollow (empty) sites.
    material : str or Material
        A host with one metal and one chalcogen.

    Returns
    -------
    Calibration or None
        None when there are fewer than :data:`MIN_PERFECT` cells or hollow
        sites, or the exponent falls outside :data:`GAMMA_RANGE`.

    Examples
    --------
    Levels of MoS2 at an exponent of 1.7 (Mo 573, S2 2 x 111.4, in any unit):

    >>> rng = np.random.default_rng(0)
    >>> mo, s2 = 42**1.7, 2 * 16**1.7
    >>> cal = calibrate(mo + rng.normal(0, 5, 500) + 10, s2 + rng.normal(0, 5, 500) + 10,
    ...                 rng.normal(10, 1, 500), "MoS2")
    >>> round(cal.gamma, 2), round(cal.metal / mo, 2)
    (1.7, 1.0)
    """
    mat = parse_material(material)
    metal, x2, hollow = (np.asarray(v, dtype=np.float64) for v in (metal, x2, hollow))
    metal, x2, hollow = metal[np.isfinite(metal)], x2[np.isfinite(x2)], hollow[np.isfinite(hollow)]
    if min(len(metal), len(x2), len(hollow)) < MIN_PERFECT:
        return None
    empty = float(np.median(hollow))
    m_level = float(np.median(metal)) - empty
    x_level = float(np.median(x2)) - empty
    z_m = ATOMIC_NUMBER[next(iter(mat.metals))]
    z_x = ATOMIC_NUMBER[next(iter(mat.chalcogens))]
    if m_level <= 0 or x_level <= 0 or z_m == z_x:
        return None
    gamma = math.log(x_level / (2 * m_level)) / math.log(z_x / z_m)
    if not GAMMA_RANGE[0] <= gamma <= GAMMA_RANGE[1]:
        return None
    # Shot noise grows with the square root of the level: scale the X2 columns' spread to a metal's level.
    noise = _robust_std(x2) / m_level * math.sqrt(m_level / x_level)
    return Calibration(empty, m_level, gamma, max(noise, MIN_NOISE))


def antisite_levels(calibration: Calibration, material: str | Material) -> tuple[float, list[float]]:
    """Predicted amplitudes (in metal units) of an M_X column and of each sub_X column.

    Examples
    --------
    >>> lm, ls = antisite_levels(Calibration(0.0, 1.0, 1.7, 0.05), "MoS2")
    >>> lm, [round(v, 2) for v in ls]
    (1.0, [0.89, 1.63])
    """
    mat = parse_material(material)
    g = calibration.gamma
    z_m = ATOMIC_NUMBER[next(iter(mat.metals))] ** g
    z_x = ATOMIC_NUMBER[next(iter(mat.chalcogens))] ** g
    return 1.0, [(z_x + ATOMIC_NUMBER[s] ** g) / z_m for s in substituent_elements(mat)]


def antisite_log_odds(x2: np.ndarray, calibration: Calibration, material: str | Material) -> np.ndarray:
    """log p(amplitude | M_X) - log p(amplitude | sub_X) for X2 column amplitudes.

    Each hypothesis is Gaussian about its predicted level
    (:func:`antisite_levels`) with the calibration's noise; sub_X is an equal
    mixture over the host's substituents. NaN amplitudes give 0 (no evidence).

    Examples
    --------
    >>> cal = Calibration(0.0, 1.0, 1.7, 0.05)
    >>> bool(antisite_log_odds(np.array([1.0]), cal, "MoS2")[0] > 0)
    True
    >>> bool(antisite_log_odds(np.array([0.9]), cal, "MoS2")[0] < 0)
    True
    """
    r = (np.asarray(x2, dtype=np.float64) - calibration.empty) / calibration.metal
    level_m, levels_s = antisite_levels(calibration, material)
    tau = calibration.noise
    log_m = -0.5 * ((r - level_m) / tau) ** 2
    log_s = logsumexp([-0.5 * ((r - lv) / tau) ** 2 for lv in levels_s], axis=0) - math.log(len(levels_s))
    out = log_m - log_s
    return np.where(np.isfinite(out), out, 0.0)


def arbitrate(probs: np.ndarray, log_odds: np.ndarray, weight: float = ANTISITE_WEIGHT) -> np.ndarray:
    """Re-split each cell's M_X + sub_X probability by the CNN's odds times the Z-contrast odds.

    Parameters
    ----------
    probs : ndarray, shape (N, len(CELL_CLASSES))
        Class probabilities.
    log_odds : ndarray, shape (N,)
        :func:`antisite_log_odds` of each cell's X2 column.
    weight : float
        Power of the Z-contrast likelihood ratio.

    Returns
    -------
    ndarray, same shape and dtype as ``probs``
        Only the M_X and sub_X columns change, and their sum does not.

    Examples
    --------
    >>> p = np.zeros((1, len(CELL_CLASSES)), np.float32)
    >>> p[0, CELL_CLASSES.index("M_X")], p[0, CELL_CLASSES.index("sub_X")] = 0.4, 0.6
    >>> q = arbitrate(p, np.array([math.log(4.0)]), weight=1.0)
    >>> round(float(q[0, CELL_CLASSES.index("M_X")]), 3), round(float(q[0, CELL_CLASSES.index("sub_X")]), 3)
    (0.727, 0.273)
    """
    out = np.array(probs, copy=True)
    pm, ps = out[:, _M_X].astype(np.float64), out[:, _SUB_X].astype(np.float64)
    pair = pm + ps
    with np.errstate(divide="ignore"):
        logit = np.log(pm) - np.log(ps) + weight * np.asarray(log_odds, dtype=np.float64)
    share = 0.5 * (1.0 + np.tanh(0.5 * np.clip(np.nan_to_num(logit, nan=0.0), -60, 60)))
    share = np.where(pm == 0, 0.0, np.where(ps == 0, 1.0, share))
    out[:, _M_X] = pair * share
    out[:, _SUB_X] = pair * (1.0 - share)
    return out


def antisite_evidence(
    probs: np.ndarray,
    prepared: np.ndarray,
    m_positions: np.ndarray,
    x_positions: np.ndarray,
    nn_px: float,
    material: str | Material,
) -> tuple[np.ndarray | None, Calibration | None]:
    """Z-contrast log odds of M_X against sub_X for every cell of an image.

    Parameters
    ----------
    probs : ndarray, shape (N, len(CELL_CLASSES))
        The CNN's class probabilities of the cells (its perfect cells calibrate the image).
    prepared : ndarray, shape (H, W)
        The image as the CNN saw it (:func:`~napari_stem_defects.cells.crops.prepare_image`).
    m_positions, x_positions : ndarray, shape (N, 2)
        (y, x) of each cell's metal site and X2 column.
    nn_px : float
        Metal to chalcogen distance in pixels.
    material : str or Material
        Host.

    Returns
    -------
    log_odds : ndarray of shape (N,), or None
        :func:`antisite_log_odds` of each cell's X2 column; None where the
        check does not apply (:func:`applies`) or the image does not calibrate.
    calibration : Calibration or None
        The image's levels.
    """
    mat = parse_material(material)
    m = np.asarray(m_positions, dtype=np.float64).reshape(-1, 2)
    x = np.asarray(x_positions, dtype=np.float64).reshape(-1, 2)
    if not applies(mat) or len(m) == 0:
        return None, None
    n = len(m)
    hollow = 2 * m - x  # the hexagon centre beside the metal site, opposite its X2 column
    amps, _ = column_amplitudes(prepared, np.concatenate([m, x, hollow]), nn_px)
    am, ax, ah = amps[:n], amps[n : 2 * n], amps[2 * n :]
    perfect = np.asarray(probs).argmax(axis=1) == _PERFECT
    cal = calibrate(am[perfect], ax[perfect], ah, mat)
    if cal is None:
        return None, None
    return antisite_log_odds(ax, cal, mat), cal


def refine_antisites(
    probs: np.ndarray,
    prepared: np.ndarray,
    m_positions: np.ndarray,
    x_positions: np.ndarray,
    nn_px: float,
    material: str | Material,
    weight: float = ANTISITE_WEIGHT,
) -> tuple[np.ndarray, Calibration | None]:
    """The cell probabilities after the Z-contrast check of M_X against sub_X.

    Parameters are those of :func:`antisite_evidence`, and ``weight`` (see :func:`arbitrate`).

    Returns
    -------
    probs : ndarray
        Changed only in the M_X and sub_X columns, and only where the check
        :func:`applies` and the image calibrates.
    calibration : Calibration or None
        The image's levels, or None when nothing was changed.
    """
    log_odds, cal = antisite_evidence(probs, prepared, m_positions, x_positions, nn_px, material)
    if log_odds is None:
        return probs, None
    return arbitrate(probs, log_odds, weight), cal
