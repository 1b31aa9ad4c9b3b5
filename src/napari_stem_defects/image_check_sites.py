"""The sublattice checks of the image check: two occupied sublattices, a dark hollow, the stated composition.

Column amplitudes (neighbour-corrected, :mod:`~napari_stem_defects.cells.column_amplitudes`) of the metal
sites, X2 columns and hollow positions on a central window give the levels; the bright/dim ratio is
compared with what the stated composition gives for Z-contrast exponents in :data:`GAMMA_RANGE` and
through the multislice-calibrated column table at the microscope settings an image may come from
(:data:`~napari_stem_defects.simulate.cross_sections.PLAUSIBLE_SETTINGS`: at 60 kV and a low detector
angle an Se2 pair outshines Mo 1.9 times, far beyond any exponent).
Used by :mod:`napari_stem_defects.image_check`.

Pure numpy/scipy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from .materials import ATOMIC_NUMBER, Material, parse_material

#: Z-contrast exponents a real HAADF image may show (detector angles, voltage, channelling).
GAMMA_RANGE: tuple[float, float] = (1.25, 2.35)
#: Relative uncertainty of a measured bright/dim amplitude ratio.
RATIO_TOLERANCE: float = 0.10
#: Composition uncertainty (absolute fraction) allowed for a stated alloy.
ALLOY_SPREAD: float = 0.25
#: Smallest (dim - hollow) / (bright - hollow) amplitude contrast of a 2H honeycomb.
MIN_HOLLOW_CONTRAST: float = 0.06
#: Side of the central window (pixels) on which column amplitudes are measured (grown to hold 400 sites).
LEVEL_WINDOW: int = 512


@dataclass
class Finding:
    """The outcome of one check.

    Attributes
    ----------
    name : str
        'lattice', 'spacing', 'honeycomb' or 'composition'.
    ok : bool
        Whether the image passed.
    message : str
        One sentence for the user (what was measured, what was expected).
    metrics : dict
        The numbers behind it.
    """

    name: str
    ok: bool
    message: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class SublatticeLevels:
    """Median neighbour-corrected amplitudes of the two occupied sublattices and the hollow position.

    Attributes
    ----------
    metal, chalcogen, hollow : float
        Medians over the sites the column step assigned (metal and X2) and the
        hollow positions, in prepared-image units.
    n_sites : int
        Sites measured.
    """

    metal: float
    chalcogen: float
    hollow: float
    n_sites: int

    @property
    def bright_over_dim(self) -> float:
        """Ratio of the brighter to the dimmer sublattice, above the hollow level (inf if the dim one is at it)."""
        hi = max(self.metal, self.chalcogen) - self.hollow
        lo = min(self.metal, self.chalcogen) - self.hollow
        return float(hi / lo) if lo > 0 else float("inf")

    @property
    def hollow_contrast(self) -> float:
        """(dim - hollow) / (bright - hollow): about 0 when the third position is as bright as the dim one."""
        hi = max(self.metal, self.chalcogen) - self.hollow
        lo = min(self.metal, self.chalcogen) - self.hollow
        return float(lo / hi) if hi > 0 else 0.0


def sublattice_levels(image: np.ndarray, sites: Any, nn_px: float) -> SublatticeLevels | None:
    """Measure the metal, X2 and hollow levels on the central part of an image.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    sites : DataFrame
        Site table (``y_px``, ``x_px``, ``sublattice``), as column detection gives it.
    nn_px : float
        Metal to chalcogen distance in pixels.

    Returns
    -------
    SublatticeLevels or None
        None when fewer than 20 metal or X2 sites lie in the window.
    """
    from .cells.column_amplitudes import column_amplitudes
    from .cells.crops import prepare_image

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    side = int(max(LEVEL_WINDOW, 20 * 1.7 * nn_px))  # at least ~400 sites
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    win = img[y0:y0 + side, x0:x0 + side]
    if "phase" in sites and (sites["phase"] == "2H").any():
        sites = sites[sites["phase"] == "2H"]  # the 2H domains: other phases have their own levels
    pos = sites[["y_px", "x_px"]].to_numpy(float) - (y0, x0)
    sub = sites["sublattice"].to_numpy()
    inside = np.all((pos >= nn_px) & (pos <= np.array(win.shape) - 1 - nn_px), axis=1)
    metal, chalc = pos[inside & (sub == "M")], pos[inside & (sub == "X")]
    if min(len(metal), len(chalc)) < 20:
        return None
    # The hollow position beside each metal lies opposite its nearest X2 column.
    dist, idx = cKDTree(chalc).query(metal)
    near = dist < 1.3 * nn_px
    hollow = 2 * metal[near] - chalc[idx[near]]
    hollow = hollow[np.all((hollow >= 0) & (hollow <= np.array(win.shape) - 1), axis=1)]
    if len(hollow) < 20:
        return None
    prepared = prepare_image(win, nn_px)
    amps, _ = column_amplitudes(prepared, np.concatenate([metal, chalc, hollow]), nn_px)
    n_m, n_x = len(metal), len(chalc)
    return SublatticeLevels(float(np.nanmedian(amps[:n_m])), float(np.nanmedian(amps[n_m:n_m + n_x])),
                            float(np.nanmedian(amps[n_m + n_x:])), int(n_m + n_x))


def check_honeycomb(levels: SublatticeLevels | None) -> Finding:
    """Two occupied sublattices and a dark hollow position (2H)."""
    if levels is None:
        return Finding("honeycomb", True, "too few columns to measure the sublattice levels", {})
    contrast = levels.hollow_contrast
    metrics = {"hollow_contrast": contrast, "bright_over_dim": levels.bright_over_dim}
    if contrast < MIN_HOLLOW_CONTRAST:
        return Finding("honeycomb", False, "The third position of the honeycomb is about as bright as the dimmer "
                       f"columns (contrast {contrast:.2f}, a 2H monolayer gives at least {MIN_HOLLOW_CONTRAST}): "
                       "three columns per cell (1T/1T' phase, a bilayer or another structure), not a 2H-MX2 "
                       "monolayer.", metrics)
    return Finding("honeycomb", True, f"2H honeycomb (hollow contrast {contrast:.2f})", metrics)


def ratio_range(material: str | Material) -> tuple[float, float]:
    """Smallest and largest bright/dim column ratio a material can show.

    The union of what Z-contrast exponents in :data:`GAMMA_RANGE` give and what the multislice-calibrated
    column table gives at :data:`~napari_stem_defects.simulate.cross_sections.PLAUSIBLE_SETTINGS` (60-300 kV,
    inner detector angles 45-90 mrad). Alloys are allowed compositions within :data:`ALLOY_SPREAD` of the
    stated one.

    Examples
    --------
    >>> lo, hi = ratio_range("MoS2")
    >>> round(lo, 2), round(hi, 2)
    (1.38, 4.83)
    >>> lo, hi = ratio_range("MoSe2")   # Se2 over Mo: 1.2-1.5 by Z**gamma, up to 2.2 at 60 kV, low angles
    >>> round(lo, 2), round(hi, 2)
    (1.16, 2.2)
    """
    return _ratio_range(*_key(material), True)


def gamma_ratio_range(material: str | Material) -> tuple[float, float]:
    """:func:`ratio_range` by the Z-contrast exponents alone (what most HAADF images at 80-300 kV show).

    Examples
    --------
    >>> [round(v, 2) for v in gamma_ratio_range("MoSe2")]
    [1.22, 1.54]
    """
    return _ratio_range(*_key(material), False)


def _key(material: str | Material) -> tuple[tuple, tuple, bool]:
    mat = parse_material(material)
    return tuple(sorted(mat.metals.items())), tuple(sorted(mat.chalcogens.items())), mat.janus


@lru_cache(maxsize=512)
def _ratio_range(metals: tuple, chalcogens: tuple, janus: bool, table: bool) -> tuple[float, float]:
    lo, hi = np.inf, 0.0
    for parts in itertools.product(_compositions(dict(metals)), _compositions(dict(chalcogens))):
        for r in (*_gamma_ratios(*parts), *(_table_ratios(*parts, janus) if table else ())):
            r = max(r, 1.0 / r)
            lo, hi = min(lo, r), max(hi, r)
    return float(lo), float(hi)


def _gamma_ratios(metals: dict[str, float], chalcs: dict[str, float]) -> list[float]:
    """Metal over X2 intensity at the exponents of :data:`GAMMA_RANGE`."""
    out = []
    for gamma in np.linspace(*GAMMA_RANGE, 23):
        metal = sum(f * ATOMIC_NUMBER[e] ** gamma for e, f in metals.items())
        x2 = 2 * sum(f * ATOMIC_NUMBER[e] ** gamma for e, f in chalcs.items())
        out.append(metal / x2)
    return out


def _table_ratios(metals: dict[str, float], chalcs: dict[str, float], janus: bool) -> list[float]:
    """Metal over X2 intensity by the column table at the plausible settings (none for an element it lacks)."""
    from .simulate.cross_sections import plausible_metal_x2_list

    metals = {e: f for e, f in metals.items() if f > 0}
    chalcs = {e: f for e, f in chalcs.items() if f > 0}
    return plausible_metal_x2_list(Material("composition", metals, chalcs, janus and len(chalcs) == 2))


def _compositions(part: dict[str, float]) -> list[dict[str, float]]:
    """The stated composition, and for two elements the ones ALLOY_SPREAD either side of it."""
    if len(part) != 2:
        return [part]
    (a, fa), (b, _) = part.items()
    out = []
    for f in (fa - ALLOY_SPREAD, fa, fa + ALLOY_SPREAD):
        f = float(np.clip(f, 0.0, 1.0))
        out.append({a: f, b: 1.0 - f})
    return out


def ratio_fits(ratio: float, material: str | Material, table: bool = True) -> bool:
    """Whether a measured bright/dim ratio is one the material can show (with RATIO_TOLERANCE); ``table``
    False: by the Z-contrast exponents alone (:func:`gamma_ratio_range`)."""
    lo, hi = ratio_range(material) if table else gamma_ratio_range(material)
    return lo / (1 + RATIO_TOLERANCE) <= ratio <= hi * (1 + RATIO_TOLERANCE)


def check_composition(levels: SublatticeLevels | None, material: Material) -> Finding:
    """The bright/dim ratio against what the stated composition allows."""
    if levels is None:
        return Finding("composition", True, "too few columns to compare intensities", {})
    ratio = levels.bright_over_dim
    lo, hi = ratio_range(material)
    metrics = {"bright_over_dim": ratio, "expected_min": lo, "expected_max": hi}
    if not ratio_fits(ratio, material):
        how = "more different in brightness" if ratio > hi else "closer in brightness"
        return Finding("composition", False, f"The bright columns are {ratio:.2f} times as bright as the dim ones; "
                       f"{material.name} gives {lo:.2f}-{hi:.2f} (Z-contrast exponent {GAMMA_RANGE[0]}-"
                       f"{GAMMA_RANGE[1]}, or multislice at 60-300 kV): the two sublattices are {how} than "
                       f"{material.name} allows.", metrics)
    if not ratio_fits(ratio, material, table=False):
        g_lo, g_hi = gamma_ratio_range(material)
        metrics["table_only"] = True
        return Finding("composition", True, f"The bright columns are {ratio:.2f} times as bright as the dim ones: "
                       f"{material.name} gives that only as multislice does at low voltage or low detector angles "
                       f"(Z-contrast exponents {GAMMA_RANGE[0]}-{GAMMA_RANGE[1]} give {g_lo:.2f}-{g_hi:.2f}).",
                       metrics)
    return Finding("composition", True, f"column ratio {ratio:.2f} fits {material.name} ({lo:.2f}-{hi:.2f})",
                   metrics)


