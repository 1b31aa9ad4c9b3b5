"""Lattice spacing from the FFT, and a check of a file's pixel calibration against it.

A 2H-MX2 monolayer seen along c gives a hexagon of first-order spots at
``1 / d100`` with ``d100 = a * sqrt(3) / 2``. Measuring where the spots fall
(in cycles per pixel) and comparing with the material's known ``d100`` gives
the pixel size the image implies, for y and x separately.

Examples
--------
>>> from napari_stem_defects.simulate import simulate_twin
>>> twin = simulate_twin("MoS2", shape=(256, 256), pixel_size=0.12, seed=0)
>>> report = check_calibration(twin.image, "MoS2", pixel_size=(0.12, 0.12))
>>> bool(report.ok), round(report.measured_pixel_size[1], 3)
(True, 0.12)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .lattice_spectrum import (
    LatticeNotFoundError,
    find_hexagons,
    refine_lattice,
    scored_spectrum,
    weak_first_order,
)
from .materials import Material, parse_material

#: Default tolerance on the relative difference of file and measured pixel size.
DEFAULT_TOLERANCE = 0.03


@dataclass(frozen=True)
class LatticeMeasurement:
    """The hexagonal lattice found in an image's FFT.

    Attributes
    ----------
    g1, g2 : ndarray of shape (2,)
        First-order reciprocal vectors (ky, kx) in cycles per pixel, 60 degrees apart.
    a1, a2 : ndarray of shape (2,)
        Matching real-space lattice vectors (dy, dx) in pixels (|a| = a / pixel size).
    d_spacings_px : ndarray of shape (3,)
        The three first-order plane spacings (1/|g1|, 1/|g2|, 1/|g1 - g2|) in pixels.
    n_spots : int
        Number of spots (all orders) used in the least-squares refinement.
    score : float
        Mean strength of the first-order spots over the radial background
        (natural-log units: 3 means about 20 times the background).
    """

    g1: np.ndarray
    g2: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    d_spacings_px: np.ndarray
    n_spots: int
    score: float

    @property
    def d100_px(self) -> float:
        """Mean first-order plane spacing in pixels."""
        return float(np.mean(self.d_spacings_px))

    @property
    def anisotropy(self) -> float:
        """(max - min) / mean of the three spacings: 0 for a perfect hexagon."""
        d = self.d_spacings_px
        return float(np.ptp(d) / d.mean())


@dataclass(frozen=True)
class CalibrationReport:
    """What the lattice says about a file's pixel calibration.

    Attributes
    ----------
    material : str
        Material the lattice constant came from.
    expected_d100_A : float
        Its first-order spacing in Å.
    measured_pixel_size : tuple of float
        Pixel size (y, x) in Å implied by the lattice.
    file_pixel_size : tuple of float or None
        Pixel size (y, x) in Å stored in the file.
    relative_difference : float or None
        Largest |measured / file - 1| over the two axes.
    tolerance : float
        Relative difference above which the check fails.
    lattice : LatticeMeasurement
        The lattice measured.
    """

    material: str
    expected_d100_A: float
    measured_pixel_size: tuple[float, float]
    file_pixel_size: tuple[float, float] | None
    relative_difference: float | None
    tolerance: float
    lattice: LatticeMeasurement = field(repr=False)

    @property
    def ok(self) -> bool:
        """True when the file's calibration agrees with the lattice within tolerance."""
        return self.relative_difference is not None and self.relative_difference <= self.tolerance

    @property
    def message(self) -> str:
        """One readable sentence for the user."""
        my, mx = (v * 100 for v in self.measured_pixel_size)
        measured = f"{my:.2f} x {mx:.2f} pm/px" if abs(my - mx) > 0.005 * mx else f"{mx:.2f} pm/px"
        head = f"{self.material} lattice (d100 = {self.expected_d100_A:.3f} Å) implies {measured}"
        if self.file_pixel_size is None:
            return f"{head}; the file stores no calibration."
        fy, fx = (v * 100 for v in self.file_pixel_size)
        stored = f"{fy:.2f} x {fx:.2f} pm/px" if abs(fy - fx) > 0.005 * fx else f"{fx:.2f} pm/px"
        diff = 100 * (self.relative_difference or 0.0)
        if self.ok:
            return f"{head}; the file's {stored} agrees ({diff:.1f} % off)."
        return (
            f"{head}, but the file says {stored} ({diff:.1f} % off, more than "
            f"{100 * self.tolerance:.0f} %). Check the material, or adopt the measured value."
        )


