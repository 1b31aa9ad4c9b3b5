"""The context of a column: what the pixels alone cannot tell (material, beam, detector), and its column type.

The context encoder of the context-encoder column classifier (Dan, Zhang, Loh, Eda, Loh): the
stated composition as normalised electron-shell occupancy counts (metal, chalcogen and stated
dopant parts apart), the beam energy and the detector type as one-hot vectors, and the
sublattice of the site. A column's *type* says what its content is relative to the stated host,
in five words shared by every material (the study's metal / dopant / X2 / single vacancy / double
vacancy, in the plugin's vocabulary):

``host``      the host's own content (Mo in MoS2, S2, SSe in MoSSe, W in Mo0.5W0.5S2)
``dopant``    a foreign metal on a metal site, a foreign chalcogen on an X2 column (sub_X)
``single``    one host chalcogen left on an X2 column (V_X1)
``empty``     nothing (V_M on a metal site, V_X2 on an X2 column)
``antisite``  a metal on an X2 column (M_X), a chalcogen pair on a metal site (X_M)

Pure python and numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..materials import ATOMIC_NUMBER, CHALCOGENS, METALS, Material

#: Column types, in the order the classifier outputs them.
COLUMN_TYPES: tuple[str, ...] = ("host", "dopant", "single", "empty", "antisite")
#: Types a site of each sublattice can take (a metal site holds no single chalcogen).
SUBLATTICE_TYPES: dict[str, tuple[str, ...]] = {
    "M": ("host", "dopant", "empty", "antisite"),
    "X": COLUMN_TYPES,
}
#: Subshells in Madelung (aufbau) order, with their capacities.
SUBSHELLS: tuple[tuple[str, int], ...] = (
    ("1s", 2), ("2s", 2), ("2p", 6), ("3s", 2), ("3p", 6), ("4s", 2), ("3d", 10), ("4p", 6), ("5s", 2),
    ("4d", 10), ("5p", 6), ("6s", 2), ("4f", 14), ("5d", 10), ("6p", 6),
)
#: Ground states that break the aufbau order, among the elements the plugin may meet: (subshell, change).
_EXCEPTIONS: dict[int, tuple[tuple[str, int], ...]] = {
    24: (("4s", -1), ("3d", 1)),  # Cr 3d5 4s1
    29: (("4s", -1), ("3d", 1)),  # Cu 3d10 4s1
    41: (("5s", -1), ("4d", 1)),  # Nb 4d4 5s1
    42: (("5s", -1), ("4d", 1)),  # Mo 4d5 5s1
    44: (("5s", -1), ("4d", 1)),  # Ru 4d7 5s1
    45: (("5s", -1), ("4d", 1)),  # Rh 4d8 5s1
    46: (("5s", -2), ("4d", 2)),  # Pd 4d10
    47: (("5s", -1), ("4d", 1)),  # Ag 4d10 5s1
    78: (("6s", -1), ("5d", 1)),  # Pt 5d9 6s1
    79: (("6s", -1), ("5d", 1)),  # Au 5d10 6s1
}
#: Beam energies of the one-hot vector (kV); an energy takes the nearest on a log scale.
ENERGY_BINS_KV: tuple[float, ...] = (60.0, 80.0, 100.0, 120.0, 200.0, 300.0)
#: Detector types of the one-hot vector, by the inner angle over the convergence semi-angle.
DETECTOR_TYPES: tuple[str, ...] = ("LAADF", "MAADF", "HAADF")
#: Inner angle / convergence angle where MAADF and HAADF begin.
DETECTOR_RATIO_EDGES: tuple[float, float] = (1.5, 2.5)
#: Length of :func:`context_vector`.
CONTEXT_LENGTH: int = 3 * len(SUBSHELLS) + 1 + len(ENERGY_BINS_KV) + 1 + len(DETECTOR_TYPES) + 1 + 3 + 2


def shell_occupancy(element: str) -> np.ndarray:
    """Electrons in each subshell of :data:`SUBSHELLS`, over its capacity (ground state of the neutral atom).

    Examples
    --------
    >>> occ = shell_occupancy("Mo")  # [Kr] 4d5 5s1
    >>> [f"{name}{round(v * cap)}" for (name, cap), v in zip(SUBSHELLS, occ) if name in ("5s", "4d")]
    ['5s1', '4d5']
    >>> int(round(sum(v * cap for (_, cap), v in zip(SUBSHELLS, shell_occupancy("W")))))
    74
    """
    z = ATOMIC_NUMBER.get(element)
    if z is None:
        raise ValueError(f"unknown element {element!r}; known: {', '.join(ATOMIC_NUMBER)}")
    counts = dict.fromkeys((name for name, _ in SUBSHELLS), 0)
    left = z
    for name, cap in SUBSHELLS:
        counts[name] = min(cap, left)
        left -= counts[name]
    for name, change in _EXCEPTIONS.get(z, ()):
        counts[name] += change
    return np.array([counts[name] / cap for name, cap in SUBSHELLS])


def _mean_occupancy(amounts: dict[str, float]) -> np.ndarray:
    total = sum(amounts.values())
    if total <= 0:
        return np.zeros(len(SUBSHELLS))
    return sum(frac / total * shell_occupancy(el) for el, frac in amounts.items())


def composition_vector(material: Material) -> np.ndarray:
    """Metal, chalcogen and stated-dopant parts of the composition as mean subshell occupancies, one after another.

    A Janus or alloy layer is the amount-weighted mean of its elements; a material with no stated
    dopant has zeros in the third part.
    """
    dopants = {el: 1.0 for el in material.dopants}
    return np.concatenate([_mean_occupancy(dict(material.metals)), _mean_occupancy(dict(material.chalcogens)),
                           _mean_occupancy(dopants)])


def energy_one_hot(energy_kV: float | None) -> np.ndarray:
    """One-hot over :data:`ENERGY_BINS_KV` (nearest on a log scale), then an 'unknown' flag."""
    out = np.zeros(len(ENERGY_BINS_KV) + 1)
    if energy_kV is None or not np.isfinite(energy_kV) or energy_kV <= 0:
        out[-1] = 1.0
    else:
        out[int(np.argmin(np.abs(np.log(np.array(ENERGY_BINS_KV) / float(energy_kV)))))] = 1.0
    return out


def detector_type(inner_mrad: float, convergence_mrad: float) -> str:
    """'LAADF', 'MAADF' or 'HAADF' from the inner angle over the convergence semi-angle.

    Examples
    --------
    >>> detector_type(75, 22), detector_type(50, 28), detector_type(35, 30)
    ('HAADF', 'MAADF', 'LAADF')
    """
    ratio = float(inner_mrad) / float(convergence_mrad)
    return DETECTOR_TYPES[int(np.searchsorted(DETECTOR_RATIO_EDGES, ratio, side="right"))]


def context_vector(material: Material, microscope: Any | None, sublattice: str,
                   energy_kV: float | None = None) -> np.ndarray:
    """The context of a site: composition, beam energy, detector and sublattice, as one float vector.

    Parameters
    ----------
    material : Material
        The stated material (host, alloy or Janus layer, stated dopants).
    microscope : MicroscopeSettings or None
        Beam energy, convergence and detector angles; None when unknown (the 'unknown' flags are set).
    sublattice : {'M', 'X'}
        The site's sublattice.
    energy_kV : float, optional
        Without ``microscope``, the beam energy alone (most files record it, few their detector angles):
        the energy parts are set and the detector stays 'unknown'.

    Returns
    -------
    ndarray, shape (CONTEXT_LENGTH,)
        Composition (3 x subshells), 'stated dopant' flag, energy one-hot + unknown, detector one-hot +
        unknown, log(E / 120 kV), inner / convergence and outer / convergence angles (scaled; zeros
        when unknown), sublattice one-hot (M, X).
    """
    if sublattice not in ("M", "X"):
        raise ValueError(f"sublattice must be 'M' or 'X', not {sublattice!r}")
    known = microscope is not None
    detector = np.zeros(len(DETECTOR_TYPES) + 1)
    numbers = np.zeros(3)
    if known:
        alpha = float(microscope.convergence_mrad)
        detector[DETECTOR_TYPES.index(detector_type(microscope.detector_inner_mrad, alpha))] = 1.0
        numbers[:] = (np.log(float(microscope.energy_kV) / 120.0), microscope.detector_inner_mrad / alpha / 3.0,
                      microscope.detector_outer_mrad / alpha / 10.0)
    else:
        detector[-1] = 1.0
        if energy_kV is not None and np.isfinite(energy_kV) and energy_kV > 0:
            numbers[0] = np.log(float(energy_kV) / 120.0)
        else:
            energy_kV = None
    parts = [composition_vector(material), [1.0 if material.dopants else 0.0],
             energy_one_hot(microscope.energy_kV if known else energy_kV), detector, numbers,
             [1.0, 0.0] if sublattice == "M" else [0.0, 1.0]]
    return np.concatenate([np.asarray(p, dtype=float) for p in parts])


def column_type(label: str, sublattice: str, host_labels: set[str], material: Material) -> str:
    """The type (:data:`COLUMN_TYPES`) of a content label on a site of a sublattice.

    Parameters
    ----------
    label : str
        Content label ('Mo', 'S2', 'SSe', 'empty' or '' for nothing).
    sublattice : {'M', 'X'}
    host_labels : set of str
        Labels of the host's own contents on that sublattice (candidates with a prior).
    material : Material

    Examples
    --------
    >>> from napari_stem_defects.materials import parse_material
    >>> mat = parse_material("MoS2")
    >>> [column_type(lab, "X", {"S2"}, mat) for lab in ("S2", "S", "", "SSe", "Se", "Mo")]
    ['host', 'single', 'empty', 'dopant', 'dopant', 'antisite']
    >>> [column_type(lab, "M", {"Mo"}, mat) for lab in ("Mo", "W", "empty", "S2")]
    ['host', 'dopant', 'empty', 'antisite']
    """
    els = _elements(label)
    if not els:
        return "empty"
    if _canonical(label) in {_canonical(h) for h in host_labels}:
        return "host"
    if sublattice == "M":
        return "antisite" if all(e in CHALCOGENS for e in els) else "dopant"
    if any(e in METALS for e in els):
        return "antisite"
    if len(els) == 1 and els[0] in material.chalcogens:
        return "single"
    return "dopant"


def _elements(label: str) -> tuple[str, ...]:
    from ..simulate.structure import column_elements

    return column_elements("" if label == "empty" else label)


def _canonical(label: str) -> tuple[str, ...]:
    return tuple(sorted(_elements(label)))


__all__ = [
    "COLUMN_TYPES", "CONTEXT_LENGTH", "SUBLATTICE_TYPES", "column_type", "composition_vector", "context_vector",
    "detector_type", "energy_one_hot", "shell_occupancy",
]
