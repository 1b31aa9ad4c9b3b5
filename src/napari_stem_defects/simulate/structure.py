"""Atoms in three dimensions: where each atom of a column sits along the beam, and the
orthogonal periodic supercell a multislice twin is computed in.

A 2H-MX2 monolayer seen along c: the metal plane at z = 0, the chalcogens of an X2
column at +h (top, slot 0) and -h (bottom, slot 1), h from :data:`CHALCOGEN_HEIGHT_A`.
Antisites keep the plane of the site they replace: a metal on an X2 column (M_X) sits
in the metal plane, an X2 pair on a metal site (X_M) at +-h. An adatom sits
:data:`ADATOM_HEIGHT_A` above the top chalcogen plane. Pure numpy (ASE and abTEM are
imported only by :mod:`.multislice` and :mod:`.column_calibration`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..materials import ATOMIC_NUMBER, CHALCOGENS

#: Height of a chalcogen above (below) the metal plane in Å: half the X-X distance of the
#: 2H monolayers (MoS2 3.17, WS2 3.14, MoSe2 3.34, WSe2 3.35, MoTe2 3.60 Å), by element.
CHALCOGEN_HEIGHT_A: dict[str, float] = {"S": 1.57, "Se": 1.67, "Te": 1.80}
#: Height of an adatom above the top chalcogen plane, in Å (a metal atom on the hollow site).
ADATOM_HEIGHT_A: float = 1.5
_SYMBOL = {z: el for el, z in ATOMIC_NUMBER.items()}


def column_elements(content: str) -> tuple[str, ...]:
    """Elements of a column from its content string ('S2', 'SSe', 'Mo', '' for empty).

    Examples
    --------
    >>> column_elements("SSe"), column_elements("Te2"), column_elements("W"), column_elements("")
    (('S', 'Se'), ('Te', 'Te'), ('W',), ())
    """
    tokens = re.findall(r"([A-Z][a-z]?)(\d*)", content)
    if "".join(e + n for e, n in tokens) != content:
        raise ValueError(f"cannot read column content {content!r}; expected e.g. 'S2', 'SSe', 'Mo'")
    out = []
    for element, count in tokens:
        if element not in ATOMIC_NUMBER:
            raise ValueError(f"column content {content!r}: unknown element {element!r}")
        out += [element] * int(count or 1)
    return tuple(out)


def column_atoms(content: str) -> list[tuple[str, float]]:
    """(element, z in Å) of the atoms of an isolated column, metal plane at z = 0.

    A single atom sits at z = 0; a pair of chalcogens at +h of the first and -h of the
    second (the X2 column of the monolayer); any other pair at +-1.6 Å. The beam travels
    towards +z, so it meets the second atom first: 'SSe' and 'SeS' are different columns
    (:data:`~.cross_sections.PAIR_CONTENTS`).

    Examples
    --------
    >>> column_atoms("SSe")
    [('S', 1.57), ('Se', -1.67)]
    >>> column_atoms("Mo")
    [('Mo', 0.0)]
    """
    elements = column_elements(content)
    if len(elements) > 2:
        raise ValueError(f"column content {content!r} has more than two atoms")
    if len(elements) == 1:
        return [(elements[0], 0.0)]
    if not elements:
        return []
    top, bottom = elements
    return [(top, CHALCOGEN_HEIGHT_A.get(top, 1.6)), (bottom, -CHALCOGEN_HEIGHT_A.get(bottom, 1.6))]


def site_atoms(slots: np.ndarray, kind: str) -> list[tuple[str, float]]:
    """(element, z) of the atoms on one site of a twin from its two slots (atomic numbers).

    ``kind`` is 'm' (metal site), 'x' (X2 column) or 'h' (hollow site). Chalcogens of an
    X2 column sit at +h (slot 0) and -h (slot 1); a metal on an X2 column (M_X) in the
    metal plane; an X2 pair on a metal site at +-h; an adatom above the top plane.
    """
    out = []
    for slot, z in enumerate(slots):
        if not z:
            continue
        element = _SYMBOL[int(z)]
        if kind == "h":
            out.append((element, max(CHALCOGEN_HEIGHT_A.values()) + ADATOM_HEIGHT_A))
        elif element in CHALCOGENS:
            height = CHALCOGEN_HEIGHT_A[element]
            out.append((element, height if slot == 0 else -height))
        else:
            out.append((element, 0.0))
    return out


@dataclass(frozen=True)
class Supercell:
    """An orthogonal periodic supercell of the unrotated 2H lattice.

    In specimen coordinates (dy, dx) in Å the lattice has ``a1 = (0, a)`` and
    ``a2 = (-a sin 60, a cos 60)``; the supercell spans ``n1 * a`` along x and
    ``n2 * a * sqrt(3)`` along y (periods ``n1 * a1`` and ``n2 * (2 a2 - a1)``) and holds
    ``2 * n1 * n2`` unit cells.
    """

    a: float
    n1: int
    n2: int

    @property
    def extent(self) -> tuple[float, float]:
        """(height along y, width along x) in Å."""
        return (self.n2 * self.a * np.sqrt(3.0), self.n1 * self.a)

    @property
    def n_cells(self) -> int:
        """Unit cells in the supercell."""
        return 2 * self.n1 * self.n2

    def key(self, ij: np.ndarray) -> np.ndarray:
        """Index 0..n_cells-1 of the supercell cell that lattice cell (i, j) is a periodic image of."""
        ij = np.asarray(ij, dtype=np.int64)
        j = np.mod(ij[:, 1], 2 * self.n2)
        k = (ij[:, 1] - j) // (2 * self.n2)
        i = np.mod(ij[:, 0] + k * self.n2, self.n1)
        return i * (2 * self.n2) + j

    def cells(self) -> np.ndarray:
        """(i, j) of one representative of every supercell cell, ordered by :meth:`key`."""
        i, j = np.meshgrid(np.arange(self.n1), np.arange(2 * self.n2), indexing="ij")
        return np.stack([i.ravel(), j.ravel()], axis=1)

    def wrap(self, yx: np.ndarray) -> np.ndarray:
        """Specimen positions (dy, dx) in Å folded into [0, height) x [0, width)."""
        return np.mod(yx, np.array(self.extent))

    @classmethod
    def covering(cls, a: float, span_yx: tuple[float, float], margin: float = 0.0) -> Supercell:
        """The smallest supercell whose extent exceeds ``span_yx`` (Å, y and x) plus ``margin`` on each side."""
        n1 = int(np.ceil((span_yx[1] + 2 * margin) / a))
        n2 = int(np.ceil((span_yx[0] + 2 * margin) / (a * np.sqrt(3.0))))
        return cls(a=float(a), n1=max(n1, 1), n2=max(n2, 1))


def unit_positions(a: float, ij: np.ndarray) -> dict[str, np.ndarray]:
    """Specimen positions (dy, dx) in Å of the metal, X2 and hollow sites of cells ``ij``."""
    a1 = np.array([0.0, a])
    a2 = np.array([-a * np.sin(np.pi / 3), a * np.cos(np.pi / 3)])
    metal = np.asarray(ij, dtype=float) @ np.stack([a1, a2])
    return {"m": metal, "x": metal + (a1 + a2) / 3.0, "h": metal + 2.0 * (a1 + a2) / 3.0}
