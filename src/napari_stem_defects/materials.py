"""Materials: 2H transition-metal dichalcogenide monolayers and their alloys.

A :class:`Material` says which elements sit on the metal (M, "A") sites and
which on the chalcogen (X2, "B") columns, in what fractions, and what the
in-plane lattice constant is. Alloys follow Vegard's law over the binary
end members.

Examples
--------
>>> m = parse_material("MoS2")
>>> m.metals, m.chalcogens
({'Mo': 1.0}, {'S': 1.0})
>>> round(m.a, 3)
3.16
>>> round(parse_material("MoWSSe").a, 3)
3.221
>>> parse_material("Mo0.8W0.2S2").metals
{'Mo': 0.8, 'W': 0.2}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

#: Atomic numbers of the elements the plugin knows.
ATOMIC_NUMBER: dict[str, int] = {
    "C": 6,
    "O": 8,
    "S": 16,
    "Ti": 22,
    "V": 23,
    "Cr": 24,
    "Mn": 25,
    "Co": 27,
    "Se": 34,
    "Nb": 41,
    "Mo": 42,
    "Te": 52,
    "Hf": 72,
    "Ta": 73,
    "W": 74,
    "Re": 75,
    "Pt": 78,
}

#: Elements that sit on metal (A) sites of a TMD.
METALS = ("Ti", "V", "Cr", "Mn", "Co", "Nb", "Mo", "Hf", "Ta", "W", "Re", "Pt")
#: Elements that sit on chalcogen (B) columns of a TMD.
CHALCOGENS = ("S", "Se", "Te")

#: In-plane lattice constants a (Å) of 2H monolayers (bulk 2H values; WTe2 is
#: the hypothetical 2H polymorph, estimated from DFT).
LATTICE_CONSTANT: dict[tuple[str, str], float] = {
    ("Mo", "S"): 3.160,
    ("W", "S"): 3.153,
    ("Mo", "Se"): 3.289,
    ("W", "Se"): 3.282,
    ("Mo", "Te"): 3.519,
    ("W", "Te"): 3.550,
    ("Nb", "S"): 3.310,
    ("Nb", "Se"): 3.445,
    ("Ta", "S"): 3.314,
    ("Ta", "Se"): 3.436,
    ("Re", "S"): 3.180,  # distorted 1T' in reality; used only as a dopant host value
    ("V", "S"): 3.180,
    ("V", "Se"): 3.320,
}


@dataclass(frozen=True)
class Material:
    """A 2H-MX2 monolayer, possibly alloyed or Janus.

    Parameters
    ----------
    name : str
        Readable name, e.g. ``"MoS2"`` or ``"MoWSSe"``.
    metals : dict of str to float
        Fraction of metal sites held by each metal; sums to 1.
    chalcogens : dict of str to float
        Fraction of chalcogen atoms of each element; sums to 1.
    janus : bool
        If True and there are two chalcogens, the top layer is entirely the
        first chalcogen and the bottom layer the second, so every X2 column
        holds one of each (e.g. Janus MoSSe).
    dopants : tuple of str
        Foreign atoms the user expects (``MoS2+Se``): metals on metal sites,
        chalcogens on chalcogen sites.
    """

    name: str
    metals: dict[str, float] = field(default_factory=dict)
    chalcogens: dict[str, float] = field(default_factory=dict)
    janus: bool = False
    dopants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for label, part, allowed in (
            ("metal", self.metals, METALS),
            ("chalcogen", self.chalcogens, CHALCOGENS),
        ):
            if not part:
                raise ValueError(f"{self.name!r}: no {label} given")
            bad = [el for el in part if el not in allowed]
            if bad:
                raise ValueError(f"{self.name!r}: {bad} cannot sit on {label} sites")
            total = sum(part.values())
            if not math.isclose(total, 1.0, rel_tol=1e-6):
                raise ValueError(f"{self.name!r}: {label} fractions sum to {total}, not 1")
        if self.janus and len(self.chalcogens) != 2:
            raise ValueError(f"{self.name!r}: a Janus layer needs exactly two chalcogens")

    @property
    def a(self) -> float:
        """In-plane lattice constant in Å (Vegard's law over the end members)."""
        total = 0.0
        for m, fm in self.metals.items():
            for x, fx in self.chalcogens.items():
                total += fm * fx * _end_member_a(m, x)
        return total

    @property
    def d100(self) -> float:
        """First-order lattice-plane spacing a*sqrt(3)/2 in Å (the strongest FFT ring)."""
        return self.a * math.sqrt(3.0) / 2.0

    @property
    def main_metal(self) -> str:
        """The most abundant metal."""
        return max(self.metals, key=self.metals.__getitem__)

    @property
    def main_chalcogen(self) -> str:
        """The most abundant chalcogen."""
        return max(self.chalcogens, key=self.chalcogens.__getitem__)

    @property
    def is_alloy(self) -> bool:
        """True if either sublattice holds more than one element."""
        return len(self.metals) > 1 or len(self.chalcogens) > 1

    def context_vector(self) -> list[float]:
        """Composition as mean and spread of Z on each sublattice.

        Returns
        -------
        list of float
            ``[mean Z metal, std Z metal, mean Z chalcogen, std Z chalcogen]``,
            a compact descriptor later models take as material context.
        """
        out: list[float] = []
        for part in (self.metals, self.chalcogens):
            mean = sum(f * ATOMIC_NUMBER[e] for e, f in part.items())
            var = sum(f * (ATOMIC_NUMBER[e] - mean) ** 2 for e, f in part.items())
            out += [mean, math.sqrt(var)]
        return out


def _end_member_a(metal: str, chalcogen: str) -> float:
    try:
        return LATTICE_CONSTANT[(metal, chalcogen)]
    except KeyError:
        raise ValueError(
            f"no lattice constant known for {metal}{chalcogen}2; "
            f"known: {sorted(m + x + '2' for m, x in LATTICE_CONSTANT)}"
        ) from None


#: Named materials users type. Alloys without numbers are equimolar.
KNOWN_MATERIALS = (
    "MoS2",
    "WS2",
    "MoSe2",
    "WSe2",
    "MoTe2",
    "WTe2",
    "MoWS2",
    "MoWSe2",
    "MoSSe",
    "WSSe",
    "MoWSSe",
    "Janus-MoSSe",
    "Janus-WSSe",
)


def parse_material(name: str | Material) -> Material:
    """Turn a formula such as ``"WSe2"``, ``"MoWSSe"`` or ``"Mo0.7W0.3S2"`` into a Material.

    Parameters
    ----------
    name : str or Material
        A chemical formula of an MX2 monolayer:

        - ``MoS2``, ``Mo0.8W0.2S2``, ``WS1.5Te0.5``: amounts per formula unit
          (one metal, two chalcogens);
        - ``MoWSSe``, ``WSSe``, ``MoWS2``: two or more elements of one sublattice
          without numbers share it equally (``MoWSSe`` is Mo0.5W0.5SSe);
        - ``W(S,Te)2``, ``W(S0.25Te0.75)2``: a group shares the amount after it;
        - ``Janus-MoSSe``: a prefix ``Janus-`` puts one chalcogen on each side;
        - ``MoS2+Se``, ``MoS2+W+Se``: expected foreign atoms (dopants on metal
          sites, substituents on chalcogen sites) after ``+``.

    Returns
    -------
    Material

    Raises
    ------
    ValueError
        With a message naming the problem (and the closest known name where
        there is one): unreadable text, unknown elements, no metal or
        chalcogen, or a formula that is not MX2 (``MoS3``).

    Examples
    --------
    >>> parse_material("W(S,Te)2").chalcogens
    {'S': 0.5, 'Te': 0.5}
    >>> parse_material("MoS2+Se").dopants
    ('Se',)
    >>> parse_material("MoS3")
    Traceback (most recent call last):
    ...
    ValueError: 'MoS3' is not an MX2 formula: 3 chalcogen atoms per metal atom (2 expected); did you mean 'MoS2' or 'MoWS2'?
    """
    if isinstance(name, Material):
        return name
    if not isinstance(name, str):
        raise ValueError(f"a material must be a formula such as 'MoS2', not {name!r}")
    text = name.strip()
    janus = False
    if text.lower().startswith("janus"):
        janus = True
        text = text[5:].lstrip("-_ ")
    base, *extra = [part.strip() for part in text.split("+")]
    items = _formula_items(base, name)
    metals: list[tuple[str, float | None]] = []
    chalcogens: list[tuple[str, float | None]] = []
    for element, amount in items:
        if element not in ATOMIC_NUMBER:
            raise ValueError(f"{name!r}: unknown element {element!r}{_suggestion(name)}")
        target = metals if element in METALS else chalcogens if element in CHALCOGENS else None
        if target is None:
            raise ValueError(f"{name!r}: {element} is neither a transition metal nor a chalcogen")
        target.append((element, amount))
    if not metals or not chalcogens:
        missing = "metal" if not metals else "chalcogen"
        raise ValueError(f"{name!r}: no {missing} given{_suggestion(name)}")
    metal_part, metal_total = _amounts(metals, 1.0)
    chalcogen_part, chalcogen_total = _amounts(chalcogens, 2.0)
    ratio = chalcogen_total / metal_total
    if not math.isclose(ratio, 2.0, rel_tol=0.03):
        hint = _suggestion(name)
        if len(chalcogen_part) > 1:
            hint = (f"; for an alloy write the chalcogens as one group, e.g. "
                    f"{''.join(metal_part)}({','.join(chalcogen_part)})2")
        raise ValueError(f"{name!r} is not an MX2 formula: {ratio:g} chalcogen atoms per metal atom "
                         f"(2 expected){hint}")
    dopants = []
    for element in extra:
        if element not in METALS + CHALCOGENS:
            raise ValueError(f"{name!r}: the foreign atom after '+' must be one metal or chalcogen symbol "
                             f"(e.g. 'MoS2+Se', 'MoS2+W'), not {element!r}")
        if element in metal_part or element in chalcogen_part or element in dopants:
            raise ValueError(f"{name!r}: {element} is part of the host already")
        dopants.append(element)
    return Material(name=name.strip(), metals=metal_part, chalcogens=chalcogen_part, janus=janus,
                    dopants=tuple(dopants))


_ITEM = re.compile(r"\(([^()]*)\)(\d*\.?\d*)|([A-Z][a-z]?)(\d*\.?\d*)")
_GROUP_ITEM = re.compile(r"\s*([A-Z][a-z]?)(\d*\.?\d*)\s*,?")


def _number(text: str, name: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"cannot read the amount {text!r} in {name!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name!r}: amounts must be positive numbers")
    return value


def _formula_items(text: str, name: str) -> list[tuple[str, float | None]]:
    """(element, amount or None) for each element of a formula without prefix or dopants.

    A group ``(A,B)n`` or ``(AxBy)n`` gives its elements ``n`` shared as written
    (equally when no element of the group has a number).
    """
    items: list[tuple[str, float | None]] = []
    pos = 0
    while pos < len(text):
        match = _ITEM.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot read material formula {name!r}; try e.g. 'MoS2', 'MoWSSe', "
                             f"'W(S,Te)2' or 'MoS2+Se'{_suggestion(name)}")
        pos = match.end()
        if match.group(3):
            items.append((match.group(3), _number(match.group(4), name)))
            continue
        inner = match.group(1)
        members = [(m.group(1), _number(m.group(2), name)) for m in _GROUP_ITEM.finditer(inner) if m.group(1)]
        if not members or re.sub(r"[\s,]", "", inner) != "".join(e + n for e, n in _GROUP_ITEM.findall(inner)):
            raise ValueError(f"cannot read the group ({inner}) in {name!r}")
        times = _number(match.group(2), name) or 1.0
        if all(a is None for _, a in members):
            items += [(e, times / len(members)) for e, _ in members]
        else:
            items += [(e, times * (1.0 if a is None else a)) for e, a in members]
    if not items:
        raise ValueError(f"cannot read material formula {name!r}; try e.g. 'MoS2' or 'MoWSSe'")
    return items


def _amounts(part: list[tuple[str, float | None]], shorthand_total: float) -> tuple[dict[str, float], float]:
    """Fractions of one sublattice and its atoms per formula unit.

    Several elements without any number share the sublattice equally and
    stand for ``shorthand_total`` atoms (``MoWSSe``); a lone element without
    a number counts one atom.
    """
    merged: dict[str, float] = {}
    if len(part) > 1 and all(a is None for _, a in part):
        elements = list(dict.fromkeys(e for e, _ in part))
        return {e: 1.0 / len(elements) for e in elements}, shorthand_total
    for element, amount in part:
        merged[element] = merged.get(element, 0.0) + (1.0 if amount is None else amount)
    total = sum(merged.values())
    return {e: v / total for e, v in merged.items()}, total


def _suggestion(name: str) -> str:
    """'; did you mean ...?' for a name close to a known material, else ''."""
    import difflib

    text = str(name).strip()
    by_case = {m.lower(): m for m in KNOWN_MATERIALS}
    if text.lower() in by_case:
        return f"; did you mean {by_case[text.lower()]!r}?"
    close = difflib.get_close_matches(text, KNOWN_MATERIALS, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
