"""Column cross-sections calibrated to multislice, at any microscope setting.

The shipped table ``data/column_cross_sections.json`` holds, for every column content
the plugin uses (single atoms of every element it knows, the chalcogen pairs of X2
columns, also when they sit on a metal site) and for beam energies of 60-300 kV, the
cross-section an isolated column scatters beyond each detector angle, per incident
plane-wave tilt. It was measured with abTEM multislice (how, and with which protocol,
is written in the file and in :mod:`.column_calibration`; ``scripts/fit_cross_sections.py``
regenerates it). From it :func:`column_cross_section` gives the integrated HAADF
cross-section of a column (Å^2 of incident beam, as StatSTEM measures it) for any
energy, convergence angle and detector range, and :func:`probe_shape` the probe the fast
twins blur columns with (Gaussian core plus tail, source size added in quadrature).

Interpolation: the energy through the table's fit (a cubic in ln E of the log
cross-section); detector angles by a monotone cubic in log cross-section; the
convergence angle by averaging over the aperture disc (a monotone cubic over the
tilts). The file is read on the first call, not at import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

from .microscope import MicroscopeSettings
from .structure import column_elements

#: The shipped table.
TABLE_FILE = Path(__file__).parent / "data" / "column_cross_sections.json"
#: Single atoms in the table: every element the plugin knows (adatoms, antisites, dopants, vacancies' partners).
SINGLE_CONTENTS: tuple[str, ...] = (
    "C", "O", "S", "Ti", "V", "Cr", "Mn", "Co", "Se", "Nb", "Mo", "Te", "Hf", "Ta", "W", "Re", "Pt",
)
#: Chalcogen pairs in the table (X2 columns, and X2 pairs on metal sites). A pair's first atom sits on the
#: beam's exit side (:func:`~.structure.column_atoms`: at +h, the beam travels towards +z), so 'SSe' has its
#: Se where the beam enters and 'SeS' where it leaves: the beam channelled by the first atom makes the
#: second scatter more, and the two orders differ by 5 % (60 kV) to 40 % (200 kV, static).
PAIR_CONTENTS: tuple[str, ...] = ("S2", "SSe", "SeS", "STe", "TeS", "Se2", "SeTe", "TeSe", "Te2")


@dataclass(frozen=True)
class ProbeShape:
    """The fast twins' probe: Gaussian core plus a 2D Poisson-kernel tail (see :mod:`.imaging`).

    Attributes
    ----------
    fwhm_A : float
        Core FWHM, source size included.
    tail_fraction : float
        Share of the intensity in the tail.
    tail_width_A : float
        Tail width.
    """

    fwhm_A: float
    tail_fraction: float
    tail_width_A: float


#: Reference energy of the table's fit over energy: x = ln(E / ENERGY_REFERENCE_KV).
ENERGY_REFERENCE_KV = 120.0


class CrossSectionTable:
    """The calibrated table in memory (see the module docstring).

    Parameters
    ----------
    data : dict
        The parsed JSON file.
    """

    def __init__(self, data: dict) -> None:
        if data.get("format") != "napari-stem-defects column cross-sections":
            raise ValueError("not a napari-stem-defects column cross-section table")
        self.meta = {k: v for k, v in data.items() if k not in ("beyond_coefficients", "probe")}
        self.energy = np.asarray(data["energy_kV"], dtype=float)
        self.reference_kV = float(data.get("energy_reference_kV", ENERGY_REFERENCE_KV))
        self.tilt = np.asarray(data["tilt_mrad"], dtype=float)
        self.theta = np.asarray(data["theta_mrad"], dtype=float)
        coefficients = data["beyond_coefficients"]
        self.contents = tuple(sorted(coefficients))
        self._coef = {
            variant: np.stack([np.asarray(coefficients[c].get(variant, coefficients[c]["thermal"]), dtype=float)
                               for c in self.contents])  # (content, tilt, theta, 4)
            for variant in ("static", "thermal")
        }
        probe = data["probe"]
        self._probe_energy = np.asarray(probe["energy_kV"], dtype=float)
        self._probe_alpha = np.asarray(probe["convergence_mrad"], dtype=float)
        self._probe = {k: np.asarray(probe[k], dtype=float) for k in ("fwhm_A", "tail_fraction", "tail_width_A")}

    def log_beyond(self, energy_kV: float, thermal: bool) -> np.ndarray:
        """ln of the cross-section beyond each table angle, per content and tilt, at ``energy_kV``."""
        x = np.log(energy_kV / self.reference_kV)
        coef = self._coef["thermal" if thermal else "static"]
        return coef @ (x ** np.arange(coef.shape[-1]))  # (content, tilt, theta)

    def _check(self, settings: MicroscopeSettings) -> None:
        if settings.convergence_mrad > self.tilt.max() or settings.detector_outer_mrad > self.theta.max():
            raise ValueError(
                f"{settings.describe()} is outside the table (convergence <= {self.tilt.max():g} mrad, "
                f"detector <= {self.theta.max():g} mrad)"
            )
        if settings.detector_inner_mrad < self.theta.min():
            raise ValueError(f"detector inner angle below {self.theta.min():g} mrad is outside the table")

    def cross_sections(self, settings: MicroscopeSettings) -> dict[str, float]:
        """Integrated cross-section (Å^2) of every content in the table at ``settings``."""
        return dict(zip(self.contents, _table_values(self, _settings_key(settings))))

    def probe(self, settings: MicroscopeSettings) -> ProbeShape:
        """The fast twins' probe at ``settings`` (core FWHM with the source size in quadrature)."""
        values = {}
        e = np.log(np.clip(settings.energy_kV, self._probe_energy[0], self._probe_energy[-1]))
        a = float(np.clip(settings.convergence_mrad, self._probe_alpha[0], self._probe_alpha[-1]))
        for key, grid in self._probe.items():
            along_alpha = np.array([np.interp(a, self._probe_alpha, row) for row in grid])
            values[key] = float(np.interp(e, np.log(self._probe_energy), along_alpha))
        fwhm = float(np.hypot(values["fwhm_A"], settings.source_size_A))
        return ProbeShape(fwhm, values["tail_fraction"], values["tail_width_A"])


