"""Which defect classes a material allows, and the priors its stated composition sets.

A HAADF column's intensity grows roughly as the sum of Z^gamma over its atoms,
with gamma between about 1.4 and 2.0. A defect class is only offered for a
material when the column it changes stays distinguishable, for every gamma
in :data:`GAMMAS`, from every column the host itself can show at that site
(by at least :data:`MIN_CONTRAST`, relative). Otherwise a perfect cell could
look exactly like the defect and no classifier, ours or a person's, could
tell them apart. Examples:

- a metal alloy such as MoWS2 offers no ``dopant_M``, and a chalcogen alloy
  or Janus layer no ``sub_X``: they report their composition (Mo/W,
  S2/SSe/Se2) instead;
- in an alloy the host's own columns already vary, so there the margin is
  :data:`ALLOY_CONTRAST`: in MoWSSe a Mo atom on an X site (M_X) scatters
  like an SSe column and an SSe pair on a metal site (X_M) like Mo, so
  neither antisite is offered;
- the default metal dopant (and the dopants the classifier is trained on)
  must stand out by :data:`CLEAR_CONTRAST`: an S2 column on a Mo site (X_M)
  scatters like a Ti/V/Cr atom, so the dopant of MoS2 is a heavy one (W, Re,
  Ta ...), while in MoTe2 a W atom scatters like the Te2 of an X_M antisite,
  so there it is a light one (V, Cr, Ti);

Pure python/numpy, no torch.
"""

from __future__ import annotations

import itertools

import numpy as np

from .materials import ATOMIC_NUMBER, CHALCOGENS, Material, parse_material
from .vocabulary import CELL_CLASSES

#: Z-contrast exponents the distinction must hold for.
GAMMAS: tuple[float, ...] = (1.7,)
#: Smallest relative intensity difference, |a - b| / max(a, b), that counts as distinguishable
#: (about the difference between an SSe column and a Mo atom; resolvable above ~1e5 e/A^2).
MIN_CONTRAST: float = 0.08
#: Smallest difference where the host itself mixes contents on the rival site (alloys, Janus):
#: its composition disorder already spreads the column intensities.
ALLOY_CONTRAST: float = 0.15
#: Contrast of a "clear" dopant: the default dopant of a host and the training dopants must reach it.
CLEAR_CONTRAST: float = 0.2
#: Metal dopants in order of preference (the first distinguishable one is the default; the 3d dopants
#: Mn and Co last, so they never displace an earlier default).
DOPANT_PREFERENCE: tuple[str, ...] = ("W", "Mo", "Re", "Ta", "Hf", "Pt", "Nb", "V", "Cr", "Ti", "Mn", "Co")
#: Chalcogen substituents in order of preference.
SUBSTITUENT_PREFERENCE: tuple[str, ...] = ("Se", "S", "Te")


def _level(elements: tuple[str, ...], gamma: float) -> float:
    return float(sum(ATOMIC_NUMBER[e] ** gamma for e in elements))


def _distinct(a: list[tuple[str, ...]], b: list[tuple[str, ...]], contrast: float = MIN_CONTRAST) -> bool:
    """Every content in ``a`` differs from every content in ``b`` by ``contrast``, for every gamma."""
    for gamma in GAMMAS:
        for ea in a:
            for eb in b:
                la, lb = _level(ea, gamma), _level(eb, gamma)
                if abs(la - lb) < contrast * max(la, lb, 1e-12):
                    return False
    return True


