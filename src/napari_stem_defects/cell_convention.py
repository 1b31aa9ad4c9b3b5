"""The one unit-cell convention of the simulator and the analysis.

A 2H-MX2 unit cell holds one metal site and one X2 column. Each metal site has
three X2 neighbours, 120 degrees apart; which of them is "its" column is a
convention, and the simulator's ground truth and the analysis must use the same
one, or a twin's ``V_X1+V_M`` cell comes back as a ``V_M`` cell beside a
``V_X1`` cell. The convention: **the partner of a metal site is its X2
neighbour whose direction, as displayed (x to the right, y up on screen), lies
in [-60, 60) degrees of the +x axis** (the neighbour "to the right"): of the
metal's X2 neighbours, the one whose direction is closest to +x. It depends
only on the lattice as imaged, not on which basis vectors a fit happens to
return, and across a mirror twin boundary each domain applies it to its own X2
sublattice. In a 1T domain every metal has six single-chalcogen neighbours,
60 degrees apart; the same rule (closest to +x, so within [-30, 30)) picks the
partner, and the cell also holds the column opposite it (at minus that step).

Pure numpy.
"""

from __future__ import annotations

import numpy as np

#: Screen-angle window (degrees, anticlockwise from +x as displayed) of the M -> X2 partner direction.
PARTNER_WINDOW_DEG: tuple[float, float] = (-60.0, 60.0)


def screen_angle(vectors: np.ndarray) -> np.ndarray:
    """Angle in degrees, anticlockwise as displayed (y grows downwards), of (dy, dx) vectors, in [-180, 180).

    Examples
    --------
    >>> screen_angle(np.array([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])).tolist()
    [0.0, 90.0, -90.0]
    """
    v = np.asarray(vectors, dtype=float).reshape(-1, 2)
    angle = np.degrees(np.arctan2(-v[:, 0], v[:, 1])) + 0.0  # no -0.0
    return np.where(angle >= 180.0, angle - 360.0, angle)


def partner_index(steps: np.ndarray) -> int:
    """Which of a metal site's X-neighbour steps (dy, dx) is its cell's partner: the one closest to +x.

    Parameters
    ----------
    steps : ndarray, shape (3, 2) or (6, 2)
        The three M -> X2 nearest-neighbour vectors of a 2H domain (120 degrees
        apart; the partner's screen angle lies in :data:`PARTNER_WINDOW_DEG`),
        or the six M -> X vectors of a 1T domain (the partner's within [-30, 30)).

    Returns
    -------
    int
        Index of the step with the smallest absolute screen angle (a tie at the
        window's edge goes to the negative angle).

    Examples
    --------
    >>> d = np.array([[-1.0, 0.2], [0.5, -0.9], [0.5, 0.9]])
    >>> partner_index(d)
    2
    """
    angles = screen_angle(steps)
    return int(np.lexsort((angles, np.round(np.abs(angles), 6)))[0])


def normalise_rotation(rotation_deg: float) -> float:
    """The equivalent lattice rotation (mod 120 degrees) whose ``(a1 + a2) / 3`` partner step obeys the convention.

    A lattice with basis a1 at ``rotation`` and a2 at ``rotation + 60`` degrees
    has its M -> X2 step ``(a1 + a2) / 3`` at ``rotation + 30``; turning the basis
    by 120 degrees leaves the honeycomb unchanged, so the rotation is brought
    into [-90, 30).

    Examples
    --------
    >>> normalise_rotation(0.0), normalise_rotation(45.0), normalise_rotation(-100.0)
    (0.0, -75.0, 20.0)
    """
    return float((float(rotation_deg) + 90.0) % 120.0 - 90.0)