def _settings_key(settings: MicroscopeSettings) -> tuple[float, float, float, float, bool]:
    thermal = bool(settings.frozen_phonons > 0 and settings.phonon_sigma_A > 0)
    return (float(settings.energy_kV), float(settings.convergence_mrad), float(settings.detector_inner_mrad),
            float(settings.detector_outer_mrad), thermal)


def aperture_mean(tilts_mrad: np.ndarray, values: np.ndarray, alpha_mrad: float) -> np.ndarray:
    """Mean of ``values`` (first axis: tilts) over a uniform aperture disc of semi-angle alpha.

    ``(2 / alpha^2) * integral_0^alpha v(t) t dt``, v a monotone cubic between the sampled tilts.
    """
    fine = np.linspace(0.0, alpha_mrad, 121)
    per_tilt = PchipInterpolator(np.asarray(tilts_mrad, dtype=float), values, axis=0)(fine)
    weights = fine / np.trapezoid(fine, fine)
    return np.trapezoid(np.moveaxis(per_tilt, 0, -1) * weights, fine, axis=-1)


@lru_cache(maxsize=256)
def _cached_values(key: tuple[float, float, float, float, bool], path: str | None) -> np.ndarray:
    table = load_table(path)
    energy, alpha, inner, outer, thermal = key
    logb = table.log_beyond(energy, thermal)  # (content, tilt, theta)
    at = PchipInterpolator(table.theta, logb, axis=2)(np.array([inner, outer]))  # (content, tilt, 2)
    collected = np.exp(at[..., 0]) - np.exp(at[..., 1])  # (content, tilt)
    out = aperture_mean(table.tilt, collected.T, alpha)  # (content,)
    out.setflags(write=False)
    return out


def _table_values(table: CrossSectionTable, key: tuple) -> np.ndarray:
    table._check(MicroscopeSettings(energy_kV=key[0], convergence_mrad=key[1], detector_inner_mrad=key[2],
                                    detector_outer_mrad=key[3]))
    return _cached_values(key, table.meta.get("_path"))


@lru_cache(maxsize=4)
def load_table(path: str | None = None) -> CrossSectionTable:
    """Read the cross-section table (the shipped one by default); cached after the first call."""
    file = Path(path) if path else TABLE_FILE
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the cross-section table {file}: {err}") from err
    table = CrossSectionTable(data)
    table.meta["_path"] = str(file) if path else None
    return table


