"""Where a substitution and its antisite scatter alike: what the user is told, and which atom to state.

A metal dopant competes with a host X2 pair on the metal site, a foreign chalcogen with a host metal
on an X2 site. Where the multislice-calibrated column table puts the two within a few per cent of each
other at the image's microscope (or at the common settings its own columns point to), no reader of
intensities can choose between them: the composition the user states does. Where an antisite scatters
like the host's own column on its site (W on an X2 site of a WSSe alloy at 60 kV and low angles), it
may be read as the host's column and its class undercounted: the user is told that too. Used by
``analyze`` and the cells dock.
"""

from __future__ import annotations

from typing import Any

from ..composition import allowed_classes, antisite_rivals, host_contents, substituent_elements
from ..materials import METALS, Material, parse_material
from ..simulate.cross_sections import antisite_alike_setting, contents_alike_setting

#: Largest relative difference of a substitution's and its antisite's table cross-sections that the notes
#: of :func:`alike_pair_notes` call alike (as
#: :func:`~napari_stem_defects.simulate.cross_sections.antisite_alike_in_table`).
ALIKE_CONTRAST: float = 0.05


def alike_pair_notes(material: str | Material, counts: dict[str, int], microscope: Any = None,
                     metal_x2: float | None = None) -> list[str]:
    """What the user should know where a classified substitution and its antisite scatter alike.

    A metal dopant competes with a host X2 pair on the metal site (``dopant_M`` against ``X_M``), a
    foreign chalcogen with a host metal on an X2 site (``sub_X`` against ``M_X``). Where the image holds
    cells of such a pair and the likely foreign atom (the stated one; else W in a Mo host, Mo in a W
    host, and the chalcogen next to the host's: Se in sulfides and tellurides, S in selenides)
    scatters like its antisite by the multislice table (at the image's microscope; when it is not
    known, at a common setting where the host's columns compare as in the image), the pixels cannot
    choose: the stated composition does. The note says so, and which ``+atom`` to state.

    Parameters
    ----------
    material : str or Material
        The stated material.
    counts : dict
        Cells per class of the analysis.
    microscope : MicroscopeSettings, optional
        The image's beam and detector (typed or from the file).
    metal_x2 : float, optional
        Without ``microscope``, the image's metal over X2 column intensity
        (:func:`~napari_stem_defects.columns.intensity.metal_x2_intensity`): the settings it points to.

    Returns
    -------
    list of str
        One note per pair with cells; none where the pair stands apart.

    Examples
    --------
    >>> alike_pair_notes("MoSe2", {"X_M": 6, "perfect": 140})[0][:94]
    '6 X_M and 0 dopant_M cells: W atoms on metal sites scatter like Se2 pairs on them at 60 kV and'
    >>> alike_pair_notes("MoSe2+W", {"dopant_M": 6})[0][-80:]
    'the stated W is taken where they cannot be told apart (Se2 pairs stay possible).'
    >>> alike_pair_notes("WS2", {"X_M": 3, "dopant_M": 3})   # Mo and S2 pairs on W sites stand apart
    []
    >>> alike_pair_notes("MoSe2", {"X_M": 6}, metal_x2=0.74)  # Se2 a third brighter than Mo: W stands out
    []
    """
    mat = parse_material(material)
    partner = [m for m, host in (("W", "Mo"), ("Mo", "W")) if host in mat.metals and m not in mat.metals]
    notes = []
    for substituted, antisite, metal in (("dopant_M", "X_M", True), ("sub_X", "M_X", False)):
        n_sub, n_anti = int(counts.get(substituted, 0)), int(counts.get(antisite, 0))
        if n_sub + n_anti == 0:
            continue
        stated = [a for a in mat.dopants if (a in METALS) == metal]
        for atom in stated or (partner if metal else list(substituent_elements(mat)[:1])):
            where = antisite_alike_setting(mat, atom, ALIKE_CONTRAST, microscope, metal_x2)
            if where is None:
                continue
            at = ("at this image's microscope" if microscope is not None else
                  f"at {where.energy_kV:g} kV and a {where.detector_inner_mrad:g} mrad inner detector angle"
                  + (f" (where the {mat.name} columns compare as in this image)" if metal_x2 else ""))
            own, rivals = antisite_rivals(mat, atom)
            rival = " or ".join(f"{_label(r)} {'pairs' if len(r) > 1 else 'atoms'}" for r in rivals)
            what = f"{atom} atoms on metal sites" if metal else f"{_label(own[0])} pairs on X2 sites"
            head = f"{n_anti} {antisite} and {n_sub} {substituted} cells: {what} scatter like {rival} on them {at}"
            if stated:
                notes.append(f"{head}; the stated {atom} is taken where they cannot be told apart ({rival} "
                             "stay possible).")
            else:
                notes.append(f"{head}, so the pixels cannot tell them apart and the material decides: {mat.name} "
                             f"states no {atom}. If the sample holds {atom}, give {mat.name}+{atom}.")
            break
    return notes + hidden_antisite_notes(mat, microscope, metal_x2)


