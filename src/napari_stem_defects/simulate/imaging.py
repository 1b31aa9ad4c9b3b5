"""HAADF image formation for digital twins: Z-contrast, probe, scan, background, dose.

Model
-----
Each column j scatters onto the HAADF detector a fraction
``sigma_j * P(r - r_j)`` of the electrons of a probe at r, where sigma_j (in Å^2)
is the column's integrated cross-section and P is the probe intensity
(normalised to 1 over the plane, in Å^-2). By default sigma_j comes from the
table calibrated to abTEM multislice (:mod:`.cross_sections`) at the imaging's
microscope settings (beam energy, convergence, detector angles), times
``cross_section_scale`` and an optional per-content factor; with ``gamma`` given
it is the older ``cross_section * sum(Z_atom ** gamma)``. The detected fraction
per pixel is the sum over columns plus a background (amorphous support,
contamination). A pixel receives ``dose * pixel_area`` electrons, so the
expected count is ``lambda = dose * pixel_area * fraction``; the recorded
image is Poisson(lambda) plus Gaussian read noise, times a gain, plus an
offset.

The probe is an (optionally elliptical) Gaussian core plus a heavy tail
(the 2D Poisson kernel, whose Fourier transform is ``exp(-2 pi w |k|)``),
applied in Fourier space on a padded canvas, so any probe shape costs one
FFT. Columns are splatted bilinearly, on a finer grid when the probe is
narrow in pixels, so positions are exact to the centroid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft

from .microscope import MicroscopeSettings

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class ImagingParams:
    """How a twin is imaged. Lengths in Å unless stated; defaults resemble an
    aberration-corrected 60-100 kV HAADF image.

    Parameters
    ----------
    gamma : float or None
        A number (default 1.7): the Z-contrast model, cross-section
        ``cross_section * sum(Z ** gamma)`` (what the shipped models were trained on).
        None: column cross-sections from the multislice-calibrated table at
        ``microscope`` (:func:`~.imaging_conditions.calibrated_imaging` sets it up with the table's probe).
    cross_section : float
        HAADF cross-section (Å^2) per unit of Z**gamma (the Z-contrast model only).
    probe_fwhm : float
        Full width at half maximum of the probe core.
    probe_ellipticity : float
        Relative difference of the core's long and short axes (astigmatism).
    probe_angle_deg : float
        Orientation of the long axis.
    tail_fraction : float
        Share of probe intensity in the heavy tail.
    tail_width : float
        Half width of the tail (2D Poisson kernel parameter).
    background : float
        Mean detected fraction per pixel from the support, per unit dose.
    background_variation : float
        Relative standard deviation of the smooth background.
    background_length : float
        Correlation length of the smooth background.
    texture : float
        Standard deviation of fine amorphous texture (detected fraction).
    texture_length : float
        Correlation length of the texture.
    dose : float or None
        Electron dose in e/Å^2; None gives the noise-free detected fraction.
    read_noise : float
        Standard deviation of Gaussian detector noise, in counts.
    gain, offset : float
        Recorded value = gain * counts + offset.
    line_jitter : float
        Standard deviation of the per-scan-line horizontal shift, in pixels.
    drift : tuple of float
        (stretch of y per pixel, horizontal shift in pixels per row): a linear
        drift during the slow scan. Column positions in the ground truth
        include it.
    microscope : MicroscopeSettings
        Beam energy, convergence, detector angles, source size: the setting the
        table's cross-sections are taken at (and the multislice engine simulates).
        The probe fields above stay as given; :func:`~.imaging_conditions.calibrated_imaging` sets them
        from the table too.
    cross_section_scale : float
        Factor on every table cross-section (detector efficiency); table model only.
    content_factors : tuple of (str, float)
        Extra factor per column content ('Mo', 'S2', ...), for training twins
        randomised around the table; contents not listed get 1, and a mixed pair in
        either order ('SSe', 'SeS') takes the factor of its site-table name.
    """

    gamma: float | None = 1.7
    cross_section: float = 3.5e-5
    probe_fwhm: float = 1.0
    probe_ellipticity: float = 0.0
    probe_angle_deg: float = 0.0
    tail_fraction: float = 0.1
    tail_width: float = 1.5
    background: float = 3e-3
    background_variation: float = 0.2
    background_length: float = 25.0
    texture: float = 3e-4
    texture_length: float = 0.8
    dose: float | None = 1e5
    read_noise: float = 0.0
    gain: float = 1.0
    offset: float = 0.0
    line_jitter: float = 0.0
    drift: tuple[float, float] = field(default=(0.0, 0.0))
    microscope: MicroscopeSettings = field(default_factory=MicroscopeSettings)
    cross_section_scale: float = 1.0
    content_factors: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        # accept the plain forms of as_dict() (JSON round trips)
        if isinstance(self.microscope, dict):
            object.__setattr__(self, "microscope", MicroscopeSettings.from_dict(self.microscope))
        if not isinstance(self.microscope, MicroscopeSettings):
            raise TypeError("microscope must be a MicroscopeSettings")
        object.__setattr__(self, "drift", tuple(float(v) for v in self.drift))
        factors = self.content_factors.items() if isinstance(self.content_factors, dict) else self.content_factors
        object.__setattr__(self, "content_factors", tuple((str(c), float(f)) for c, f in factors))

    @property
    def column_model(self) -> str:
        """'table' (calibrated cross-sections) or 'zpower' (``cross_section * sum Z**gamma``)."""
        return "table" if self.gamma is None else "zpower"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON metadata); ``ImagingParams(**d)`` reads it back."""
        d = asdict(self)
        d["drift"] = list(self.drift)
        d["content_factors"] = [list(pair) for pair in self.content_factors]
        return d


def content_cross_section(content: str, params: ImagingParams) -> float:
    """Cross-section (Å^2) of one column content ('Mo', 'S2', '' ...) under ``params``.

    The table model: ``cross_section_scale * factor(content) *``
    :func:`.cross_sections.column_cross_section`;
    the Z-contrast model: ``cross_section * sum(Z ** gamma)``.
    """
    from ..materials import ATOMIC_NUMBER
    from .cross_sections import canonical_content
    from .cross_sections import column_cross_section as table_cross_section
    from .structure import column_elements

    if params.gamma is not None:
        return float(params.cross_section * sum(ATOMIC_NUMBER[e] ** params.gamma for e in column_elements(content)))
    if not content:
        return 0.0
    factors = dict(params.content_factors)
    factor = factors.get(content, factors.get(canonical_content(content), 1.0))  # a pair's orders share one
    return float(params.cross_section_scale * factor * table_cross_section(content, params.microscope))


def column_cross_section(slots: np.ndarray, params: ImagingParams) -> np.ndarray:
    """HAADF cross-section (Å^2) of atom columns from their atoms (an (n, k) array of atomic numbers, 0 = none).

    The one place a twin's column weights are computed (twins, multislice twins' truth, image
    series), so a change of the scattering model is a change here: the calibrated table
    (:func:`content_cross_section`) or, with ``gamma``, ``cross_section * sum(Z ** gamma)``.

    Each distinct content is looked up once (:func:`content_cross_section`), so this costs
    a few milliseconds for a million columns.

    Examples
    --------
    >>> p = ImagingParams(gamma=2.0, cross_section=1.0)
    >>> column_cross_section(np.array([[16, 16], [42, 0], [0, 0]]), p).tolist()
    [512.0, 1764.0, 0.0]
    >>> table = column_cross_section(np.array([[16, 16], [42, 0], [0, 0]]), ImagingParams())
    >>> bool(table[1] > table[0] > table[2] == 0.0)
    True
    """
    slots = np.asarray(slots).reshape(len(slots), -1)
    if params.gamma is not None:
        return params.cross_section * (slots.astype(float) ** params.gamma).sum(axis=1)
    from .cross_sections import contents_of_slots

    if len(slots) == 0:
        return np.zeros(0)
    inverse, contents = contents_of_slots(slots)
    values = np.array([content_cross_section(c, params) for c in contents])
    return values[inverse]


def apply_drift(positions: np.ndarray, drift: tuple[float, float]) -> np.ndarray:
    """Move column positions (y, x) as a linear slow-scan drift does.

    Row y is scanned at time proportional to y, so y stretches by
    ``1 + drift[0]`` and x shifts by ``drift[1] * y``.
    """
    p = np.array(positions, dtype=float, copy=True)
    p[:, 1] += drift[1] * p[:, 0]
    p[:, 0] *= 1.0 + drift[0]
    return p


def render(
    positions: np.ndarray,
    cross_sections: np.ndarray,
    shape: tuple[int, int],
    pixel_size: float,
    params: ImagingParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Form a HAADF image of point scatterers.

    Parameters
    ----------
    positions : ndarray of shape (n, 2)
        Column positions (y, x) in pixels (may lie outside the image).
    cross_sections : ndarray of shape (n,)
        HAADF cross-section of each column in Å^2.
    shape : tuple of int
        Image shape (H, W).
    pixel_size : float
        Pixel size in Å.
    params : ImagingParams
        Probe, background, scan and noise settings.
    rng : numpy.random.Generator
        Source of randomness (background, jitter, noise).

    Returns
    -------
    image : ndarray of float32, shape (H, W)
        The recorded image (noise-free detected fraction if ``dose`` is None).
    expected : ndarray of float32, shape (H, W)
        Expected counts before noise (or the detected fraction if ``dose`` is None).
    """
    h, w = shape
    sigma_px = params.probe_fwhm * _FWHM_TO_SIGMA / pixel_size
    sub = 1 if sigma_px >= 1.5 else int(np.ceil(1.5 / sigma_px))
    reach = 4 * max(sigma_px * (1 + params.probe_ellipticity), params.tail_width / pixel_size * 2)
    pad = int(np.ceil(min(reach, 0.5 * max(h, w)))) + 2
    ch, cw = (h + 2 * pad) * sub, (w + 2 * pad) * sub

    canvas = _splat(positions, cross_sections, pad, sub, (ch, cw))
    fine = pixel_size / sub
    kernel = _probe_transfer((ch, cw), fine, params)
    fraction = sfft.irfft2(sfft.rfft2(canvas, workers=-1) * kernel, s=(ch, cw), workers=-1) / fine**2
    if params.line_jitter > 0:
        shifts = np.repeat(rng.normal(0.0, params.line_jitter, size=h + 2 * pad), sub) * sub
        fraction = _shift_rows(fraction, shifts)
    fraction = fraction.reshape(h + 2 * pad, sub, w + 2 * pad, sub).mean(axis=(1, 3))
    fraction = fraction[pad : pad + h, pad : pad + w]
    fraction += _background((h, w), pixel_size, params, rng)
    return record(fraction, pixel_size, params, rng)


def record(
    fraction: np.ndarray, pixel_size: float, params: ImagingParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Record a detected-fraction image at the dose: Poisson counts, read noise, gain and offset.

    ``counts ~ Poisson(dose * pixel_area * fraction)``; the recorded value is
    ``gain * (counts + read noise) + offset``. Shared by the fast and the multislice twins.

    Parameters
    ----------
    fraction : ndarray
        Detected fraction of the incident beam per pixel (background included).
    pixel_size : float
        Å per pixel.
    params : ImagingParams
        ``dose`` (None: return the noise-free fraction), ``read_noise``, ``gain``, ``offset``.
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    image, expected : ndarray of float32
        The recorded image and the expected counts (both the fraction when ``dose`` is None).
    """
    fraction = np.maximum(np.asarray(fraction, dtype=np.float64), 0.0)
    if params.dose is None:
        clean = fraction.astype(np.float32)
        return clean, clean.copy()
    expected = fraction * (params.dose * pixel_size**2)
    counts = rng.poisson(expected).astype(np.float64)
    if params.read_noise > 0:
        counts += rng.normal(0.0, params.read_noise, size=counts.shape)
    image = params.gain * counts + params.offset
    return image.astype(np.float32), expected.astype(np.float32)


def periodic_fraction(
    positions_A: np.ndarray,
    cross_sections: np.ndarray,
    extent_A: tuple[float, float],
    shape: tuple[int, int],
    params: ImagingParams,
) -> np.ndarray:
    """The fast model's detected fraction for a periodic arrangement of columns (one period).

    The same probe as :func:`render` (elliptical Gaussian core plus Poisson-kernel tail),
    summed exactly over all periodic images in Fourier space; sample (k, l) lies at
    ``(k * extent_y / rows, l * extent_x / cols)`` Å. Used to compare with periodic
    multislice images.
    """
    ny, nx = shape
    ky = np.fft.fftfreq(ny, d=extent_A[0] / ny)[:, None]
    kx = np.fft.fftfreq(nx, d=extent_A[1] / nx)[None, :]
    sigma = params.probe_fwhm * _FWHM_TO_SIGMA
    e = params.probe_ellipticity
    t = np.deg2rad(params.probe_angle_deg)
    k_long = kx * np.cos(t) - ky * np.sin(t)
    k_short = kx * np.sin(t) + ky * np.cos(t)
    core = np.exp(-2 * np.pi**2 * ((sigma * (1 + e / 2) * k_long) ** 2 + (sigma * (1 - e / 2) * k_short) ** 2))
    tail = np.exp(-2 * np.pi * params.tail_width * np.hypot(kx, ky))
    transfer = (1 - params.tail_fraction) * core + params.tail_fraction * tail
    pos = np.asarray(positions_A, dtype=float)
    phase = np.exp(-2j * np.pi * (ky[..., None] * pos[:, 0] + kx[..., None] * pos[:, 1]))
    structure = phase @ np.asarray(cross_sections, dtype=float)
    area = extent_A[0] * extent_A[1]
    return np.fft.ifft2(structure * transfer).real * (ny * nx) / area


def _splat(positions: np.ndarray, weights: np.ndarray, pad: int, sub: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear deposit of weights on a padded, ``sub``-times finer canvas."""
    ch, cw = shape
    u = (np.asarray(positions, dtype=float) + pad + 0.5) * sub - 0.5
    base = np.floor(u).astype(np.int64)
    frac = u - base
    out = np.zeros(ch * cw)
    for dy in (0, 1):
        wy = frac[:, 0] if dy else 1 - frac[:, 0]
        for dx in (0, 1):
            wx = frac[:, 1] if dx else 1 - frac[:, 1]
            yy, xx = base[:, 0] + dy, base[:, 1] + dx
            ok = (yy >= 0) & (yy < ch) & (xx >= 0) & (xx < cw)
            out += np.bincount(yy[ok] * cw + xx[ok], weights=(weights * wy * wx)[ok], minlength=ch * cw)
    return out.reshape(ch, cw)


def _probe_transfer(shape: tuple[int, int], fine: float, params: ImagingParams) -> np.ndarray:
    """Fourier transform of the probe intensity (sums to 1) on an rfft2 grid of ``shape``."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    sigma = params.probe_fwhm * _FWHM_TO_SIGMA / fine
    e = params.probe_ellipticity
    s_long, s_short = sigma * (1 + e / 2), sigma * (1 - e / 2)
    t = np.deg2rad(params.probe_angle_deg)
    # rotate frequencies into the probe's axes (long axis at angle t from x, y down)
    k_long = kx * np.cos(t) - ky * np.sin(t)
    k_short = kx * np.sin(t) + ky * np.cos(t)
    core = np.exp(-2 * np.pi**2 * ((s_long * k_long) ** 2 + (s_short * k_short) ** 2))
    tail = np.exp(-2 * np.pi * (params.tail_width / fine) * np.hypot(kx, ky))
    return (1 - params.tail_fraction) * core + params.tail_fraction * tail


def _shift_rows(image: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift each row right by ``shifts[row]`` pixels (sub-pixel, Fourier)."""
    k = np.fft.rfftfreq(image.shape[1])[None, :]
    spec = sfft.rfft(image, axis=1, workers=-1) * np.exp(-2j * np.pi * k * shifts[:, None])
    return sfft.irfft(spec, n=image.shape[1], axis=1, workers=-1)


def _background(shape: tuple[int, int], pixel_size: float, params: ImagingParams, rng: np.random.Generator) -> np.ndarray:
    """Smooth support background plus fine amorphous texture, as detected fraction."""
    out = np.full(shape, params.background, dtype=float)
    for amplitude, length in (
        (params.background * params.background_variation, params.background_length),
        (params.texture, params.texture_length),
    ):
        if amplitude > 0:
            out += amplitude * _correlated_noise(shape, length / pixel_size, rng)
    return out


def _correlated_noise(shape: tuple[int, int], length_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean Gaussian random field of unit standard deviation, correlation length ``length_px``.

    A length far beyond the image gives a smooth gradient across it.
    """
    white = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    transfer = np.exp(-2 * np.pi**2 * length_px**2 * (kx**2 + ky**2))
    transfer[0, 0] = 0.0  # zero mean: the mean level is `background`
    field_ = sfft.irfft2(sfft.rfft2(white, workers=-1) * transfer, s=shape, workers=-1)
    std = field_.std()
    return field_ / std if std > 0 else field_