def metal_x2_ratio(material, settings: MicroscopeSettings) -> float:
    """Expected intensity of a metal column over an X2 column of ``material`` at ``settings`` (table values,
    averaged over the composition; the thermal values unless ``settings`` says otherwise).

    Examples
    --------
    >>> s = MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70, detector_outer_mrad=200,
    ...                        frozen_phonons=8)
    >>> 1.5 < metal_x2_ratio("MoS2", s) < 3.5, 1.0 < metal_x2_ratio("WSe2", s) < 1.8
    (True, True)
    """
    from ..materials import parse_material

    mat = parse_material(material)
    metal = sum(f * column_cross_section(el, settings) for el, f in mat.metals.items())
    x2 = 0.0
    for a, fa in mat.chalcogens.items():
        for b, fb in mat.chalcogens.items():
            if mat.janus and a == b:
                continue  # a Janus layer's X2 columns hold one atom of each side's chalcogen
            # a mixed pair counts once in each order (which atom the beam meets first; for a Janus layer:
            # which face looks at the beam, unknown, so both count alike)
            content = f"{a}2" if a == b else f"{a}{b}"
            x2 += (fa * fb * (2.0 if mat.janus else 1.0)) * column_cross_section(content, settings)
    return float(metal / x2) if x2 > 0 else float("nan")


#: How far (relative) a setting's metal/X2 ratio in the table may be from an image's own for
#: :func:`antisite_alike_setting` to take that setting as one the image may come from.
SETTING_RATIO_TOLERANCE: float = 0.2

#: Microscope settings an image of unknown origin may come from (kV, convergence, inner, outer mrad):
#: every beam energy of the table at low, medium and high detector angles.
PLAUSIBLE_SETTINGS: tuple[tuple[float, float, float, float], ...] = tuple(
    (kv, 28.0, inner, 200.0) for kv in (60.0, 80.0, 200.0, 300.0) for inner in (45.0, 60.0, 75.0, 90.0))


def plausible_metal_x2_ratios(material) -> tuple[float, float]:
    """Lowest and highest :func:`metal_x2_ratio` of ``material`` over :data:`PLAUSIBLE_SETTINGS`.

    When the range holds 1, the metal columns may be brighter or dimmer than the X2 columns
    depending on the microscope, and brightness alone cannot say which sublattice is the metal one.

    Examples
    --------
    >>> lo, hi = plausible_metal_x2_ratios("WSe2")   # Se2 outshines W at 60 kV and low angles
    >>> lo < 1.0 < hi, plausible_metal_x2_ratios("MoS2")[0] > 1.0, plausible_metal_x2_ratios("MoTe2")[1] < 1.0
    (True, True, True)
    """
    from ..materials import parse_material

    mat = parse_material(material)
    if mat.name not in _RATIO_RANGES:
        ratios = plausible_metal_x2_list(mat)
        _RATIO_RANGES[mat.name] = (float(min(ratios)), float(max(ratios))) if ratios else (np.nan, np.nan)
    return _RATIO_RANGES[mat.name]


def plausible_microscopes(frozen_phonons: int = 0) -> list[MicroscopeSettings]:
    """:data:`PLAUSIBLE_SETTINGS` as microscope settings: a static lattice, or a thermal one with
    ``frozen_phonons`` configurations."""
    return [MicroscopeSettings(energy_kV=kv, convergence_mrad=conv, detector_inner_mrad=inner,
                               detector_outer_mrad=outer, frozen_phonons=frozen_phonons)
            for kv, conv, inner, outer in PLAUSIBLE_SETTINGS]


def plausible_metal_x2_list(material) -> list[float]:
    """:func:`metal_x2_ratio` of ``material`` (static lattice) at each setting of :data:`PLAUSIBLE_SETTINGS`;
    none where the table lacks one of its elements (an element it was never fitted for).

    Examples
    --------
    >>> ratios = plausible_metal_x2_list("MoSe2")   # Mo is always dimmer than an Se2 pair
    >>> len(ratios) == len(PLAUSIBLE_SETTINGS), max(ratios) < 1.0
    (True, True)
    """
    ratios = []
    for settings in plausible_microscopes():
        try:
            ratios.append(metal_x2_ratio(material, settings))
        except (KeyError, ValueError):
            continue
    return [float(r) for r in ratios if np.isfinite(r) and r > 0]


_RATIO_RANGES: dict[str, tuple[float, float]] = {}


def antisite_alike_in_table(material, atom: str, contrast: float = 0.05) -> bool:
    """Whether a foreign atom's column scatters within ``contrast`` of its antisite by the multislice table
    (thermal lattice) at some setting of :data:`PLAUSIBLE_SETTINGS`.

    The table's twin of :func:`~napari_stem_defects.composition.resembles_antisite`: W and an Se2
    pair on a Mo site of MoSe2 are 46 % apart at ``Z**1.7`` and alike at 60 kV with a 60 mrad inner
    angle. A content the table lacks gives False.

    Examples
    --------
    >>> antisite_alike_in_table("MoSe2", "W"), antisite_alike_in_table("MoS2", "W")
    (True, False)
    """
    return antisite_alike_setting(material, atom, contrast) is not None