def hidden_antisite_notes(material: str | Material, microscope: Any = None,
                          metal_x2: float | None = None) -> list[str]:
    """What the user should know where an antisite scatters like the host's own column on its site.

    A host metal on an X2 site (``M_X``) against the host's X2 pairs, a host pair on a metal site
    (``X_M``) against the host metals: where the multislice table puts them within
    :data:`ALIKE_CONTRAST` (at the image's microscope, else at a common setting where the host's columns
    compare as in the image), the host's own column is far commoner, so where the two cannot be told
    apart (an alloy's composition disorder spreads its columns; low dose) such antisites are read as
    perfect cells and the class is undercounted. At 60 kV, 25 mrad, HAADF 60-190 mrad a W atom
    scatters like an Se2 pair: W on an X2 site of WSe2 or of a WSSe alloy looks like its Se2 columns.

    Parameters
    ----------
    material : str or Material
        The stated material.
    microscope : MicroscopeSettings, optional
        The image's beam and detector (typed or from the file).
    metal_x2 : float, optional
        Without ``microscope``, the image's metal over X2 column intensity.

    Returns
    -------
    list of str
        One note per antisite content that hides so (of the classes the material offers); none where
        they stand out.

    Examples
    --------
    >>> hidden_antisite_notes("WSSe", metal_x2=1.5)[0][:85]
    'M_X cells of W atoms may go uncounted: W atoms on X2 sites scatter like the Se2 pairs'
    >>> hidden_antisite_notes("WS2"), hidden_antisite_notes("MoS2", metal_x2=2.5)
    ([], [])
    """
    mat = parse_material(material)
    notes = []
    for antisite, content, alike in _hidden_antisites(mat, microscope, metal_x2):
        where_ = "X2 sites" if antisite == "M_X" else "metal sites"
        setting = contents_alike_setting(mat, [content], alike, ALIKE_CONTRAST, microscope, metal_x2)
        at = ("at this image's microscope" if microscope is not None else
              f"at {setting.energy_kV:g} kV and a {setting.detector_inner_mrad:g} mrad inner detector angle"
              + (f" (where the {mat.name} columns compare as in this image)" if metal_x2 else ""))
        kind = "atoms" if len(content) == 1 else "pairs"
        rival = " and ".join(_label(r) for r in alike)
        notes.append(f"{antisite} cells of {_label(content)} {kind} may go uncounted: {_label(content)} {kind} "
                     f"on {where_} scatter like the {rival} {'pairs' if len(alike[0]) > 1 else 'atoms'} of "
                     f"{mat.name} {at}, and those are far commoner: where the two cannot be told apart, the "
                     "host's own column (a perfect cell) is taken.")
    return notes


def _hidden_antisites(mat: Material, microscope: Any = None, metal_x2: float | None = None
                      ) -> list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]]:
    """(antisite class, antisite content, the host contents it scatters like) for each antisite content
    the material offers that the table puts within :data:`ALIKE_CONTRAST` of a host content on its site."""
    metals, pairs = host_contents(mat)
    offered = set(allowed_classes(mat))
    out = []
    for antisite, own, rivals in (("M_X", metals, pairs), ("X_M", pairs, metals)):
        if antisite not in offered:
            continue
        for content in own:
            alike = [r for r in rivals
                     if contents_alike_setting(mat, [content], [r], ALIKE_CONTRAST, microscope, metal_x2) is not None]
            if alike:
                out.append((antisite, content, alike))
    return out


def hidden_antisite_classes(material: str | Material, microscope: Any) -> set[str]:
    """Antisite classes of which some content scatters like a host column at ``microscope`` (the table)
    where the host mixes contents on that site (an alloy, or a Janus layer's S+Se pairs, whose two
    orders scatter apart): what no reader of such an image can count, so training twins imaged there
    leave them out. In a host with one content per site (W on an X2 site of WSe2, 5 % above its Se2
    pairs at 60 kV and low angles) the antisite stands out of the narrow host peak and stays.

    Examples
    --------
    >>> from napari_stem_defects.simulate.microscope import MicroscopeSettings
    >>> low = MicroscopeSettings(energy_kV=60, convergence_mrad=25, detector_inner_mrad=60, detector_outer_mrad=190)
    >>> hidden_antisite_classes("WSSe", low), hidden_antisite_classes("WSSe", MicroscopeSettings(energy_kV=200))
    ({'M_X'}, set())
    >>> hidden_antisite_classes("WSe2", low)
    set()
    """
    mat = parse_material(material)
    metals, pairs = host_contents(mat)
    mixed = {"M_X": len(pairs) > 1 or len(set(pairs[0])) > 1, "X_M": len(metals) > 1}
    return {antisite for antisite, _, _ in _hidden_antisites(mat, microscope) if mixed[antisite]}


def _label(elements: tuple[str, ...]) -> str:
    """'Mo', 'Se2' or 'S+Se' for a column's elements."""
    if len(elements) == 1:
        return elements[0]
    return f"{elements[0]}2" if elements[0] == elements[1] else "+".join(elements)
