"""Geometry of a 2H-MX2 monolayer seen along c: a honeycomb of M and X2 columns.

Conventions: positions are (y, x) = (row, col) in pixels with pixel centres on
integers; the field of view of an image of shape (H, W) spans
[-0.5, H - 0.5] x [-0.5, W - 0.5].

Unit cell (i, j) holds the metal site at ``origin + i*a1 + j*a2`` and its
partner X2 column at that position plus ``(a1 + a2) / 3`` (the basis follows
:mod:`napari_stem_defects.cell_convention`); the hollow
(interstitial) site of the cell is at ``+ 2 (a1 + a2) / 3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cell_convention import normalise_rotation


@dataclass(frozen=True)
class HoneycombLattice:
    """A 2H honeycomb in pixel coordinates.

    Parameters
    ----------
    a1, a2 : ndarray of shape (2,)
        Lattice basis vectors as (dy, dx) in pixels, 60 degrees apart.
    origin : ndarray of shape (2,)
        Position (y, x) of the metal site of cell (0, 0), in pixels.
    """

    a1: np.ndarray
    a2: np.ndarray
    origin: np.ndarray

    @classmethod
    def from_constant(
        cls,
        a: float,
        pixel_size: float,
        rotation_deg: float = 0.0,
        origin: tuple[float, float] = (0.0, 0.0),
    ) -> HoneycombLattice:
        """Build the lattice of constant ``a`` (Å) on pixels of ``pixel_size`` (Å).

        ``rotation_deg`` turns the lattice anticlockwise as displayed (y down).
        The basis is chosen among the three equivalent ones (120 degrees apart)
        so that a cell's X2 column, at ``+(a1 + a2) / 3``, follows the cell
        convention (:mod:`napari_stem_defects.cell_convention`).
        """
        if a <= 0 or pixel_size <= 0:
            raise ValueError("lattice constant and pixel size must be positive")
        t = np.deg2rad(normalise_rotation(rotation_deg))
        length = a / pixel_size
        # (dy, dx); y points down in an image, so anticlockwise on screen is -angle in y.
        a1 = length * np.array([-np.sin(t), np.cos(t)])
        a2 = length * np.array([-np.sin(t + np.pi / 3), np.cos(t + np.pi / 3)])
        return cls(a1=a1, a2=a2, origin=np.asarray(origin, dtype=float))

    @property
    def basis(self) -> np.ndarray:
        """Matrix whose columns are a1 and a2 (shape (2, 2))."""
        return np.stack([self.a1, self.a2], axis=1)

    @property
    def x_offset(self) -> np.ndarray:
        """Vector from a metal site to the X2 column of its cell."""
        return (self.a1 + self.a2) / 3.0

    @property
    def hollow_offset(self) -> np.ndarray:
        """Vector from a metal site to the hollow (interstitial) site of its cell."""
        return 2.0 * (self.a1 + self.a2) / 3.0

    def cell_indices(self, shape: tuple[int, int], margin: float = 0.0) -> np.ndarray:
        """Integer (i, j) of every cell with any site within the field of view plus ``margin`` px.

        Returns
        -------
        ndarray of shape (n, 2), int
        """
        h, w = shape
        corners = np.array(
            [[-0.5 - margin, -0.5 - margin], [-0.5 - margin, w - 0.5 + margin],
             [h - 0.5 + margin, -0.5 - margin], [h - 0.5 + margin, w - 0.5 + margin]]
        )
        ij = np.linalg.solve(self.basis, (corners - self.origin).T).T
        lo = np.floor(ij.min(axis=0)).astype(int) - 1
        hi = np.ceil(ij.max(axis=0)).astype(int) + 1
        ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        ij = np.stack([ii.ravel(), jj.ravel()], axis=1)
        metal = self.metal_positions(ij)
        keep = np.zeros(len(ij), dtype=bool)
        for offset in (np.zeros(2), self.x_offset, self.hollow_offset):
            keep |= inside(metal + offset, shape, margin)
        return ij[keep]

    def metal_positions(self, ij: np.ndarray) -> np.ndarray:
        """(y, x) of the metal sites of cells ``ij`` (shape (n, 2))."""
        ij = np.asarray(ij, dtype=float)
        return self.origin + ij @ self.basis.T


def inside(points: np.ndarray, shape: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """True for points (y, x) within the field of view of ``shape`` grown by ``margin`` px."""
    h, w = shape
    p = np.asarray(points)
    return (
        (p[:, 0] >= -0.5 - margin)
        & (p[:, 0] <= h - 0.5 + margin)
        & (p[:, 1] >= -0.5 - margin)
        & (p[:, 1] <= w - 0.5 + margin)
    )
