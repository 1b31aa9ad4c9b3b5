"""The phase and domain map of an analysed image: every pixel labelled 2H, 1T, hole, amorphous or masked.

Crystalline pixels take the phase and domain of their nearest lattice site
(a Voronoi partition of the sites, computed as a distance transform of the
rasterised sites, about 0.3 s for 2048^2); holes, amorphous patches and
masked pixels keep their own codes (:data:`~napari_stem_defects.vocabulary.PHASE_CODES`).

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ..vocabulary import PHASE_CODES, PHASE_OF_CODE


def phase_maps(sites: pd.DataFrame, shape: tuple[int, int], regions: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Phase code and domain of every pixel.

    Parameters
    ----------
    sites : DataFrame
        Site table (``y_px``, ``x_px``; ``domain`` and ``phase`` when known, else one 2H domain).
    shape : tuple of int
        Image shape (H, W).
    regions : ndarray of uint8, optional
        ``ColumnResult.regions``: codes of holes, amorphous patches and masked pixels (0 elsewhere).

    Returns
    -------
    phase_map : ndarray of uint8, shape (H, W)
    domain_map : ndarray of int32, shape (H, W)
        Domain id + 1 for crystalline pixels, 0 elsewhere.

    Examples
    --------
    >>> sites = pd.DataFrame({"y_px": [2.0, 2.0], "x_px": [1.0, 8.0], "domain": [0, 1], "phase": ["2H", "1T"]})
    >>> phase, domain = phase_maps(sites, (4, 10))
    >>> phase[0].tolist(), domain[0].tolist()
    ([1, 1, 1, 1, 1, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    """
    h, w = shape
    phase_map = np.zeros((h, w), np.uint8)
    domain_map = np.zeros((h, w), np.int32)
    if len(sites):
        rc = np.clip(np.rint(sites[["y_px", "x_px"]].to_numpy(float)).astype(int), 0, [h - 1, w - 1])
        domain = sites["domain"].to_numpy(int) if "domain" in sites else np.zeros(len(sites), int)
        phase = sites["phase"].astype(str).to_numpy() if "phase" in sites else np.full(len(sites), "2H")
        codes = np.array([PHASE_CODES.get(p, 0) for p in phase], np.uint8)
        seed_domain = np.zeros((h, w), np.int32)
        seed_phase = np.zeros((h, w), np.uint8)
        seed_domain[rc[:, 0], rc[:, 1]] = domain + 1
        seed_phase[rc[:, 0], rc[:, 1]] = codes
        _, (iy, ix) = ndimage.distance_transform_edt(seed_domain == 0, return_indices=True)
        domain_map, phase_map = seed_domain[iy, ix], seed_phase[iy, ix]
    if regions is not None:
        other = np.asarray(regions) > 0
        phase_map = np.where(other, regions, phase_map).astype(np.uint8)
        domain_map = np.where(other, 0, domain_map).astype(np.int32)
    return phase_map, domain_map


def phase_areas(phase_map: np.ndarray, pixel_size: tuple[float, float] | None) -> dict[str, dict[str, float]]:
    """Share of the image and area (nm^2 when calibrated, else NaN) of every phase-map code present.

    Examples
    --------
    >>> phase_areas(np.array([[1, 1], [3, 5]], np.uint8), (10.0, 10.0))["2H"]
    {'fraction': 0.5, 'area_nm2': 2.0}
    """
    counts = np.bincount(np.asarray(phase_map).ravel(), minlength=max(PHASE_OF_CODE) + 1)
    total = max(int(counts.sum()), 1)
    pixel_nm2 = float(pixel_size[0] * pixel_size[1]) / 100.0 if pixel_size is not None else float("nan")
    return {PHASE_OF_CODE[code]: {"fraction": float(n) / total, "area_nm2": float(n) * pixel_nm2}
            for code, n in enumerate(counts) if n and code in PHASE_OF_CODE}
