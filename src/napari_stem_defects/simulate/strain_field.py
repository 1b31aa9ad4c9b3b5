"""Known displacement fields put into a digital twin's positions: the ground truth of strain mapping.

A field maps the undisplaced (y, x) pixel positions of every site (and the undisplaced metal positions
and classes of every cell, for fields centred on defects) to displacements (dy, dx) in pixels.
:func:`~napari_stem_defects.simulate.twin.simulate_twin` takes one as ``displacement=``; the truth of the
strain at any point then follows from :func:`napari_stem_defects.lattice.evaluate.true_strain` (central
differences of the field).

Strain convention (the same as :mod:`napari_stem_defects.lattice.strain`): x to the right, y down the
image, ``exx, eyy, exy`` the symmetric part of the displacement gradient and ``rotation_deg`` positive
anticlockwise as displayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UniformStrain:
    """A homogeneous deformation about ``centre``: u = (F - I) (p - centre).

    Parameters
    ----------
    exx, eyy, exy : float
        Strain (fraction, e.g. 0.01 for 1 %).
    rotation_deg : float
        Rigid rotation, anticlockwise as displayed.
    centre : (float, float)
        Point (y, x) in pixels that does not move.
    """

    exx: float = 0.0
    eyy: float = 0.0
    exy: float = 0.0
    rotation_deg: float = 0.0
    centre: tuple[float, float] = (0.0, 0.0)

    def gradient_xy(self) -> np.ndarray:
        """Displacement gradient du/dx in (x, y) order (2, 2)."""
        w = np.deg2rad(self.rotation_deg)
        # anticlockwise on screen with y down: u_x = +w y, u_y = -w x (small rotation)
        return np.array([[self.exx, self.exy + w], [self.exy - w, self.eyy]])

    def __call__(self, points: np.ndarray, cells: np.ndarray | None = None,
                 classes: np.ndarray | None = None) -> np.ndarray:
        p = np.asarray(points, float) - np.asarray(self.centre, float)
        g = self.gradient_xy()
        dx = g[0, 0] * p[:, 1] + g[0, 1] * p[:, 0]
        dy = g[1, 0] * p[:, 1] + g[1, 1] * p[:, 0]
        return np.stack([dy, dx], axis=1)


@dataclass(frozen=True)
class StrainGradient:
    """exx growing linearly along x: u_x = g (x - x0)^2 / (2 L), so exx(x) = g (x - x0) / L.

    Parameters
    ----------
    gradient : float
        Change of exx over ``length`` pixels (fraction).
    x0 : float
        Column (px) where exx = 0.
    length : float
        Pixels over which exx changes by ``gradient``.
    """

    gradient: float = 0.01
    x0: float = 0.0
    length: float = 1.0

    def __call__(self, points: np.ndarray, cells: np.ndarray | None = None,
                 classes: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(points, float)[:, 1] - self.x0
        return np.stack([np.zeros_like(x), self.gradient * x**2 / (2 * self.length)], axis=1)


@dataclass(frozen=True)
class PointRelaxation:
    """Radial relaxation around every cell of one class: u_r = A (a / r) exp(-(r / (3 a))^2).

    Parameters
    ----------
    defect_class : str
        Cell class whose metal site is the centre (e.g. 'V_M').
    amplitude_px : float
        A: radial displacement at r = a (negative: towards the defect), in pixels, before the taper.
    a_px : float
        Lattice constant in pixels.
    """

    defect_class: str = "V_M"
    amplitude_px: float = -0.1
    a_px: float = 26.5

    def radial(self, r: np.ndarray) -> np.ndarray:
        """u_r at distances ``r`` (px); 0 at the centre itself."""
        r = np.asarray(r, float)
        safe = np.where(r > 1e-9, r, 1.0)
        return np.where(r > 1e-9, self.amplitude_px * (self.a_px / safe) * np.exp(-(safe / (3 * self.a_px)) ** 2),
                        0.0)

    def __call__(self, points: np.ndarray, cells: np.ndarray | None = None,
                 classes: np.ndarray | None = None) -> np.ndarray:
        p = np.asarray(points, float)
        out = np.zeros_like(p)
        if cells is None or classes is None:
            return out
        for c in np.asarray(cells, float)[np.asarray(classes).astype(str) == self.defect_class]:
            d = p - c
            r = np.hypot(d[:, 0], d[:, 1])
            near = (r < 9 * self.a_px) & (r > 1e-9)
            out[near] += d[near] / r[near, None] * self.radial(r[near])[:, None]
        return out


__all__ = ["PointRelaxation", "StrainGradient", "UniformStrain"]
