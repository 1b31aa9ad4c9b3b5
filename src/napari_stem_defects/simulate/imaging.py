"""HAADF image formation for digital twins: Z-contrast, probe, scan, background, dose.

Model
-----
Each column j scatters onto the HAADF detector a fraction
``sigma_j * P(r - r_j)`` of the electrons of a probe at r, where
``sigma_j = cross_section * sum(Z_atom ** gamma)`` (in Å^2) and P is the probe
intensity (normalised to 1 over the plane, in Å^-2). The detected fraction
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

import numpy as np
from scipy import fft as sfft

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class ImagingParams:
    """How a twin is imaged. Lengths in Å unless stated; defaults resemble an
    aberration-corrected 60-100 kV HAADF image.

    Parameters
    ----------
    gamma : float
        Z-contrast exponent: column cross-section grows as sum Z**gamma.
    cross_section : float
        HAADF cross-section (Å^2) per unit of Z**gamma.
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
    """

    gamma: float = 1.7
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

    def as_dict(self) -> dict:
        """Plain dict (for JSON metadata)."""
        d = asdict(self)
        d["drift"] = list(self.drift)
        return d


def random_imaging(rng: np.random.Generator, dose_range: tuple[float, float] = (1e3, 1e7)) -> ImagingParams:
    """Draw imaging conditions widely, for training models that must meet real data.

    Randomises the Z exponent, probe size, shape and tail, background level,
    gradient and texture, dose (log-uniform), detector noise, gain, line
    jitter and drift.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    dose_range : tuple of float
        Range of the log-uniform dose in e/Å^2.

    Returns
    -------
    ImagingParams
    """
    lo, hi = np.log10(dose_range[0]), np.log10(dose_range[1])
    return ImagingParams(
        gamma=float(rng.uniform(1.4, 2.0)),
        cross_section=float(3.5e-5 * rng.uniform(0.5, 2.0)),
        probe_fwhm=float(rng.uniform(0.7, 1.5)),
        probe_ellipticity=float(rng.uniform(0.0, 0.25)),
        probe_angle_deg=float(rng.uniform(0, 180)),
        tail_fraction=float(rng.uniform(0.0, 0.35)),
        tail_width=float(rng.uniform(0.8, 4.0)),
        background=float(10 ** rng.uniform(-3.5, -1.8)),
        background_variation=float(rng.uniform(0.0, 0.5)),
        background_length=float(rng.uniform(8.0, 60.0)),
        texture=float(10 ** rng.uniform(-4.5, -2.8)),
        texture_length=float(rng.uniform(0.4, 2.0)),
        dose=float(10 ** rng.uniform(lo, hi)),
        read_noise=float(rng.uniform(0.0, 2.0)),
        gain=float(10 ** rng.uniform(-1, 2)),
        offset=float(rng.uniform(0, 100)),
        line_jitter=float(rng.uniform(0.0, 0.4)),
        drift=(float(rng.normal(0, 0.01)), float(rng.normal(0, 0.01))),
    )


def column_cross_section(slots: np.ndarray, params: ImagingParams) -> np.ndarray:
    """HAADF cross-section (Å^2) of atom columns: ``cross_section * sum(Z ** gamma)`` over each column's atoms.

    The one place a twin's column weights are computed (twins, composite samples,
    image series), so a change of the scattering model is a change here.

    Parameters
    ----------
    slots : ndarray of int, shape (n, k)
        Atomic numbers of the atoms in each of n columns (0 = no atom).
    params : ImagingParams
        Supplies ``cross_section`` and ``gamma``.

    Returns
    -------
    ndarray of float, shape (n,)

    Examples
    --------
    >>> p = ImagingParams(gamma=2.0, cross_section=1.0)
    >>> column_cross_section(np.array([[16, 16], [42, 0], [0, 0]]), p).tolist()
    [512.0, 1764.0, 0.0]
    """
    z = np.asarray(slots, dtype=float).reshape(len(slots), -1)
    return params.cross_section * (z**params.gamma).sum(axis=1)


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
    np.maximum(fraction, 0.0, out=fraction)

    if params.dose is None:
        clean = fraction.astype(np.float32)
        return clean, clean.copy()
    expected = fraction * (params.dose * pixel_size**2)
    counts = rng.poisson(expected).astype(np.float64)
    if params.read_noise > 0:
        counts += rng.normal(0.0, params.read_noise, size=counts.shape)
    image = params.gain * counts + params.offset
    return image.astype(np.float32), expected.astype(np.float32)


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