def antisite_alike_setting(material, atom: str, contrast: float = 0.05, settings: MicroscopeSettings | None = None,
                           metal_x2: float | None = None) -> MicroscopeSettings | None:
    """The first microscope setting at which a foreign atom's column and its antisite's scatter within
    ``contrast`` of each other by the table (thermal lattice), or None.

    Parameters
    ----------
    material : str or Material
        The host.
    atom : str
        The foreign metal (against the host's X2 pair on a metal site) or chalcogen (in a pair with a
        host one, either order, against a host metal on an X2 site).
    contrast : float
        Largest relative difference, ``|a - b| / max(a, b)``, called alike.
    settings : MicroscopeSettings, optional
        The image's microscope: only it is tried. Default: every setting of :data:`PLAUSIBLE_SETTINGS`.
    metal_x2 : float, optional
        Without ``settings``, the image's own metal over X2 column intensity: only the plausible settings
        at which the table gives ``material`` within :data:`SETTING_RATIO_TOLERANCE` of it are tried, the
        closest first (the closest one alone where none is).

    Returns
    -------
    MicroscopeSettings or None
        None also when the table lacks a content.

    Examples
    --------
    >>> s = antisite_alike_setting("MoSe2", "W")
    >>> s.energy_kV, antisite_alike_setting("MoSe2", "W", settings=MicroscopeSettings(energy_kV=200))
    (60.0, None)
    >>> s = antisite_alike_setting("MoSe2", "W", metal_x2=0.53)   # Mo at half an Se2 pair: low angles
    >>> s.energy_kV, s.detector_inner_mrad
    (80.0, 45.0)
    >>> antisite_alike_setting("MoSe2", "W", metal_x2=0.74) is None     # where W stands out
    True
    """
    from ..composition import antisite_rivals

    own, rivals = antisite_rivals(material, atom)
    return contents_alike_setting(material, own, rivals, contrast, settings, metal_x2)


def contents_alike_setting(material, own: list[tuple[str, ...]], rivals: list[tuple[str, ...]],
                           contrast: float = 0.05, settings: MicroscopeSettings | None = None,
                           metal_x2: float | None = None) -> MicroscopeSettings | None:
    """The first microscope setting at which a column of ``own`` and one of ``rivals`` (element tuples, a
    mixed pair in either order) scatter within ``contrast`` of each other by the table (thermal lattice),
    or None; the settings tried as in :func:`antisite_alike_setting`.

    Examples
    --------
    >>> s = contents_alike_setting("WSSe", [("W",)], [("S", "S"), ("S", "Se"), ("Se", "Se")])  # W like Se2
    >>> s.energy_kV, contents_alike_setting("WS2", [("W",)], [("S", "S")])
    (60.0, None)
    """
    from .defects import elements_content

    def labels(elements: tuple[str, ...]) -> set[str]:  # a mixed pair in either order
        return {elements_content(elements), elements_content(elements[::-1])}

    tried = [settings] if settings is not None else plausible_microscopes(frozen_phonons=4)
    if settings is None and metal_x2 is not None and np.isfinite(metal_x2) and metal_x2 > 0:
        try:
            off = np.abs(np.log([metal_x2_ratio(material, t) / metal_x2 for t in tried]))
        except (KeyError, ValueError):
            return None
        order = np.argsort(off, kind="stable")  # the closest first
        tried = [tried[i] for i in order if off[i] <= np.log1p(SETTING_RATIO_TOLERANCE)] or [tried[order[0]]]
    for setting in tried:
        try:
            la = [column_cross_section(c, setting) for e in own for c in labels(e)]
            lb = [column_cross_section(c, setting) for e in rivals for c in labels(e)]
        except (KeyError, ValueError):  # a content the table was never fitted for
            return None
        if any(abs(x - y) < contrast * max(x, y) for x in la for y in lb):
            return setting
    return None


def column_cross_section(content: str, settings: MicroscopeSettings, table: CrossSectionTable | None = None) -> float:
    """Integrated HAADF cross-section of a column at ``settings``, in Å^2 of incident beam.

    Parameters
    ----------
    content : str
        Column content as in site tables: 'Mo', 'S2', 'SSe', 'S', '' (empty).
    settings : MicroscopeSettings
        Beam energy, convergence, detector; ``frozen_phonons > 0`` gives the thermal
        (frozen-phonon) values, otherwise the static lattice's.
    table : CrossSectionTable, optional
        Defaults to the shipped table.

    Returns
    -------
    float
        The cross-section; 0 for an empty column. A content the table lacks (e.g. three
        atoms) gets the sum of its atoms' single-atom values.

    Examples
    --------
    >>> s = MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70, detector_outer_mrad=200)
    >>> mo, s2 = column_cross_section("Mo", s), column_cross_section("S2", s)
    >>> 0.01 < mo < 0.03, 2.0 < mo / s2 < 3.5
    (True, True)
    """
    table = table or load_table()
    values = table.cross_sections(settings)
    if content in values:
        return float(values[content])
    elements = column_elements(content)
    return float(sum(values[e] for e in elements))


