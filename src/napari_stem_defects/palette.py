"""How far apart the plugin's colours look, for normal and colour-blind vision (no Qt, no napari).

The species, cell-class, heatmap-family and event colours are chosen so that any two
that can appear together differ by a CIEDE2000 distance of at least
:data:`MIN_DELTA_E` for normal vision and under simulated deuteranopia and
protanopia (Machado, Oliveira and Fernandes 2009, severity 1, applied in linear sRGB);
colours closer than that must differ by symbol or fill instead (empty sites are
hollow rings, adatoms diamonds).

Examples
--------
>>> round(delta_e("#000000", "#FFFFFF"), 1)
100.0
>>> simulate_cvd("#FF0000", "deuteranopia") != simulate_cvd("#FF0000", "protanopia")
True
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import numpy as np

#: Smallest CIEDE2000 distance between two colours that must be told apart.
MIN_DELTA_E = 10.0
#: Visions the colours are checked for.
VISIONS: tuple[str, ...] = ("normal", "deuteranopia", "protanopia")
#: Machado et al. (2009) simulation matrices, severity 1.0, on linear sRGB.
CVD_MATRICES: dict[str, np.ndarray] = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779],
                            [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def hex_rgb(colour: str) -> np.ndarray:
    """``'#RRGGBB'`` as sRGB floats in [0, 1]."""
    c = colour.lstrip("#")
    return np.array([int(c[k:k + 2], 16) / 255 for k in (0, 2, 4)], float)


def _linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def simulate_cvd(colour: str | np.ndarray, vision: str) -> tuple[float, float, float]:
    """The sRGB colour (floats) a person with ``vision`` sees for ``colour``.

    Parameters
    ----------
    colour : str or array
        ``'#RRGGBB'`` or sRGB floats.
    vision : {'normal', 'deuteranopia', 'protanopia', 'tritanopia'}
    """
    rgb = hex_rgb(colour) if isinstance(colour, str) else np.asarray(colour, float)
    if vision == "normal":
        return tuple(float(v) for v in rgb)
    if vision not in CVD_MATRICES:
        raise ValueError(f"unknown vision {vision!r}; expected normal or one of {sorted(CVD_MATRICES)}")
    return tuple(float(v) for v in _gamma(_linear(rgb) @ CVD_MATRICES[vision].T))


def delta_e(a: str | np.ndarray, b: str | np.ndarray, vision: str = "normal") -> float:
    """CIEDE2000 distance of two colours as seen with ``vision``."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab = rgb2lab(np.array([[simulate_cvd(a, vision), simulate_cvd(b, vision)]]))[0]
    return float(deltaE_ciede2000(lab[0], lab[1]))


def closest_pair(colours: Mapping[str, str], names: Iterable[str] | None = None,
                 visions: Iterable[str] = VISIONS) -> tuple[float, str, str, str]:
    """The two colours of ``names`` (all by default) that look most alike, over ``visions``.

    Returns
    -------
    (distance, name_a, name_b, vision)
        ``(inf, '', '', '')`` for fewer than two names.
    """
    names = list(colours if names is None else names)
    best = (float("inf"), "", "", "")
    for a, b in itertools.combinations(names, 2):
        for vision in visions:
            d = delta_e(colours[a], colours[b], vision)
            if d < best[0]:
                best = (d, a, b, vision)
    return best


__all__ = ["CVD_MATRICES", "MIN_DELTA_E", "VISIONS", "closest_pair", "delta_e", "hex_rgb", "simulate_cvd"]