def measure_lattice(image: np.ndarray, max_order: int = 3) -> LatticeMeasurement:
    """Find the hexagonal lattice of a 2D image (or the mean spectrum of a stack) in its FFT.

    Parameters
    ----------
    image : ndarray
        2D (y, x) image, or (t, y, x) stack (power spectra are averaged).
    max_order : int
        Highest order m, n of spots m*g1 + n*g2 refined; higher orders sharpen
        the estimate.

    Returns
    -------
    LatticeMeasurement

    Raises
    ------
    LatticeNotFoundError
        If no hexagon of spots stands out of the background (e.g. noise only,
        an amorphous area or a flat image).
    ValueError
        If the image is not 2D/3D, is smaller than 32 x 32, or holds no finite values.
    """
    power, log_power, score, k_y, k_x, radius = scored_spectrum(image)
    n_y, n_x = power.shape
    # Of all hexagons of spots, keep the lattice that explains the most periodic power:
    # the fundamental one explains its harmonics too; artefacts (filter ripples,
    # quantisation) stand out of a smoothed image's background but carry little power.
    best = None
    for g1, g2, first_score in find_hexagons(score, log_power, k_y, k_x, radius, min(n_y, n_x)):
        refined = refine_lattice(log_power, score, g1, g2, (n_y, n_x), max_order)
        if best is None or refined[3] > best[0][3]:
            best = (refined, first_score)
    (g1, g2, n_spots, _), first_score = best
    finer = weak_first_order(score, g1, g2, (n_y, n_x))
    if finer is not None:
        g1, g2, n_spots, _ = refine_lattice(log_power, score, *finer, (n_y, n_x), max_order)
    basis = np.stack([g1, g2])  # rows: reciprocal vectors (ky, kx)
    real = np.linalg.inv(basis).T  # rows: a1, a2 with a_i . g_j = delta_ij
    d = 1.0 / np.array([np.linalg.norm(g1), np.linalg.norm(g2), np.linalg.norm(g1 - g2)])
    return LatticeMeasurement(g1=g1, g2=g2, a1=real[0], a2=real[1], d_spacings_px=d, n_spots=n_spots,
                              score=first_score)


def measure_lattice_near(image: np.ndarray, d100_px: float, tolerance: float = 0.08,
                         min_score: float = 1.0, max_order: int = 3) -> LatticeMeasurement:
    """Find the hexagon of first-order spots near a known spacing (e.g. from material and pixel size).

    Knowing the ring to look on makes the search far more sensitive than
    :func:`measure_lattice`, which must find the spots anywhere: it finds the
    lattice of low-dose images where the free search gives up.

    Parameters
    ----------
    image : ndarray
        2D image or (t, y, x) stack.
    d100_px : float
        Expected first-order plane spacing in pixels.
    tolerance : float
        Relative range of spacings searched around ``d100_px``.
    min_score : float
        Lowest mean strength of the six spots over the radial background (log units).
    max_order : int
        Highest order used in the least-squares refinement.

    Raises
    ------
    LatticeNotFoundError
        If no hexagon near that spacing stands out.
    """
    power, log_power, score, _, _, _ = scored_spectrum(image)
    n_y, n_x = power.shape
    k0 = 1.0 / float(d100_px)
    relative = np.linspace(1 - tolerance, 1 + tolerance, 41)
    angles = np.deg2rad(np.arange(0.0, 60.0, 0.25))
    turns = np.deg2rad(60.0 * np.arange(6))
    smooth = ndimage.maximum_filter(score, size=3)
    best = None
    # the first-order (100) ring, and the (110) ring sqrt(3) farther out and turned 30 degrees: where
    # metal and X2 columns scatter alike the (100) spots are faint and the (110) ones carry the lattice
    for ring, turn in ((1.0, 0.0), (np.sqrt(3.0), np.pi / 6)):
        rr, aa, tt = np.meshgrid(k0 * ring * relative, angles, turns, indexing="ij")
        rows = rr * np.sin(aa + tt) * n_y + n_y // 2
        cols = rr * np.cos(aa + tt) * n_x + n_x // 2
        values = ndimage.map_coordinates(smooth, [rows.ravel(), cols.ravel()], order=1, mode="nearest")
        hexes = values.reshape(rr.shape).mean(axis=-1)
        i, j = np.unravel_index(np.argmax(hexes), hexes.shape)
        if best is None or hexes[i, j] > best[0]:
            best = (float(hexes[i, j]), k0 * relative[i], angles[j] - turn)
    top, radius, angle = best
    if top < min_score:
        raise LatticeNotFoundError(
            f"no lattice found near the expected spacing of {d100_px:.1f} px (check the material and pixel size)")
    hexes = np.array([[top]])
    i = j = 0
    radii = np.array([radius])
    g1 = radius * np.array([np.sin(angle), np.cos(angle)])
    g2 = radius * np.array([np.sin(angle + np.pi / 3), np.cos(angle + np.pi / 3)])
    r1, r2, n_spots, _ = refine_lattice(log_power, score, g1, g2, (n_y, n_x), max_order)
    if n_spots >= 6 and abs(np.linalg.norm(r1) / radii[i] - 1) < tolerance:
        g1, g2 = r1, r2
    basis = np.stack([g1, g2])
    real = np.linalg.inv(basis).T
    d = 1.0 / np.array([np.linalg.norm(g1), np.linalg.norm(g2), np.linalg.norm(g1 - g2)])
    return LatticeMeasurement(g1=g1, g2=g2, a1=real[0], a2=real[1], d_spacings_px=d, n_spots=int(n_spots),
                              score=float(hexes[i, j]))