def probe_shape(settings: MicroscopeSettings, table: CrossSectionTable | None = None) -> ProbeShape:
    """The probe (core FWHM with source size, tail) the fast twins use at ``settings``."""
    return (table or load_table()).probe(settings)


def fit_probe_profile(
    radii_A: np.ndarray, profile: np.ndarray, total: float | None = None, fit_radius_A: float = 6.0
) -> tuple[float, float, float, float]:
    """Fit the fast twins' probe model to a radial image profile of an isolated column.

    Model: ``A * ((1 - t) * G(r; fwhm) + t * w / (2 pi (r^2 + w^2)^1.5))`` with G a
    normalised 2D Gaussian, least squares weighted by sqrt(r) (the area each radius stands
    for), so the fit follows where the intensity goes (cross-talk).

    Parameters
    ----------
    radii_A, profile : ndarray
        Distances from the column and the detected fraction there.
    total : float, optional
        The column's integrated cross-section; fixes A (else A is fitted too).
    fit_radius_A : float
        Largest radius used.

    Returns
    -------
    fwhm, tail_fraction, tail_width, amplitude : float
    """
    from scipy.optimize import least_squares

    r = np.asarray(radii_A, dtype=float)
    y = np.asarray(profile, dtype=float)
    keep = r <= fit_radius_A
    r, y = r[keep], y[keep]
    weight = np.sqrt(r + 0.05)

    def model(amp: float, fwhm: float, tail: float, width: float) -> np.ndarray:
        s2 = (fwhm / 2.3548200450309493) ** 2
        core = np.exp(-(r**2) / (2 * s2)) / (2 * np.pi * s2)
        poisson = width / (2 * np.pi * (r**2 + width**2) ** 1.5)
        return amp * ((1 - tail) * core + tail * poisson)

    half = r[np.argmax(y < y[0] / 2)] if np.any(y < y[0] / 2) else 0.5
    guess_amp = y[0] * np.pi * (2 * half) ** 2 / (4 * np.log(2))
    if total is None:
        fit = least_squares(lambda p: (model(*p) - y) * weight / y.max(), [guess_amp, 2 * half, 0.1, 1.0],
                            bounds=([0, 0.05, 0.0, 0.2], [np.inf, 5.0, 0.9, 10.0]))
        amp, fwhm, tail, width = fit.x
    else:
        fit = least_squares(lambda p: (model(total, *p) - y) * weight / y.max(), [2 * half, 0.1, 1.0],
                            bounds=([0.05, 0.0, 0.2], [5.0, 0.9, 10.0]))
        (fwhm, tail, width), amp = fit.x, total
    return float(fwhm), float(tail), float(width), float(amp)


def canonical_content(content: str) -> str:
    """A content as site tables name it (:func:`~.defects.species_string`): a pair in either order is one.

    Examples
    --------
    >>> canonical_content("SeS"), canonical_content("SSe"), canonical_content("Mo")
    ('SSe', 'SSe', 'Mo')
    """
    from ..materials import ATOMIC_NUMBER
    from .defects import species_string

    return species_string(np.array([ATOMIC_NUMBER[e] for e in column_elements(content)], dtype=np.int64))


def contents_of_slots(slots: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Unique column contents of an (n, 2) array of atomic numbers, and each row's index into them.

    Contents are named as the table names them (:func:`~.defects.ordered_content`): a pair of two
    different atoms keeps its order (which one the beam meets first), any other column is sorted.
    """
    from .defects import ordered_content

    slots = np.asarray(slots, dtype=np.int64).reshape(len(slots), -1)
    mixed = np.zeros(len(slots), dtype=bool)
    if slots.shape[1] == 2:
        mixed = (slots[:, 0] > 0) & (slots[:, 1] > 0) & (slots[:, 0] != slots[:, 1])
    ordered = np.where(mixed[:, None], slots, np.sort(slots, axis=1))
    keys, inverse = np.unique(ordered, axis=0, return_inverse=True)
    return inverse.ravel(), [ordered_content(k) for k in keys]
