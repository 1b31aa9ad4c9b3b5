"""Phase correlation for drift registration: tapers, band-passed spectra, sub-pixel peaks, lattice period, rigid step.

See :mod:`napari_stem_defects.dynamics.registration` for the method. Every
correlation is a cross-correlation of tapered (Hann or Tukey), band-passed
images, its peak located to ``1 / upsample`` px by a matrix-multiply DFT
around the integer maximum (Guizar-Sicairos et al., Opt. Lett. 33, 156 (2008)).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

#: Gaussian low-pass of every correlation (against shot noise), in lattice plane spacings.
LOWPASS_SIGMA = 1.0 / 16.0
#: Plane spacing assumed when the reference shows no clear lattice, in px.
DEFAULT_PERIOD_PX = 16.0


# ----------------------------------------------------------------------------------------------
# Fourier-space helpers


def tukey_taper(n: int, alpha: float = 1.0) -> np.ndarray:
    """Strictly positive Tukey taper of length n (cosine edges over ``alpha / 2`` of it at each end;
    Hann for alpha = 1), symmetric about (n - 1) / 2."""
    u = (np.arange(n) + 1.0) / (n + 1.0)
    edge = np.minimum(u, 1.0 - u) / max(alpha / 2.0, 1e-9)
    return np.where(edge < 1.0, 0.5 - 0.5 * np.cos(np.pi * np.minimum(edge, 1.0)), 1.0).astype(np.float32)


def box_window(shape: tuple[int, int], origin: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Hann taper on a box, zero elsewhere."""
    win = np.zeros(shape, dtype=np.float32)
    (y0, x0), (hy, hx) = origin, size
    win[y0:y0 + hy, x0:x0 + hx] = np.outer(tukey_taper(hy), tukey_taper(hx))
    return win


def bandpass(shape: tuple[int, int], period: float) -> np.ndarray:
    """Band-pass on an rfft2 grid: removes the background (> ~period) and noise (< ~period / 16)."""
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.rfftfreq(shape[1])[None, :]
    k2 = fy**2 + fx**2
    hi, lo = period, period * LOWPASS_SIGMA
    return ((1.0 - np.exp(-2 * np.pi**2 * hi**2 * k2)) * np.exp(-2 * np.pi**2 * lo**2 * k2)).astype(np.float32)


def rfft_weights(w: int) -> np.ndarray:
    """Weight of each rfft column in a full-spectrum sum (Hermitian symmetry)."""
    c = np.full(w // 2 + 1, 2.0)
    c[0] = 1.0
    if w % 2 == 0:
        c[-1] = 1.0
    return c


def band_spectrum(img: np.ndarray, window: np.ndarray, filt: np.ndarray) -> tuple[np.ndarray, float]:
    """Band-passed spectrum of the windowed image(s), and their energies (sum of squares in real space).

    ``img`` is (H, W) or (B, H, W); the window's weighted mean is removed first.
    """
    img = np.asarray(img, dtype=np.float32)
    wsum = window.sum(axis=(-2, -1), keepdims=True)
    mean = (img * window).sum(axis=(-2, -1), keepdims=True) / wsum
    spec = sfft.rfft2((img - mean) * window, workers=-1)
    spec *= filt
    h, w = img.shape[-2:]
    power = ((spec.real**2 + spec.imag**2) * rfft_weights(w).astype(np.float32)).sum(axis=(-2, -1)) / (h * w)
    return spec.astype(np.complex64, copy=False), power.astype(float)


def _dft_region(
    cross: np.ndarray, ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], cw: np.ndarray
) -> np.ndarray:
    """Cross-correlation from its rfft2 spectrum, evaluated at arbitrary lags.

    cross: (B, H, W // 2 + 1); ys: (B, ny); xs: (B, nx) -> (B, ny, nx).
    """
    h, w = shape
    fy = sfft.fftfreq(h)
    fx = sfft.rfftfreq(w)
    ky = np.exp(2j * np.pi * ys[:, :, None] * fy[None, None, :]).astype(np.complex64)
    kx = (cw[None, :, None] * np.exp(2j * np.pi * fx[None, :, None] * xs[:, None, :])).astype(np.complex64)
    return ((ky @ cross) @ kx).real / (h * w)


