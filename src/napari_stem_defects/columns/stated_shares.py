"""Whether an alloy's columns hold its elements in about the shares the user stated.

The stated composition sets the species fit's priors (:func:`~.species.candidates`), so a wrong share
(``MoWSSe``, Mo0.5W0.5SSe, typed for a Mo-rich sample) still leaves the fit looking for a W population
that is not there. :func:`stated_share_notes` compares the shares the analysis read with the stated
ones and, where they differ by more than :data:`SHARE_TOLERANCE`, says what the image suggests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..materials import Material, parse_material
from .species import candidates, host_labels

#: Largest difference (absolute, as a fraction of the sublattice's atoms) between a read and a stated share
#: that passes without a note: the alloy's own spread and a nominal composition are well inside it.
SHARE_TOLERANCE: float = 0.2
#: Fewest host columns on a sublattice for its shares to be judged.
MIN_COLUMNS: int = 50


def read_shares(material: str | Material, sites: pd.DataFrame, sublattice: str) -> tuple[dict[str, float], int]:
    """Each stated element's share of the host columns' atoms on a sublattice ('M' or 'X'), and how many
    host columns there are.

    Only columns read as one of the host's own contents count (a Mo column in MoWS2; an S2, S+Se or Se2
    pair in an S/Se alloy): vacancies, dopants and antisites are the defects, not the alloy. Columns of 1T
    domains and boundaries are left out where the table says so.

    Examples
    --------
    >>> sites = pd.DataFrame({"sublattice": ["X"] * 4, "species": ["S2", "SSe", "SSe", "Se2"]})
    >>> read_shares("MoSSe", sites, "X")
    ({'S': 0.5, 'Se': 0.5}, 4)
    """
    mat = parse_material(material)
    hosts = host_labels(mat, sublattice)
    elements = {label: els for label, els, _ in candidates(mat, sublattice) if label in hosts}
    keep = sites["sublattice"].astype(str).eq(sublattice).to_numpy().copy()
    if "phase" in sites:
        keep &= sites["phase"].astype(str).eq("2H").to_numpy()
    if "boundary" in sites:
        keep &= ~sites["boundary"].astype(bool).to_numpy()
    counts = sites.loc[keep, "species"].astype(str).value_counts()
    stated = mat.metals if sublattice == "M" else mat.chalcogens
    atoms = {e: 0.0 for e in stated}
    n = 0
    for label, count in counts.items():
        if label not in elements:
            continue
        n += int(count)
        for e in elements[label]:
            atoms[e] += count / len(elements[label])
    total = sum(atoms.values())
    return ({e: float(v / total) for e, v in atoms.items()} if total else {}), n


def stated_share_notes(material: str | Material, sites: pd.DataFrame) -> list[str]:
    """What the user should know where an alloy's columns hold its elements far from the stated shares.

    Parameters
    ----------
    material : str or Material
        The stated material.
    sites : DataFrame
        The analysis's site table (``sublattice``, ``species``; ``phase`` and ``boundary`` when present).

    Returns
    -------
    list of str
        At most one note per sublattice, with the formula the read shares give; none for a binary or a
        Janus layer's chalcogens (each side holds one), or where the shares agree.

    Examples
    --------
    >>> sites = pd.DataFrame({"sublattice": ["M"] * 97 + ["M"] * 3, "species": ["Mo"] * 97 + ["W"] * 3})
    >>> print(stated_share_notes("MoWSSe", sites)[0])  # doctest: +NORMALIZE_WHITESPACE
    The metal sites read Mo 97 %, W 3 % (100 columns) where MoWSSe states Mo 50 %, W 50 %: the stated
    shares are the species fit's priors, so if the sample is Mo0.97W0.03(S0.5Se0.5)2, state that as the
    material.
    >>> stated_share_notes("Mo0.95W0.05SSe", sites)
    []
    """
    mat = parse_material(material)
    notes = []
    read = {}
    for sub, stated, name in (("M", mat.metals, "metal"), ("X", mat.chalcogens, "chalcogen")):
        if len(stated) < 2 or (sub == "X" and mat.janus):
            continue
        shares, n = read_shares(mat, sites, sub)
        if n < MIN_COLUMNS or not shares:
            continue
        read[sub] = shares
        if max(abs(shares[e] - stated[e]) for e in stated) <= SHARE_TOLERANCE:
            continue
        notes.append((sub, name, shares, stated, n))
    out = []
    for sub, name, shares, stated, n in notes:
        formula = suggested_formula(mat, read)
        said = ", ".join(f"{e} {100 * v:.0f} %" for e, v in shares.items())
        meant = ", ".join(f"{e} {100 * v:.0f} %" for e, v in stated.items())
        out.append(f"The {name} sites read {said} ({n} columns) where {mat.name} states {meant}: the stated "
                   "shares are the species fit's priors, so "
                   + (f"if the sample is {formula}, state that as the material." if formula
                      else "check the stated composition."))
    return out


def suggested_formula(material: Material, read: dict[str, dict[str, float]]) -> str | None:
    """The material's formula with the read shares in place of the stated ones (None where it does not parse).

    Examples
    --------
    >>> suggested_formula(parse_material("MoWSSe"), {"M": {"Mo": 0.968, "W": 0.032}})
    'Mo0.97W0.03(S0.5Se0.5)2'
    >>> suggested_formula(parse_material("MoWS2+Se"), {"M": {"Mo": 1.0, "W": 0.0}})
    'MoS2+Se'
    >>> suggested_formula(parse_material("Janus-MoWSSe"), {"M": {"Mo": 0.8, "W": 0.2}})
    'Janus-Mo0.8W0.2SSe'
    """
    def part(shares: dict[str, float]) -> str:
        kept = {e: v for e, v in shares.items() if round(v, 2) > 0}
        if len(kept) == 1:
            return next(iter(kept))
        values = np.round(np.array(list(kept.values())) / sum(kept.values()), 2)
        values[-1] = round(1.0 - values[:-1].sum(), 2)
        return "".join(f"{e}{v:g}" for e, v in zip(kept, values))

    metals = part(read.get("M", material.metals))
    chalcogens = part(read.get("X", material.chalcogens))
    if material.janus:
        chalcogens = "".join(material.chalcogens)
    elif len(chalcogens) <= 2 and chalcogens.isalpha():  # one element
        chalcogens += "2"
    else:
        chalcogens = f"({chalcogens})2"
    text = ("Janus-" if material.janus else "") + metals + chalcogens + "".join(f"+{d}" for d in material.dopants)
    try:
        parse_material(text)
    except ValueError:
        return None
    return text


__all__ = ["MIN_COLUMNS", "SHARE_TOLERANCE", "read_shares", "stated_share_notes", "suggested_formula"]