def pixel_size_from_lattice(lattice: LatticeMeasurement, material: str | Material) -> tuple[float, float]:
    """Pixel size (y, x) in Å that makes the measured lattice the material's perfect hexagon.

    Solves ``py^2 vy^2 + px^2 vx^2 = a^2`` in the least-squares sense for the
    three nearest-neighbour metal vectors v = a1, a2 and a1 -+ a2 (in pixels), so
    non-square pixels are measured; falls back to one isotropic value when
    the system is ill-conditioned (lattice vectors near 45 degrees).
    """
    a = parse_material(material).a
    a1, a2 = lattice.a1, lattice.a2
    third = a1 - a2 if np.linalg.norm(a1 - a2) < np.linalg.norm(a1 + a2) else a1 + a2
    vecs = np.stack([a1, a2, third])
    design = vecs**2  # columns vy^2, vx^2
    iso = a / np.mean(np.linalg.norm(vecs, axis=1))
    if np.linalg.cond(design[:, :2]) > 50:
        return (iso, iso)
    sq, *_ = np.linalg.lstsq(design, np.full(3, a**2), rcond=None)
    if np.any(sq <= 0):
        return (iso, iso)
    py, px = np.sqrt(sq)
    return (float(py), float(px))


def check_calibration(
    image: np.ndarray,
    material: str | Material,
    pixel_size: tuple[float, float] | float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> CalibrationReport:
    """Compare a file's pixel size with the one the material's lattice implies.

    Parameters
    ----------
    image : ndarray
        2D image or (t, y, x) stack.
    material : str or Material
        Material, e.g. ``"MoS2"``, ``"WSe2"``, ``"WSSe"``.
    pixel_size : float or tuple of float, optional
        Pixel size (y, x) in Å stored in the file; None if uncalibrated.
    tolerance : float
        Relative difference above which the report is not ``ok``.

    Returns
    -------
    CalibrationReport
    """
    mat = parse_material(material)
    lattice = measure_lattice(image)
    measured = pixel_size_from_lattice(lattice, mat)
    stored: tuple[float, float] | None
    if pixel_size is None:
        stored, diff = None, None
    else:
        stored = (float(pixel_size), float(pixel_size)) if np.isscalar(pixel_size) else tuple(map(float, pixel_size))
        diff = float(max(abs(m / s - 1.0) for m, s in zip(measured, stored)))
    return CalibrationReport(
        material=mat.name,
        expected_d100_A=mat.d100,
        measured_pixel_size=measured,
        file_pixel_size=stored,
        relative_difference=diff,
        tolerance=tolerance,
        lattice=lattice,
    )


def lattice_spots(lattice: LatticeMeasurement, max_order: int = 2) -> np.ndarray:
    """Where the lattice puts its spots: ``m g1 + k g2`` for ``|m|, |k| <= max_order`` inside Nyquist.

    Returns
    -------
    ndarray of shape (N, 3)
        ``ky, kx`` in cycles per pixel and the order ``max(|m|, |k|, |m + k|)`` (1 for the first hexagon).

    Examples
    --------
    >>> from napari_stem_defects.simulate import simulate_twin
    >>> spots = lattice_spots(measure_lattice(simulate_twin("MoS2", shape=(256, 256), seed=0).image), 1)
    >>> len(spots), sorted(set(spots[:, 2].tolist()))
    (6, [1.0])
    """
    out = []
    for m in range(-max_order, max_order + 1):
        for k in range(-max_order, max_order + 1):
            order = max(abs(m), abs(k), abs(m + k))
            if order == 0 or order > max_order:
                continue
            g = m * np.asarray(lattice.g1, float) + k * np.asarray(lattice.g2, float)
            if np.abs(g).max() < 0.5:
                out.append((g[0], g[1], float(order)))
    return np.array(out, float).reshape(-1, 3)


