"""Site occupancy of a digital twin: composition and point defects, cell by cell.

Every cell has three sites, each holding up to two atoms (``slots``) coded
by atomic number (0 = no atom):

- ``m``: the metal (A) site: normally one metal atom;
- ``x``: the X2 column (B site): normally two chalcogen atoms (top, bottom);
- ``h``: the hollow site: empty unless an adatom sits there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..composition import CLEAR_CONTRAST, dopant_elements
from ..materials import ATOMIC_NUMBER, CHALCOGENS, METALS, Material
from ..vocabulary import CELL_CLASSES, DEFECT_TYPES, SITE_DEFECTS

__all__ = ["CELL_CLASSES", "DEFECT_TYPES", "SITE_DEFECTS", "Occupancy", "default_dopant",
           "default_substituent", "elements_content", "ordered_content", "populate", "species_string",
           "stated_foreign_atom"]

_SYMBOL = {z: el for el, z in ATOMIC_NUMBER.items()}


@dataclass
class Occupancy:
    """Atoms on every site of a set of cells, and the labels that describe them.

    Attributes
    ----------
    m, x, h : ndarray of shape (n_cells, 2), int
        Atomic numbers on the metal site, X2 column and hollow site (0 = none).
    m_defect, x_defect, h_defect : ndarray of shape (n_cells,), object
        Per-site defect label (see :data:`SITE_DEFECTS`).
    cell_class : ndarray of shape (n_cells,), object
        Cell class (see :data:`CELL_CLASSES`).
    x_slot : ndarray of shape (n_cells,), int, optional
        Which slot of ``x`` a one-atom chalcogen defect (V_X1, V_X1+V_M,
        sub_X) changed; -1 elsewhere. In a 1T cell the two slots are two
        columns, so this says which column holds the defect.
    """

    m: np.ndarray
    x: np.ndarray
    h: np.ndarray
    m_defect: np.ndarray
    x_defect: np.ndarray
    h_defect: np.ndarray
    cell_class: np.ndarray
    x_slot: np.ndarray | None = None


def species_string(slots: np.ndarray) -> str:
    """Chemical content of one column, lightest element first.

    Examples
    --------
    >>> species_string(np.array([16, 34]))
    'SSe'
    >>> species_string(np.array([34, 34]))
    'Se2'
    >>> species_string(np.array([0, 42]))
    'Mo'
    >>> species_string(np.array([0, 0]))
    ''
    """
    zs = sorted(int(z) for z in slots if z)
    out = ""
    for z in dict.fromkeys(zs):
        n = zs.count(z)
        out += _SYMBOL[z] + (str(n) if n > 1 else "")
    return out


def ordered_content(slots: np.ndarray) -> str:
    """Content of one column as the cross-section table names it: two different atoms keep their order.

    Slot 0 is the atom on the beam's exit side, slot 1 the one where the beam enters
    (:func:`~.structure.site_atoms`), and the pair scatters more when its heavier atom is the second
    one the beam meets (the first channels the beam onto it): 'SeS' (Se on the exit side) is up to
    40 % brighter than 'SSe'. Any other column is its :func:`species_string`.

    Examples
    --------
    >>> ordered_content(np.array([34, 16])), ordered_content(np.array([16, 34])), ordered_content(np.array([16, 16]))
    ('SeS', 'SSe', 'S2')
    """
    zs = [int(z) for z in slots if z]
    if len(zs) == 2 and zs[0] != zs[1]:
        return _SYMBOL[zs[0]] + _SYMBOL[zs[1]]
    return species_string(slots)


def elements_content(elements: tuple[str, ...]) -> str:
    """:func:`ordered_content` of a column given as element symbols in slot order.

    Examples
    --------
    >>> elements_content(("Se", "S")), elements_content(("S", "S")), elements_content(("Mo",))
    ('SeS', 'S2', 'Mo')
    """
    return ordered_content(np.array([ATOMIC_NUMBER[e] for e in elements], dtype=np.int64))


def default_dopant(material: Material) -> str:
    """The usual substitutional metal dopant: W in Mo compounds, Mo in W compounds, unless it
    scatters like another content of the metal site (W like Te2 in MoTe2: V there instead; see
    :func:`napari_stem_defects.composition.dopant_elements`)."""
    clear = dopant_elements(material, CLEAR_CONTRAST)
    if clear:
        return clear[0]
    return "Mo" if material.main_metal == "W" else "W"


def default_substituent(material: Material) -> str:
    """The usual chalcogen substituent: Se in sulfides, S in selenides, Se in tellurides."""
    return {"S": "Se", "Se": "S", "Te": "Se"}[material.main_chalcogen]


def stated_foreign_atom(material: Material, sublattice: str) -> str | None:
    """The first foreign atom the material states for a sublattice (``WSe2+Mn``: Mn on 'M'), else None.

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> stated_foreign_atom(parse_material("WSe2+Mn"), "M"), stated_foreign_atom(parse_material("MoS2+Te"), "M")
    ('Mn', None)
    >>> stated_foreign_atom(parse_material("MoS2+W+Te"), "X")
    'Te'
    """
    allowed = METALS if sublattice == "M" else CHALCOGENS
    return next((atom for atom in material.dopants if atom in allowed), None)


def populate(
    material: Material,
    n_cells: int,
    eligible: np.ndarray,
    defect_fractions: Mapping[str, float] | None,
    rng: np.random.Generator,
    *,
    dopant: str | None = None,
    substituent: str | None = None,
    adatom: str | None = None,
) -> Occupancy:
    """Fill ``n_cells`` cells with the material's atoms, then place defects.

    Parameters
    ----------
    material : Material
        Composition of the host; alloys draw each atom independently, Janus
        layers put one chalcogen on top and the other below.
    n_cells : int
        Number of cells.
    eligible : ndarray of bool, shape (n_cells,)
        Cells that may receive a defect (those wholly inside the image).
    defect_fractions : mapping of str to float, optional
        Fraction of eligible cells given each defect type (keys from
        :data:`DEFECT_TYPES`). Each defective cell holds exactly one type.
    rng : numpy.random.Generator
        Source of randomness.
    dopant, substituent, adatom : str, optional
        Elements for ``dopant_M``, ``sub_X`` and ``adatom`` defects; by default
        the foreign metal and chalcogen the material states (``WSe2+Mn``, ``MoS2+Te``),
        else W (or Mo in W hosts), Se (or S in selenides); and the main metal.

    Returns
    -------
    Occupancy
    """
    fractions = dict(defect_fractions or {})
    unknown = set(fractions) - set(DEFECT_TYPES)
    if unknown:
        raise ValueError(f"unknown defect types {sorted(unknown)}; choose from {list(DEFECT_TYPES)}")
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) > 1:
        raise ValueError("defect fractions must be >= 0 and sum to at most 1")

    m = np.zeros((n_cells, 2), dtype=np.int16)
    x = np.zeros((n_cells, 2), dtype=np.int16)
    h = np.zeros((n_cells, 2), dtype=np.int16)
    m[:, 0] = _draw(material.metals, n_cells, rng)
    if material.janus:  # either face of the layer may face the beam
        top, bottom = list(material.chalcogens)[:: 1 if rng.random() < 0.5 else -1]
        x[:, 0], x[:, 1] = ATOMIC_NUMBER[top], ATOMIC_NUMBER[bottom]
    else:
        x[:, 0] = _draw(material.chalcogens, n_cells, rng)
        x[:, 1] = _draw(material.chalcogens, n_cells, rng)

    m_defect = np.full(n_cells, "none", dtype=object)
    x_defect = np.full(n_cells, "none", dtype=object)
    h_defect = np.full(n_cells, "none", dtype=object)
    cell_class = np.full(n_cells, "perfect", dtype=object)
    x_slot = np.full(n_cells, -1, dtype=np.int8)

    z_metal = ATOMIC_NUMBER[material.main_metal]
    z_chalc = ATOMIC_NUMBER[material.main_chalcogen]
    z_dopant = ATOMIC_NUMBER[dopant or stated_foreign_atom(material, "M") or default_dopant(material)]
    z_sub = ATOMIC_NUMBER[substituent or stated_foreign_atom(material, "X") or default_substituent(material)]
    z_adatom = ATOMIC_NUMBER[adatom or material.main_metal]

    candidates = rng.permutation(np.flatnonzero(eligible))
    n_eligible = len(candidates)
    start = 0
    for kind in DEFECT_TYPES:
        count = int(round(fractions.get(kind, 0.0) * n_eligible))
        cells = candidates[start : start + count]
        start += count
        if count == 0:
            continue
        cell_class[cells] = kind
        slot = rng.integers(0, 2, size=count)
        if "V_M" in kind:
            m[cells] = 0
            m_defect[cells] = "V_M"
        if kind.startswith("V_X1"):
            x[cells, slot] = 0
            x_defect[cells] = "V_X1"
            x_slot[cells] = slot
        elif kind.startswith("V_X2"):
            x[cells] = 0
            x_defect[cells] = "V_X2"
        elif kind == "M_X":
            x[cells] = (z_metal, 0)
            x_defect[cells] = "M_X"
        elif kind == "X_M":
            m[cells] = (z_chalc, z_chalc)
            m_defect[cells] = "X_M"
        elif kind == "dopant_M":
            m[cells, 0] = z_dopant
            m_defect[cells] = "dopant_M"
        elif kind == "sub_X":
            x[cells, slot] = z_sub
            x_defect[cells] = "sub_X"
            x_slot[cells] = slot
        elif kind == "adatom":
            h[cells, 0] = z_adatom
            h_defect[cells] = "adatom"
    return Occupancy(m, x, h, m_defect, x_defect, h_defect, cell_class, x_slot)


def _draw(fractions: Mapping[str, float], n: int, rng: np.random.Generator) -> np.ndarray:
    elements = list(fractions)
    z = np.array([ATOMIC_NUMBER[e] for e in elements], dtype=np.int16)
    if len(z) == 1:
        return np.full(n, z[0], dtype=np.int16)
    return rng.choice(z, size=n, p=np.array([fractions[e] for e in elements]))