def host_contents(material: Material) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Normal contents of the metal site and the X2 column of a host (as element tuples)."""
    metals = [(m,) for m in material.metals]
    chalc = sorted(material.chalcogens, key=ATOMIC_NUMBER.__getitem__)
    if material.janus:
        pairs = [tuple(chalc)]
    else:
        pairs = list(itertools.combinations_with_replacement(chalc, 2))
    return metals, pairs


def _antisite_ok(material: Material) -> dict[str, bool]:
    metals, pairs = host_contents(material)
    singles = [(x,) for x in material.chalcogens]
    return {
        # a host metal on the X2 column, against the normal and half-empty columns
        "M_X": _distinct(metals, pairs + singles, _contrast(pairs)),
        # a host X2 pair on the metal site, against the host metals and an empty site
        "X_M": _distinct(pairs, metals + [()], _contrast(metals)),
    }


def _contrast(rivals: list[tuple[str, ...]]) -> float:
    """MIN_CONTRAST, or ALLOY_CONTRAST when the host mixes several contents on the rival site."""
    return ALLOY_CONTRAST if len(rivals) > 1 else MIN_CONTRAST


def resembles_antisite(material: str | Material, atom: str, contrast: float = CLEAR_CONTRAST) -> bool:
    """Whether a foreign atom's column scatters within ``contrast`` of the antisite it competes with, at ``Z**1.7``.

    A metal dopant competes with a host X2 pair on the metal site (``X_M``), a foreign chalcogen
    (in a pair with a host one) with a host metal on the X2 site (``M_X``). The multislice table's
    view, at common microscope settings, is
    :func:`~napari_stem_defects.simulate.cross_sections.antisite_alike_in_table`.

    Examples
    --------
    >>> resembles_antisite("MoS2", "Se"), resembles_antisite("MoS2", "V"), resembles_antisite("WSe2", "V")
    (True, True, False)
    """
    own, rivals = antisite_rivals(material, atom)
    return not _distinct(own, rivals, contrast)


def antisite_rivals(material: str | Material, atom: str) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The columns a foreign atom makes and those of the antisite it competes with (element tuples).

    Examples
    --------
    >>> antisite_rivals("MoS2", "Se"), antisite_rivals("MoSe2", "W")
    (([('S', 'Se')], [('Mo',)]), ([('W',)], [('Se', 'Se')]))
    """
    mat = parse_material(material)
    metals, pairs = host_contents(mat)
    if atom in CHALCOGENS:
        return [tuple(sorted((atom, x), key=ATOMIC_NUMBER.__getitem__)) for x in mat.chalcogens], metals
    return [(atom,)], pairs


def _dopants(mat: Material, contrast: float = MIN_CONTRAST) -> tuple[str, ...]:
    if len(mat.metals) > 1:
        return ()
    metals, pairs = host_contents(mat)
    rivals = metals + [()]
    if _antisite_ok(mat)["X_M"]:
        rivals += pairs
    return tuple(d for d in DOPANT_PREFERENCE if d not in mat.metals and _distinct([(d,)], rivals, contrast))


def dopant_elements(material: str | Material, min_contrast: float = MIN_CONTRAST) -> tuple[str, ...]:
    """Metals that can be told apart as a ``dopant_M`` in this host (empty for metal alloys).

    Parameters
    ----------
    material : str or Material
        Host.
    min_contrast : float
        Smallest relative intensity difference from the host metal, an empty
        site and (where X_M is offered) the host's X2 pairs on the metal site.

    Returns
    -------
    tuple of str
        In the order of :data:`DOPANT_PREFERENCE`.

    Examples
    --------
    >>> dopant_elements("MoS2", CLEAR_CONTRAST)
    ('W', 'Re', 'Ta', 'Hf', 'Pt')
    >>> dopant_elements("MoTe2", CLEAR_CONTRAST)
    ('V', 'Cr', 'Ti', 'Mn', 'Co')
    >>> dopant_elements("MoWS2")
    ()
    """
    return _dopants(parse_material(material), min_contrast)


def _substituents(mat: Material) -> tuple[str, ...]:
    if len(mat.chalcogens) > 1 or mat.janus:
        return ()
    metals, pairs = host_contents(mat)
    x = mat.main_chalcogen
    rivals = pairs + [(x,)] + (metals if _antisite_ok(mat)["M_X"] else [])
    return tuple(s for s in SUBSTITUENT_PREFERENCE if s != x and _distinct([(x, s)], rivals))


def substituent_elements(material: str | Material) -> tuple[str, ...]:
    """Chalcogens whose substitution into one X2 atom can be told apart (empty for chalcogen alloys).

    Examples
    --------
    >>> substituent_elements("MoTe2")
    ('Se', 'S')
    >>> substituent_elements("MoSSe")
    ()
    """
    return _substituents(parse_material(material))


