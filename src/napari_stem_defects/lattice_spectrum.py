"""The power spectrum a lattice is found in: windowed spectra, a whitened spot score, spot finding and refinement.

:mod:`.calibration` measures the hexagonal lattice of an image from these
(:func:`~.calibration.measure_lattice`); :func:`strong_spots` lists the
strongest spots of any lattice (:mod:`.image_check`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .image_values import finite_intensities

#: Minimum strength of a first-order spot over the radial background (log-power units, e-fold).
MIN_SPOT_SCORE = 2.5

_MAX_FFT = 2048


class LatticeNotFoundError(ValueError):
    """No hexagonal lattice could be found in the image's Fourier transform."""


def strong_spots(image: np.ndarray, n_spots: int = 40, min_score: float = MIN_SPOT_SCORE
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The strongest spots of an image's power spectrum, whatever lattice they belong to.

    Parameters
    ----------
    image : ndarray
        2D image or (t, y, x) stack (its central 2048 x 2048 at most).
    n_spots : int
        At most this many spots, strongest first.
    min_score : float
        Lowest strength over the radial background (log units) of a spot.

    Returns
    -------
    vectors : ndarray, shape (K, 2)
        Spot positions (ky, kx) in cycles per pixel (both members of each +-k pair).
    power : ndarray, shape (K,)
        Their power, in the units of the spectrum.
    """
    from skimage.feature import peak_local_max

    power, log_power, score, k_y, k_x, radius = scored_spectrum(image)
    n_y, n_x = power.shape
    valid = (radius > 4.0 / min(n_y, n_x)) & (radius < 0.45)
    peaks = peak_local_max(np.where(valid, score, -np.inf), min_distance=2, threshold_abs=min_score,
                           exclude_border=False)
    if len(peaks) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    # the whitened score's maxima can sit a bin off the power's: take each spot's power maximum nearby
    for n, (py, px) in enumerate(peaks):
        y0, x0 = max(py - 1, 0), max(px - 1, 0)
        win = power[y0:py + 2, x0:px + 2]
        dy, dx = np.unravel_index(np.argmax(win), win.shape)
        peaks[n] = (y0 + dy, x0 + dx)
    peaks = np.unique(peaks, axis=0)
    strength = power[peaks[:, 0], peaks[:, 1]]
    order = np.argsort(-strength)[:n_spots]
    vectors = []
    for py, px in peaks[order]:
        sy, sx = _centroid_offset(log_power, int(py), int(px), half=1)
        vectors.append(((py + sy - n_y // 2) / n_y, (px + sx - n_x // 2) / n_x))
    return np.array(vectors), strength[order]


def power_spectrum(image: np.ndarray) -> np.ndarray:
    """The centred power spectrum the lattice is measured in (Hann window; a stack's frames averaged).

    Element ``[n_y // 2 + i, n_x // 2 + j]`` is the power at ``(i / n_y, j / n_x)`` cycles per
    pixel; very large images are cropped to their central 2048 x 2048 pixels first.
    """
    return _power_spectrum(image)


def scored_spectrum(image: np.ndarray) -> tuple[np.ndarray, ...]:
    """Power spectrum, its log, the whitened score and the frequency grids (ky, kx, |k| in cycles/px)."""
    power = _power_spectrum(image)
    n_y, n_x = power.shape
    ky = (np.arange(n_y) - n_y // 2) / n_y
    kx = (np.arange(n_x) - n_x // 2) / n_x
    k_y, k_x = np.meshgrid(ky, kx, indexing="ij")
    radius = np.hypot(k_y, k_x)
    log_power = np.log(power + 1e-30)
    return power, log_power, _whiten(log_power, radius, min(n_y, n_x)), k_y, k_x, radius


def _power_spectrum(image: np.ndarray) -> np.ndarray:
    """Hann-windowed, centred power spectrum; stacks average over frames."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected a 2D image or (t, y, x) stack, got shape {np.shape(image)}")
    if min(arr.shape[1:]) < 32:
        raise ValueError(f"image {arr.shape[1:]} is too small to measure a lattice (need 32 x 32 or more)")
    # crop the centre of very large images: enough spots, bounded time
    cy, cx = (max(0, (s - _MAX_FFT) // 2) for s in arr.shape[1:])
    arr = arr[:, cy : cy + _MAX_FFT, cx : cx + _MAX_FFT]
    frames = arr[: min(len(arr), 16)].astype(np.float64)
    window = np.outer(np.hanning(frames.shape[1]), np.hanning(frames.shape[2]))
    total = np.zeros(frames.shape[1:])
    for frame in frames:
        frame, _ = finite_intensities(frame, np.float64)  # NaN, 1e300 scales and hot pixels made harmless
        frame = (frame - frame.mean()) * window
        total += np.abs(np.fft.fftshift(np.fft.fft2(frame))) ** 2
    if not np.any(total > 0):
        raise LatticeNotFoundError("the image is flat: no lattice can be measured")
    return total


def _whiten(log_power: np.ndarray, radius: np.ndarray, n: int) -> np.ndarray:
    """Log power minus its median at each radius, lightly smoothed."""
    ring = np.round(radius * n).astype(int)
    order = np.argsort(ring, axis=None)
    flat_ring = ring.ravel()[order]
    flat_val = log_power.ravel()[order]
    bounds = np.searchsorted(flat_ring, np.arange(ring.max() + 2))
    median = np.array([np.median(flat_val[bounds[i] : bounds[i + 1]]) if bounds[i + 1] > bounds[i] else 0.0
                       for i in range(ring.max() + 1)])
    return ndimage.gaussian_filter(log_power - median[ring], 1.0)


def find_hexagons(score, log_power, k_y, k_x, radius, n):
    """Every strong spot with partners at +-60 degrees (or +60 and 180): candidate first orders.

    Returns a list of (g1, g2, mean spot score); raises LatticeNotFoundError if empty.
    """
    from skimage.feature import peak_local_max

    valid = (radius > 4.0 / n) & (radius < 0.45)
    masked = np.where(valid, score, -np.inf)
    peaks = peak_local_max(masked, min_distance=2, threshold_abs=MIN_SPOT_SCORE, exclude_border=False)
    # the strongest spots in absolute power: lattice spots, not ripples of a quiet background
    peaks = peaks[np.argsort(-log_power[peaks[:, 0], peaks[:, 1]])[:60]]
    if len(peaks) < 6:
        raise LatticeNotFoundError(
            "no lattice found: fewer than six spots stand out in the FFT (noise, amorphous area, "
            "or a lattice too fine or coarse for the pixel size)"
        )
    vec = np.stack([k_y[peaks[:, 0], peaks[:, 1]], k_x[peaks[:, 0], peaks[:, 1]]], axis=1)
    strength = score[peaks[:, 0], peaks[:, 1]]
    found = []
    for idx in np.argsort(np.linalg.norm(vec, axis=1)):
        g = vec[idx]
        partners = []
        for turn in (np.pi / 3, -np.pi / 3, 2 * np.pi / 3, np.pi):
            c, s = np.cos(turn), np.sin(turn)
            target = np.array([c * g[0] - s * g[1], s * g[0] + c * g[1]])
            dist = np.linalg.norm(vec - target, axis=1)
            j = int(np.argmin(dist))
            partners.append(j if dist[j] < 0.15 * np.linalg.norm(g) else None)
        if all(p is not None for p in partners[:3]) or (partners[0] is not None and partners[3] is not None):
            g2 = vec[partners[0]]
            used = [idx] + [p for p in partners if p is not None]
            found.append((g, g2, float(np.mean(strength[used]))))
    if not found:
        raise LatticeNotFoundError("no lattice found: the FFT spots do not form a hexagon")
    return found


def weak_first_order(score, g1, g2, shape, min_score=1.0):
    """If (g1, g2) is the (110) hexagon, the (100) spots (|g|/sqrt(3), turned 30 degrees) are weak
    but present (M and X2 columns differ in a TMD); return that finer basis, else None."""
    n_y, n_x = shape
    h1, h2 = (2 * g1 - g2) / 3, (g1 + g2) / 3
    values = []
    for g in (h1, h2, h1 - h2, -h1, -h2, h2 - h1):
        cy, cx = int(round(g[0] * n_y + n_y // 2)), int(round(g[1] * n_x + n_x // 2))
        values.append(score[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].max())
    values = np.array(values)
    if values.mean() > min_score and values.min() > min_score / 2:
        return h1, h2
    return None


def refine_lattice(log_power, score, g1, g2, shape, max_order):
    """Sub-pixel spot positions (log-parabola fit) and a least-squares fit of g1, g2 to all orders.

    Returns refined g1, g2, the number of spots used and their summed power.
    """
    n_y, n_x = shape
    rows, targets, total = [], [], 0.0
    for m in range(-max_order, max_order + 1):
        for k in range(-max_order, max_order + 1):
            if (m, k) == (0, 0):
                continue
            g = m * g1 + k * g2
            if np.abs(g).max() > 0.45:
                continue
            cy, cx = int(round(g[0] * n_y + n_y // 2)), int(round(g[1] * n_x + n_x // 2))
            if not (2 <= cy < n_y - 2 and 2 <= cx < n_x - 2):
                continue
            win = score[cy - 2 : cy + 3, cx - 2 : cx + 3]
            dy, dx = np.unravel_index(np.argmax(win), win.shape)
            py, px = cy + dy - 2, cx + dx - 2
            if score[py, px] < MIN_SPOT_SCORE or not (1 <= py < n_y - 1 and 1 <= px < n_x - 1):
                continue
            sy, sx = _centroid_offset(log_power, py, px)
            rows.append((m, k))
            total += float(np.exp(log_power[py, px]))
            targets.append(((py + sy - n_y // 2) / n_y, (px + sx - n_x // 2) / n_x))
    if len(rows) < 3:
        return g1, g2, len(rows), total
    design = np.array(rows, dtype=float)
    solution, *_ = np.linalg.lstsq(design, np.array(targets), rcond=None)
    return solution[0], solution[1], len(rows), total


def _centroid_offset(log_power: np.ndarray, py: int, px: int, half: int = 2) -> tuple[float, float]:
    """Power-weighted centroid of a spot (above its window's floor) relative to pixel (py, px).

    Unbiased for spots smeared symmetrically (scan jitter), unlike a peak fit.
    """
    y0, x0 = max(py - half, 0), max(px - half, 0)
    win = np.exp(log_power[y0 : py + half + 1, x0 : px + half + 1] - log_power[py, px])
    win = np.clip(win - win.min(), 0.0, None)
    total = win.sum()
    if total <= 0:
        return 0.0, 0.0
    yy, xx = np.mgrid[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]]
    return float((win * yy).sum() / total - py), float((win * xx).sum() / total - px)
