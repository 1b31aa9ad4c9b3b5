"""Length units as file readers write them, converted to Å.

Microscopy files spell the same unit in many ways: ``"nm"``, ``"NM"``,
``"n_m"`` (the NCEM EMD convention, one underscore between characters),
``"µm"`` with the micro sign or the Greek mu, ``"um"``, ``"micron"``,
``"A"``, ``"Å"``, ``"angstrom"`` ... This module maps them all to one factor:
how many Å one unit is.

Decision on non-length units
----------------------------
:func:`angstrom_per_unit` returns ``None`` (it never raises) for anything
that is not a real-space length: reciprocal lengths (``"1/nm"``,
``"nm^-1"``, ``"1/Å"``), angles (``"mrad"``, ``"deg"``), energies
(``"eV"``), times (``"s"``), ``"pixel"`` and unknown strings. The caller
decides what that means; :func:`unit_kind` tells which case it is, so a
reader can say "this is a diffraction pattern" rather than "no calibration".
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["UnitKind", "angstrom_per_unit", "normalize_unit", "to_angstrom", "unit_kind"]

UnitKind = Literal["length", "none", "reciprocal", "angle", "energy", "time", "unknown"]

#: Å per unit, keyed by the normalized spelling (see :func:`normalize_unit`).
_ANGSTROM_PER: dict[str, float] = {
    # metre and its decimal fractions
    "m": 1e10, "meter": 1e10, "meters": 1e10, "metre": 1e10, "metres": 1e10,
    "cm": 1e8, "centimeter": 1e8, "centimeters": 1e8, "centimetre": 1e8, "centimetres": 1e8,
    "mm": 1e7, "millimeter": 1e7, "millimeters": 1e7, "millimetre": 1e7, "millimetres": 1e7,
    "um": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4, "micrometers": 1e4,
    "micrometre": 1e4, "micrometres": 1e4,
    "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "nanometre": 10.0, "nanometres": 10.0,
    "a": 1.0, "ang": 1.0, "angstrom": 1.0, "angstroms": 1.0, "angstroem": 1.0,
    "angstroems": 1.0,
    "pm": 0.01, "picometer": 0.01, "picometers": 0.01, "picometre": 0.01, "picometres": 0.01,
}

#: Spellings that mean "no calibration".
_NO_UNIT = {"", "none", "pixel", "pixels", "px", "pix", "<undefined>", "<auto>", "undefined",
            "t.b.d.", "unknown", "au", "a.u."}

_ANGLE = {"rad", "mrad", "urad", "deg", "degree", "degrees", "°", "arcsec", "arcmin"}
_ENERGY = {"ev", "kev", "mev", "gev"}
_TIME = {"s", "sec", "second", "seconds", "ms", "us", "ns", "ps", "min", "h", "hr"}

# Characters to fold before lookup: micro sign, Greek mu, Ångström letter and sign.
_FOLD = str.maketrans({"\u00b5": "u", "\u03bc": "u", "\u00c5": "a", "\u212b": "a", "\u00e5": "a",
                        "\u00f6": "o", "\u207b": "-", "\u00b9": "1"})


def normalize_unit(unit: str | None) -> str:
    """Fold a unit string to a canonical lowercase ASCII spelling.

    Case, surrounding and inner whitespace and the NCEM underscores are
    dropped; the micro sign and Greek mu become ``u``; ``Å`` becomes ``a``.

    Parameters
    ----------
    unit : str or None
        Unit as written in a file. ``None`` gives ``""``.

    Returns
    -------
    str
        The folded spelling.

    Examples
    --------
    >>> normalize_unit(" n_m ")
    'nm'
    >>> normalize_unit("µm")
    'um'
    >>> normalize_unit("Å")
    'a'
    >>> normalize_unit(None)
    ''
    """
    if unit is None:
        return ""
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", errors="replace")
    text = str(unit).strip().translate(_FOLD).lower()
    return re.sub(r"[\s_]+", "", text)


def _is_reciprocal(norm: str) -> bool:
    """True for a folded reciprocal spelling: ``1/nm``, ``nm^-1``, ``nm-1``, ``pernm``."""
    return (norm.startswith("1/") or norm.endswith("^-1") or norm.endswith("**-1")
            or bool(re.fullmatch(r"[a-z]+-1", norm)) or norm.startswith("per"))


def unit_kind(unit: str | None) -> UnitKind:
    """Say what kind of quantity a unit string measures.

    Parameters
    ----------
    unit : str or None
        Unit as written in a file.

    Returns
    -------
    {'length', 'none', 'reciprocal', 'angle', 'energy', 'time', 'unknown'}
        ``'length'``: a real-space length (:func:`angstrom_per_unit` gives a
        factor). ``'none'``: no calibration (``None``, ``""``, ``"pixel"``).
        ``'reciprocal'``: a reciprocal length (diffraction or FFT axes).
        ``'angle'``: scattering angles (also diffraction). ``'energy'`` and
        ``'time'``: spectra and time series. ``'unknown'``: anything else.

    Examples
    --------
    >>> unit_kind("n_m")
    'length'
    >>> unit_kind("1/nm"), unit_kind("nm^-1"), unit_kind("1/Å")
    ('reciprocal', 'reciprocal', 'reciprocal')
    >>> unit_kind("mrad"), unit_kind("eV"), unit_kind("s")
    ('angle', 'energy', 'time')
    >>> unit_kind(None), unit_kind("pixel")
    ('none', 'none')
    >>> unit_kind("furlong")
    'unknown'
    """
    norm = normalize_unit(unit)
    if norm in _NO_UNIT:
        return "none"
    if _is_reciprocal(norm):
        return "reciprocal"
    if norm in _ANGSTROM_PER:
        return "length"
    if norm in _ANGLE:
        return "angle"
    if norm in _ENERGY:
        return "energy"
    if norm in _TIME:
        return "time"
    return "unknown"


def angstrom_per_unit(unit: str | None) -> float | None:
    """How many Å one ``unit`` is, or None when ``unit`` is not a length.

    Parameters
    ----------
    unit : str or None
        Length unit in any common spelling: ``nm``, ``µm``/``um``/``micron``/
        ``microns``, ``Å``/``A``/``angstrom``, ``pm``, ``m``, ``cm``, ``mm``,
        and the NCEM underscore forms (``n_m``, ``u_m``, ``p_m``). Case and
        whitespace do not matter.

    Returns
    -------
    float or None
        The factor, or ``None`` for no unit, ``pixel``, reciprocal lengths
        (``1/nm``, ``nm^-1``), angles (``mrad``), energies (``eV``), times
        (``s``) and unknown strings. This function never raises; use
        :func:`unit_kind` to tell these cases apart.

    Examples
    --------
    >>> angstrom_per_unit("nm")
    10.0
    >>> angstrom_per_unit("n_m")
    10.0
    >>> angstrom_per_unit("µm"), angstrom_per_unit("micron")
    (10000.0, 10000.0)
    >>> angstrom_per_unit(" Å "), angstrom_per_unit("A")
    (1.0, 1.0)
    >>> angstrom_per_unit("p_m")
    0.01
    >>> angstrom_per_unit("1/nm") is None, angstrom_per_unit("mrad") is None
    (True, True)
    >>> angstrom_per_unit(None) is None
    True
    """
    norm = normalize_unit(unit)
    if _is_reciprocal(norm):
        return None
    return _ANGSTROM_PER.get(norm)


def to_angstrom(value: float, unit: str | None) -> float | None:
    """Convert a length ``value`` given in ``unit`` to Å.

    Parameters
    ----------
    value : float
        The length (for example a pixel size) in ``unit``.
    unit : str or None
        Its unit, any spelling :func:`angstrom_per_unit` accepts.

    Returns
    -------
    float or None
        ``value`` in Å, or ``None`` when ``unit`` is not a length.

    Examples
    --------
    >>> to_angstrom(0.012246524915099144, "n_m")
    0.12246524915099144
    >>> round(to_angstrom(0.08737079614225583, "µm"), 2)
    873.71
    >>> to_angstrom(1.0, "1/nm") is None
    True
    """
    factor = angstrom_per_unit(unit)
    return None if factor is None else float(value) * factor
