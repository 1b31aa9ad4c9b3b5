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
METALS = ("Ti", "V", "Cr", "Nb", "Mo", "Hf", "Ta", "W", "Re", "Pt")
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

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")


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
    """

    name: str
    metals: dict[str, float] = field(default_factory=dict)
    chalcogens: dict[str, float] = field(default_factory=dict)
    janus: bool = False

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
        A chemical formula. Elements without a number in an alloy share
        their sublattice equally (``MoWSSe`` is Mo0.5W0.5SSe). A prefix
        ``Janus-`` makes a Janus layer (one chalcogen per side).

    Returns
    -------
    Material

    Raises
    ------
    ValueError
        If the formula names unknown elements or lacks a metal or chalcogen.
    """
    if isinstance(name, Material):
        return name
    text = name.strip()
    janus = False
    if text.lower().startswith("janus"):
        janus = True
        text = text[5:].lstrip("-_ ")
    tokens = _TOKEN.findall(text)
    if not tokens or "".join(e + n for e, n in tokens) != text:
        raise ValueError(f"cannot read material formula {name!r}; try e.g. 'MoS2' or 'MoWSSe'")
    metals: dict[str, float] = {}
    chalcogens: dict[str, float] = {}
    for element, number in tokens:
        if element not in ATOMIC_NUMBER:
            raise ValueError(f"{name!r}: unknown element {element!r}")
        amount = float(number) if number else None
        target = metals if element in METALS else chalcogens if element in CHALCOGENS else None
        if target is None:
            raise ValueError(f"{name!r}: {element} is neither a transition metal nor a chalcogen")
        target[element] = target.get(element, 0.0) + (amount if amount is not None else math.nan)
    return Material(
        name=name.strip(),
        metals=_normalise(metals, name),
        chalcogens=_normalise(chalcogens, name),
        janus=janus,
    )


def _normalise(part: dict[str, float], name: str) -> dict[str, float]:
    if not part:
        return part
    if all(math.isnan(v) for v in part.values()):
        return {e: 1.0 / len(part) for e in part}
    if any(math.isnan(v) for v in part.values()):
        # 'MoS2' style: a single element without a number, the other given -> count as 1
        part = {e: (1.0 if math.isnan(v) else v) for e, v in part.items()}
    total = sum(part.values())
    if total <= 0:
        raise ValueError(f"{name!r}: amounts must be positive")
    return {e: v / total for e, v in part.items()}
