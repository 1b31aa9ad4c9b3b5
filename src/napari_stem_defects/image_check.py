"""Is the image what the user says it is? Cheap checks before any cell is classified.

A user who picks the wrong file, the wrong material or a file with a wrong
pixel size must get a clear message, not thousands of "defects". Four
checks, each a :class:`Finding`:

``lattice`` (before column detection)
    The strongest spots of the power spectrum must belong to one hexagonal
    lattice: the share of their power that the measured hexagon's reciprocal
    lattice explains (:data:`MIN_EXPLAINED_POWER`). A square lattice
    (SrTiO3 along [001]) explains a few per cent.
``spacing`` (calibrated images with a material)
    The lattice constant at the file's pixel size must be the material's
    (within the calibration tolerance).
``honeycomb`` (after column detection)
    Two occupied sublattices and a dark third position (the hollow of 2H):
    the dimmer sublattice must stand above the hollow level.
``composition`` (with a material)
    The ratio of the bright to the dim sublattice's neighbour-corrected
    column amplitudes must be one the stated composition gives for some
    Z-contrast exponent in :data:`GAMMA_RANGE` or through the
    multislice-calibrated column table at a common microscope setting
    (alloys: for compositions within :data:`ALLOY_SPREAD` of the stated one).

:func:`check_image` combines them. A spacing that disagrees while the
intensities agree is a wrong calibration when no other material fits both
spacing and intensities: the lattice's pixel size is adopted, with a warning
(up to :data:`MAX_ADOPTED_ERROR` off). When another material fits both, or
the intensities disagree, the check fails and names what the image looks
like instead.

Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .calibration import LatticeMeasurement, pixel_size_from_lattice
from .lattice_spectrum import strong_spots
from .image_check_sites import (ALLOY_SPREAD, GAMMA_RANGE, Finding, SublatticeLevels, check_composition,
                                check_honeycomb, gamma_ratio_range, ratio_fits, ratio_range, sublattice_levels)
from .materials import KNOWN_MATERIALS, LATTICE_CONSTANT, Material, parse_material

#: Lowest strength of a spectrum spot (log units over the radial background) the lattice check counts.
SPOT_SCORE: float = 1.5
#: Smallest share of the strongest FFT spots' power the hexagonal lattice must explain.
MIN_EXPLAINED_POWER: float = 0.5
#: Largest calibration error adopted from the lattice instead of failing.
MAX_ADOPTED_ERROR: float = 0.25
#: Side of the central window (pixels) whose power spectrum the lattice check reads.
SPECTRUM_WINDOW: int = 1024


@dataclass
class ImageCheck:
    """All findings about one image, and the pixel size the analysis should use.

    Attributes
    ----------
    material : str or None
        The stated material.
    findings : list of Finding
    warnings : list of str
        Things the user must know even though the image passed (an adopted calibration).
    suggestions : list of str
        Materials the image is consistent with, best first (when the stated one fails).
    file_pixel_size, lattice_pixel_size, pixel_size : tuple of float or None
        (y, x) Å per pixel: stored in the file (or typed), implied by the lattice
        for the material, and the one to use.
    pixel_size_source : str
        'file', 'typed', 'lattice' (adopted instead of a wrong stored value) or 'none'
        (uncalibrated: ``lattice_pixel_size`` says what the material's lattice implies).
    forced : bool
        The analysis went on although the check failed.
    """

    material: str | None
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    file_pixel_size: tuple[float, float] | None = None
    lattice_pixel_size: tuple[float, float] | None = None
    pixel_size: tuple[float, float] | None = None
    pixel_size_source: str = "none"
    forced: bool = False

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(f.ok for f in self.findings)

    @property
    def message(self) -> str:
        """The failed checks' messages, then the suggestion (empty when all passed)."""
        lines = [f.message for f in self.findings if not f.ok]
        if lines and self.suggestions:
            lines.append("The image is consistent with: " + ", ".join(self.suggestions[:4]) + ".")
        return " ".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (``image_check`` in ``analysis.json`` and ``summary.json``)."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


class ImageCheckError(ValueError):
    """The image is not the stated material (or not a 2H-MX2 monolayer); holds the :class:`ImageCheck`."""

    def __init__(self, check: ImageCheck) -> None:
        super().__init__(check.message)
        self.check = check


# --- the lattice --------------------------------------------------------------------------------


def check_lattice(image: np.ndarray, lattice: LatticeMeasurement | None,
                  pixel_size: tuple[float, float] | None = None) -> Finding:
    """Whether the strongest spots of the image's spectrum belong to the measured hexagonal lattice.

    Parameters
    ----------
    image : ndarray
        2D image or (t, y, x) stack.
    lattice : LatticeMeasurement or None
        The hexagon the calibration found (None: none was found).
    pixel_size : (float, float), optional
        Å per pixel, to give spacings in Å in the message.

    Returns
    -------
    Finding
        'lattice', with metrics ``explained_power``, ``anisotropy`` and ``symmetry``.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        h, w = arr.shape
        y0, x0 = max(0, (h - SPECTRUM_WINDOW) // 2), max(0, (w - SPECTRUM_WINDOW) // 2)
        arr = arr[y0:y0 + SPECTRUM_WINDOW, x0:x0 + SPECTRUM_WINDOW]
    vectors, power = strong_spots(arr, min_score=SPOT_SCORE)
    symmetry, spacing = describe_spots(vectors, power)
    where = _spacing_text(spacing, pixel_size)
    if lattice is not None and len(vectors) < 2:  # a small or noisy image: nothing speaks against the lattice
        return Finding("lattice", True, "hexagonal lattice (too few strong spots to check its symmetry)",
                       {"explained_power": float("nan"), "symmetry": symmetry})
    if lattice is None or len(vectors) == 0:
        return Finding("lattice", False, "No lattice of atom columns found: the power spectrum shows no hexagon "
                       f"of spots (its strongest spots: {symmetry}{where}). Not a 2H-MX2 monolayer, or too noisy.",
                       {"symmetry": symmetry, "explained_power": 0.0})
    basis = _similar_basis(np.stack([lattice.g1, lattice.g2], axis=1), vectors, power)
    indices = np.linalg.solve(basis, vectors.T).T
    residual = np.linalg.norm(vectors - np.rint(indices) @ basis.T, axis=1) / np.linalg.norm(basis[:, 0])
    explained = float(power[residual < 0.08].sum() / power.sum())
    metrics = {"explained_power": explained, "anisotropy": lattice.anisotropy, "symmetry": symmetry,
               "spacing_px": spacing}
    if explained < MIN_EXPLAINED_POWER:
        return Finding("lattice", False, f"The strongest spots of the power spectrum form a {symmetry}{where}; "
                       f"a hexagonal lattice explains only {100 * explained:.0f} % of their power: "
                       "not a 2H-MX2 monolayer.", metrics)
    return Finding("lattice", True, f"hexagonal lattice ({100 * explained:.0f} % of the spectrum's spot power)",
                   metrics)


def _similar_basis(basis: np.ndarray, vectors: np.ndarray, power: np.ndarray) -> np.ndarray:
    """The hexagonal basis (columns g1, g2) scaled and turned to fit the spots it roughly indexes.

    The lattice found on a small or noisy image can be a few per cent off in
    size and a degree or two in angle; a similarity transform (scale and
    rotation only, so the hexagon stays a hexagon and cannot turn into
    another lattice) fitted to the spots within 0.25 |g1| of its nodes,
    weighted by their power, removes that before the spots are counted.
    """
    nodes = np.rint(np.linalg.solve(basis, vectors.T).T) @ basis.T
    near = (np.linalg.norm(vectors - nodes, axis=1) < 0.25 * np.linalg.norm(basis[:, 0])) & \
        (np.abs(nodes).sum(axis=1) > 0)
    if near.sum() < 2:
        return basis
    a, b, w = nodes[near], vectors[near], power[near]
    za, zb = a[:, 1] + 1j * a[:, 0], b[:, 1] + 1j * b[:, 0]
    factor = np.sum(w * zb * np.conj(za)) / np.sum(w * np.abs(za) ** 2)  # b ~ factor * a, complex least squares
    if not (0.8 < abs(factor) < 1.25):
        return basis
    zg = (basis[1] + 1j * basis[0]) * factor
    return np.stack([zg.imag, zg.real])


def describe_spots(vectors: np.ndarray, power: np.ndarray) -> tuple[str, float | None]:
    """The kind of 2D lattice the strongest spots suggest, and its first-order spacing in pixels.

    The shortest strong spot and its strongest non-collinear partner of similar
    length give the angle: about 60 or 120 degrees is hexagonal, 90 square,
    otherwise oblique or rectangular.

    Examples
    --------
    >>> g = np.array([[0.1, 0.0], [0.0, 0.1], [-0.1, 0.0], [0.0, -0.1], [0.1, 0.1], [0.1, -0.1]])
    >>> describe_spots(g, np.ones(6))
    ('square lattice', 10.0)
    """
    if len(vectors) < 2:
        return "pattern without a lattice", None
    strong = power >= 0.05 * power.max()
    vec = vectors[strong]
    norms = np.linalg.norm(vec, axis=1)
    first = int(np.argmin(norms))
    g = vec[first]
    cosines = vec @ g / (norms * norms[first])
    partner = (np.abs(cosines) < 0.95) & (np.abs(norms / norms[first] - 1) < 0.15)
    spacing = float(1.0 / norms[first])
    if not partner.any():
        return "set of parallel fringes", spacing
    angle = float(np.degrees(np.arccos(np.clip(np.abs(cosines[partner]).min(), 0, 1))))
    if abs(angle - 60) < 6:
        return "hexagonal lattice", spacing
    if abs(angle - 90) < 6:
        return "square lattice", spacing
    return f"oblique lattice ({angle:.0f} degrees)", spacing


def _spacing_text(spacing_px: float | None, pixel_size: tuple[float, float] | None) -> str:
    if spacing_px is None:
        return ""
    if pixel_size is None:
        return f", spacing {spacing_px:.1f} px"
    return f", spacing {spacing_px * float(np.mean(pixel_size)):.2f} Å"


# --- the spacing ---------------------------------------------------------------------------------


def apparent_lattice_constant(lattice: LatticeMeasurement, material: Material,
                              pixel_size: tuple[float, float]) -> float:
    """The lattice constant (Å) the image shows at the given pixel size."""
    implied = np.mean(pixel_size_from_lattice(lattice, material))
    return float(material.a * np.mean(pixel_size) / implied)


def _binary_materials() -> list[str]:
    names = list(KNOWN_MATERIALS)
    names += [f"{m}{x}2" for m, x in LATTICE_CONSTANT if f"{m}{x}2" not in names and m != "Re"]
    return names


# --- everything together -------------------------------------------------------------------------


def check_image(
    image: np.ndarray,
    lattice: LatticeMeasurement | None,
    sites: Any | None,
    nn_px: float | None,
    material: str | Material | None,
    pixel_size: tuple[float, float] | None,
    *,
    pixel_size_source: str = "file",
    tolerance: float = 0.03,
    lattice_finding: Finding | None = None,
    fitted: tuple[np.ndarray, np.ndarray] | None = None,
    microscope: Any = None,
) -> ImageCheck:
    """Run every check that the inputs allow and decide which pixel size to use.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image (first frame of a stack).
    lattice : LatticeMeasurement or None
        Its hexagonal lattice from the FFT (None when none was found).
    sites : DataFrame or None
        The site table of column detection (None: the sublattice checks are skipped).
    nn_px : float or None
        Metal to chalcogen distance in pixels.
    material : str or Material or None
        The stated material (None: only the lattice and honeycomb checks).
    pixel_size : (float, float) or None
        Å per pixel of the file, or typed by the user.
    pixel_size_source : {'file', 'typed'}
        Where ``pixel_size`` came from; a typed value is never replaced by the lattice's.
    tolerance : float
        Relative calibration tolerance.
    lattice_finding : Finding, optional
        The result of :func:`check_lattice` when it was run already.
    fitted : (a1, a2), optional
        Lattice vectors (pixels) fitted to the detected columns: far more precise
        than the FFT's on small images, so the spacing is checked with them.
    microscope : MicroscopeSettings, optional
        The image's beam and detector (file or typed). A column ratio only the multislice table
        explains (low voltage, low angles) gets a warning unless the table at this microscope gives it.

    Returns
    -------
    ImageCheck
    """
    mat = parse_material(material) if material is not None else None
    px = None if pixel_size is None else (float(pixel_size[0]), float(pixel_size[1]))
    if lattice is not None and fitted is not None:
        lattice = replace(lattice, a1=np.asarray(fitted[0], float), a2=np.asarray(fitted[1], float))
    check = ImageCheck(material=None if mat is None else mat.name, file_pixel_size=px, pixel_size=px,
                       pixel_size_source="none" if px is None else pixel_size_source)
    check.findings.append(lattice_finding or check_lattice(image, lattice, px))
    if not check.findings[0].ok or lattice is None:
        return check
    levels = sublattice_levels(image, sites, nn_px) if sites is not None and nn_px else None
    check.findings.append(check_honeycomb(levels))
    if mat is None:
        return check
    check.lattice_pixel_size = tuple(float(v) for v in pixel_size_from_lattice(lattice, mat))
    composition = check_composition(levels, mat)
    check.findings.append(composition)
    apparent = apparent_lattice_constant(lattice, mat, px) if px is not None else None
    if not composition.ok:
        check.suggestions = _consistent_materials(levels, apparent, tolerance)
    elif composition.metrics.get("table_only") and not _microscope_explains(levels, mat, microscope):
        # accepted, but at most microscopes the ratio says another material
        others = [m for m in _consistent_materials(levels, apparent, tolerance, table=False) if m != mat.name]
        check.warnings.append(composition.message + (f" At 80-300 kV and usual HAADF angles it looks like "
                                                     f"{', '.join(others[:3])}: check the material, or give the "
                                                     "microscope settings." if others else ""))
    if px is None:  # nothing to compare: the lattice's value is reported, the image stays uncalibrated
        return check
    error = max(abs(m / f - 1.0) for m, f in zip(check.lattice_pixel_size, px))
    metrics = {"apparent_a_A": apparent, "material_a_A": mat.a, "relative_difference": error,
               "lattice_pixel_size_A": check.lattice_pixel_size}
    if error <= tolerance:
        check.findings.append(Finding("spacing", True, f"lattice constant {apparent:.3f} Å at the file's pixel size "
                                      f"fits {mat.name} ({mat.a:.3f} Å)", metrics))
        return check
    where = "you gave" if pixel_size_source == "typed" else "of the file"
    spacing_text = (f"At the pixel size {where} ({100 * np.mean(px):.2f} pm) the lattice constant is {apparent:.3f} Å, but {mat.name} has "
                    f"{mat.a:.3f} Å ({100 * error:.1f} % off); the {mat.name} lattice implies "
                    f"{100 * np.mean(check.lattice_pixel_size):.2f} pm/px.")
    others = [m for m in _consistent_materials(levels, apparent, tolerance) if m != mat.name]
    if composition.ok and not others and error <= MAX_ADOPTED_ERROR and pixel_size_source != "typed":
        check.findings.append(Finding("spacing", True, spacing_text + " No other material fits: the file's "
                                      "calibration is taken to be wrong and the lattice's is used.", metrics))
        check.warnings.append(spacing_text + " Used the lattice's pixel size instead of the file's "
                              "(pass --pixel-size to set it yourself).")
        check.pixel_size, check.pixel_size_source = check.lattice_pixel_size, "lattice"
        return check
    if others and composition.ok:
        check.suggestions = others
        spacing_text += f" Is this {others[0]}? If the pixel size is wrong instead, pass --pixel-size."
    elif pixel_size_source == "typed":
        spacing_text += " Check the pixel size you gave and the material."
    else:
        spacing_text += " Check the pixel size (pass --pixel-size) and the material."
    check.findings.append(Finding("spacing", False, spacing_text, metrics))
    return check


def check_detection(image: np.ndarray, result: Any, lattice: LatticeMeasurement | None,
                    material: str | Material | None, pixel_size: tuple[float, float] | None,
                    pixel_size_source: str = "file", tolerance: float = 0.03, microscope: Any = None) -> ImageCheck:
    """Every check, on an image whose columns were detected already (the docks' order of work).

    Parameters
    ----------
    image : ndarray, shape (H, W)
    result : ColumnResult
        Its columns (sites, nn distance and the lattice fitted to them).
    lattice : LatticeMeasurement or None
        The FFT lattice the detection used (``DetectionMap.lattice``).
    material, pixel_size, pixel_size_source, tolerance, microscope
        As in :func:`check_image`.
    """
    return check_image(image, lattice, result.sites, result.nn_px, material, pixel_size,
                       pixel_size_source=pixel_size_source, tolerance=tolerance, fitted=(result.a1, result.a2),
                       microscope=microscope)


def _microscope_explains(levels: SublatticeLevels | None, material: Material, microscope: Any) -> bool:
    """Whether the table at the image's known microscope gives its bright/dim ratio (within
    :data:`~napari_stem_defects.simulate.cross_sections.SETTING_RATIO_TOLERANCE`, 20 %)."""
    if levels is None or microscope is None:
        return False
    from .simulate.cross_sections import SETTING_RATIO_TOLERANCE, metal_x2_ratio

    try:
        expected = metal_x2_ratio(material, microscope)
    except (KeyError, ValueError):
        return False
    expected = max(expected, 1.0 / expected) if np.isfinite(expected) and expected > 0 else np.nan
    return bool(np.isfinite(expected)
                and abs(np.log(levels.bright_over_dim / expected)) < np.log1p(SETTING_RATIO_TOLERANCE))


def _consistent_materials(levels: SublatticeLevels | None, apparent_a: float | None, tolerance: float,
                          table: bool = True) -> list[str]:
    """Known materials whose lattice constant (when calibrated) and column ratio fit the image, best first
    (``table`` False: the ratio by the Z-contrast exponents alone)."""
    scored = []
    for name in _binary_materials():
        mat = parse_material(name)
        spacing = 0.0 if apparent_a is None else abs(apparent_a / mat.a - 1.0)
        if spacing > tolerance:
            continue
        if levels is not None:
            if not ratio_fits(levels.bright_over_dim, mat, table):
                continue
            lo, hi = ratio_range(mat) if table else gamma_ratio_range(mat)
            spacing += abs(np.log(levels.bright_over_dim / np.sqrt(lo * hi))) / 10
        scored.append((spacing, name))
    return [name for _, name in sorted(scored)]


__all__ = ["ALLOY_SPREAD", "GAMMA_RANGE", "Finding", "ImageCheck", "ImageCheckError", "SublatticeLevels",
           "check_composition", "check_detection", "check_honeycomb", "check_image", "check_lattice", "describe_spots",
           "gamma_ratio_range", "ratio_fits", "ratio_range", "sublattice_levels"]