def _allowed(mat: Material) -> tuple[str, ...]:
    antisite = _antisite_ok(mat)
    metals, pairs = host_contents(mat)
    singles = [(x,) for x in mat.chalcogens]
    out = []
    for c in CELL_CLASSES:
        if c in ("V_X1", "V_X1+V_M") and not _distinct(singles, pairs, _contrast(pairs)):
            continue
        if c in antisite and not antisite[c]:
            continue
        if c == "dopant_M" and not _dopants(mat):
            continue
        if c == "sub_X" and not _substituents(mat):
            continue
        out.append(c)
    return tuple(out)


def allowed_classes(material: str | Material) -> tuple[str, ...]:
    """Cell classes offered for a material, in the order of ``CELL_CLASSES``.

    Examples
    --------
    >>> allowed_classes("MoS2") == CELL_CLASSES
    True
    >>> allowed_classes("MoWSSe")
    ('perfect', 'V_X1', 'V_X2', 'V_M', 'V_X1+V_M', 'V_X2+V_M', 'adatom')
    """
    return _allowed(parse_material(material))


def class_mask(material: str | Material) -> np.ndarray:
    """Boolean mask over ``CELL_CLASSES`` of the classes :func:`allowed_classes` offers."""
    allowed = set(allowed_classes(material))
    return np.array([c in allowed for c in CELL_CLASSES], dtype=bool)


#: How much more likely a class is taken to be when the user names the foreign atom that makes it
#: (``MoS2+Se``: a chalcogen substitution; ``MoS2+W``: a metal dopant), and how much less likely the
#: antisite that intensity alone cannot tell from it (M_X against sub_X, X_M against dopant_M).
STATED_ATOM_ODDS: float = 3.0


def composition_weights(material: str | Material) -> np.ndarray:
    """Prior weight of each cell class from the composition the user states (1 for every class by default).

    A stated foreign chalcogen multiplies ``sub_X`` by :data:`STATED_ATOM_ODDS` and ``M_X`` by its
    inverse; a stated foreign metal does the same for ``dopant_M`` against ``X_M``. So in an
    Se-implanted MoS2 a column as bright as Mo or S+Se (the exponent decides, and an image rarely
    pins it) is called a substitution, nine times likelier than an antisite.

    Examples
    --------
    >>> w = composition_weights("MoS2+Se")
    >>> float(w[CELL_CLASSES.index("sub_X")]), round(float(w[CELL_CLASSES.index("M_X")]), 3)
    (3.0, 0.333)
    >>> bool((composition_weights("MoS2") == 1).all())
    True
    """
    mat = parse_material(material)
    weights = np.ones(len(CELL_CLASSES))
    for atom in mat.dopants:
        up, down = ("sub_X", "M_X") if atom in CHALCOGENS else ("dopant_M", "X_M")
        weights[CELL_CLASSES.index(up)] *= STATED_ATOM_ODDS
        weights[CELL_CLASSES.index(down)] /= STATED_ATOM_ODDS
    return weights


def stated_type_weights(material: str | Material, sublattice: str) -> dict[str, float]:
    """Prior weight of each column type (``COLUMN_TYPES`` of the context classifier) from the stated composition.

    The column-level twin of :func:`composition_weights`: on the sublattice of a foreign atom the user
    names, the ``dopant`` type (the foreign atom, or a pair holding it) is :data:`STATED_ATOM_ODDS`
    times likelier and the ``antisite`` it resembles (``MoS2+V``: an S2 pair on a Mo site scatters
    like V; ``MoS2+Se``: a Mo atom on an X2 site like S+Se) as much less likely. Types not named keep
    weight 1; a sublattice without a stated foreign atom gets an empty dict.

    Examples
    --------
    >>> stated_type_weights("MoS2+V", "M")
    {'dopant': 3.0, 'antisite': 0.3333333333333333}
    >>> stated_type_weights("MoS2+V", "X"), stated_type_weights("MoS2", "M")
    ({}, {})
    """
    mat = parse_material(material)
    named = [a for a in mat.dopants if (a in CHALCOGENS or a in mat.chalcogens) == (sublattice == "X")]
    if not named:
        return {}
    return {"dopant": STATED_ATOM_ODDS, "antisite": 1.0 / STATED_ATOM_ODDS}