def find_peak(
    cross: np.ndarray,
    energy: np.ndarray | float,
    shape: tuple[int, int],
    cw: np.ndarray,
    guess: np.ndarray | None,
    radius: float | None,
    upsample: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel maxima of a batch of cross-correlations given as spectra ``F_frame * conj(F_ref)``.

    The lag (dy, dx) of the maximum is where reference content appears in
    the frame. With ``guess`` and ``radius`` only lags within ``radius`` of
    ``guess`` are considered.

    Returns
    -------
    lags : (B, 2), rho : (B,) normalised correlation at the peak,
    at_edge : (B,) True where the integer maximum lies on the search disc's rim.
    """
    h, w = shape
    b = cross.shape[0]
    cc = sfft.irfft2(cross, s=shape, workers=-1)
    at_edge = np.zeros(b, dtype=bool)
    if guess is None:
        flat = cc.reshape(b, -1).argmax(axis=1)
        iy, ix = np.unravel_index(flat, shape)
        pos = np.stack([(iy + h // 2) % h - h // 2, (ix + w // 2) % w - w // 2], axis=1).astype(float)
    else:
        guess = np.asarray(guess, dtype=float).reshape(b, 2)
        r = int(np.ceil(radius))
        off = np.arange(-r, r + 1)
        g = np.rint(guess).astype(np.int64)
        ly = g[:, :1] + off[None, :]
        lx = g[:, 1:] + off[None, :]
        vals = cc[np.arange(b)[:, None, None], (ly % h)[:, :, None], (lx % w)[:, None, :]]
        dist2 = (ly - guess[:, :1])[:, :, None] ** 2 + (lx - guess[:, 1:])[:, None, :] ** 2
        vals = np.where(dist2 <= radius**2, vals, -np.inf)
        k = vals.reshape(b, -1).argmax(axis=1)
        ky, kx = np.unravel_index(k, vals.shape[1:])
        pos = np.stack([ly[np.arange(b), ky], lx[np.arange(b), kx]], axis=1).astype(float)
        at_edge = np.sqrt(dist2[np.arange(b), ky, kx]) > radius - 1.0
    best = cc.reshape(b, -1).max(axis=1) if guess is None else None
    stages = []
    if upsample > 1:
        first = 1.0 / min(upsample, 10)
        stages.append((first, 1.0))
        if upsample > 10:
            stages.append((1.0 / upsample, first))
    for step, half in stages:
        k = np.arange(-round(half / step), round(half / step) + 1) * step
        vals = _dft_region(cross, pos[:, :1] + k, pos[:, 1:] + k, shape, cw)
        j = vals.reshape(b, -1).argmax(axis=1)
        jy, jx = np.unravel_index(j, vals.shape[1:])
        pos = pos + np.stack([k[jy], k[jx]], axis=1)
        best = vals.reshape(b, -1).max(axis=1)
    if best is None:
        best = cc[np.arange(b), pos[:, 0].astype(np.int64) % h, pos[:, 1].astype(np.int64) % w]
    rho = best / np.sqrt(np.maximum(np.asarray(energy, dtype=float), 1e-30))
    return pos, np.asarray(rho, dtype=float).reshape(b), at_edge


# ----------------------------------------------------------------------------------------------
# lattice period


def lattice_period(img: np.ndarray) -> float:
    """Plane spacing (px) of the strongest low-order lattice reflection, from the power spectrum.

    Reflections are local maxima of the power spectrum at least 30 times
    their ring's median; the lowest frequency among those with at least 5 %
    of the strongest one's power gives the spacing.
    """
    h, w = img.shape
    n = min(h, w, 512)
    y0, x0 = (h - n) // 2, (w - n) // 2
    crop = img[y0:y0 + n, x0:x0 + n].astype(np.float64)
    win = np.outer(np.hanning(n), np.hanning(n))
    power = np.abs(np.fft.rfft2((crop - crop.mean()) * win)) ** 2
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    k = np.sqrt(fy**2 + fx**2)
    rbin = np.rint(k * n).astype(np.int64)
    ok = (rbin >= 4) & (k < 0.45)
    nb = rbin.max() + 1
    med = np.zeros(nb)
    for r in np.unique(rbin[ok]):
        med[r] = np.median(power[rbin == r])
    ratio = np.where(ok, power / np.maximum(med[rbin], 1e-30), 0.0)
    spots = ok & (ratio >= 30.0) & (ratio == ndimage.maximum_filter(ratio, size=3))
    if not spots.any():
        return DEFAULT_PERIOD_PX
    strong = spots & (power >= 0.05 * power[spots].max())
    iy, ix = np.unravel_index(np.argmin(np.where(strong, k, np.inf)), k.shape)
    ys = (iy + np.arange(-1, 2)) % n
    xs = np.clip(ix + np.arange(-1, 2), 0, k.shape[1] - 1)
    wts = power[ys[:, None], xs[None, :]]
    ky = (fy[ys, 0][:, None] * wts).sum() / wts.sum()
    kx = (fx[0, xs][None, :] * wts).sum() / wts.sum()
    kmin = np.hypot(ky, kx)
    return float(np.clip(1.0 / kmin, 4.0, min(h, w) / 4.0))


# ----------------------------------------------------------------------------------------------
# rigid step


def rigid_to_reference(
    frame: np.ndarray,
    ref: np.ndarray,
    pred: np.ndarray,
    filt: np.ndarray,
    cw: np.ndarray,
    radius: float,
    upsample: int,
    cache: dict,
) -> tuple[np.ndarray, float]:
    """Shift of a frame against the reference, searched near ``pred``, over their common field of view."""
    h, w = frame.shape
    s = np.rint(pred).astype(int)
    y0, x0 = max(0, -s[0]), max(0, -s[1])
    hy, hx = min(h, h - s[0]) - y0, min(w, w - s[1]) - x0
    if min(hy, hx) < max(16, min(h, w) // 8):
        raise ValueError(
            f"a frame drifted by ({pred[0]:.0f}, {pred[1]:.0f}) px, leaving too little overlap with the reference"
        )
    key = (int(s[0]), int(s[1]))
    if key not in cache:
        cache.clear()
        cache[key] = band_spectrum(ref, box_window((h, w), (y0, x0), (hy, hx)), filt)
    ref_spec, ref_energy = cache[key]
    spec, energy = band_spectrum(frame, box_window((h, w), (y0 + s[0], x0 + s[1]), (hy, hx)), filt)
    lag, rho, _ = find_peak(
        (spec * np.conj(ref_spec))[None], energy * ref_energy, (h, w), cw, pred[None], radius, upsample
    )
    return lag[0], float(rho[0])
