"""Geometry of composite samples: every honeycomb position of every grain, cell steps, the partner step.

A position is ``origin + i a1 + j a2 + c (a1 + a2) / 3`` of a grain's lattice:
coset c = 0 is the metal site of cell (i, j), c = 1 and c = 2 the two non-metal
positions (X2 column and hollow in 2H, or the other way round in a mirror
domain; both chalcogen columns in 1T). A :data:`Step` ``(c, di, dj)`` is the
vector ``c (a1 + a2) / 3 + di a1 + dj a2`` from a metal site.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..cell_convention import partner_index
from .imaging import apply_drift
from .lattice import HoneycombLattice, inside

#: Roles of a honeycomb position: metal, chalcogen, hollow (adatom) site.
M_ROLE, X_ROLE, H_ROLE = 0, 1, 2

Step = tuple[int, int, int]  # (coset c, di, dj): c (a1 + a2) / 3 + di a1 + dj a2
COSET_STEPS: dict[int, tuple[Step, Step, Step]] = {
    1: ((1, 0, 0), (1, -1, 0), (1, 0, -1)),  # the three M -> X vectors of the +(a1+a2)/3 coset
    2: ((2, -1, -1), (2, 0, -1), (2, -1, 0)),  # ... and of the -(a1+a2)/3 coset
}


class GrainPositions:
    """Every honeycomb position (3 cosets x cells) of every grain, as flat arrays, near the field of view."""

    def __init__(self, lattices: list[HoneycombLattice], shape: tuple[int, int], margin: float,
                 drift: tuple[float, float]) -> None:
        h, w = shape
        corners = undrift(np.array([[-0.5 - margin, -0.5 - margin], [-0.5 - margin, w - 0.5 + margin],
                                    [h - 0.5 + margin, -0.5 - margin], [h - 0.5 + margin, w - 0.5 + margin]]),
                          drift)
        parts: list[tuple[np.ndarray, ...]] = []
        self.lo, self.dims, self.offset, self.n_cells = [], [], [], []
        start = 0
        for g, lat in enumerate(lattices):
            ij = np.linalg.solve(lat.basis, (corners - lat.origin).T).T
            lo = np.floor(ij.min(axis=0)).astype(int) - 3  # padding: every owner of a near position is inside
            hi = np.ceil(ij.max(axis=0)).astype(int) + 3
            ni, nj = hi - lo + 1
            c, i, j = np.meshgrid(np.arange(3), np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1),
                                  indexing="ij")
            c, i, j = c.ravel(), i.ravel(), j.ravel()
            spec = lat.origin + np.outer(i, lat.a1) + np.outer(j, lat.a2) + np.outer(c, lat.x_offset)
            parts.append((np.full(len(c), g, dtype=np.int16), c, i, j, spec))
            self.lo.append(lo)
            self.dims.append((int(ni), int(nj)))
            self.offset.append(start)
            self.n_cells.append(int(ni * nj))
            start += len(c)
        self.grain, self.coset, self.i, self.j = (np.concatenate([p[k] for p in parts]) for k in range(4))
        self.spec = np.concatenate([p[4] for p in parts])
        self.near = inside(apply_drift(self.spec, drift), shape, margin)

    def flat(self, g: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Flat cell index of cells (i, j) of grain g."""
        return (np.asarray(i) - self.lo[g][0]) * self.dims[g][1] + (np.asarray(j) - self.lo[g][1])

    def index(self, g: int, step: Step, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Global index of the position ``step`` away from metal (i, j) of grain g."""
        c, di, dj = step
        return self.offset[g] + c * self.n_cells[g] + self.flat(g, np.asarray(i) + di, np.asarray(j) + dj)


def times(step: Step, k: int) -> Step:
    """``k`` times a step, reduced to coset 0..2 (3 (a1 + a2) / 3 is a lattice vector).

    Examples
    --------
    >>> times((1, 0, 0), -1), times((1, 0, 0), 2), times((2, -1, -1), 2)
    ((2, -1, -1), (2, 0, 0), (1, -1, -1))
    """
    c, di, dj = step
    total = k * c
    carry = total // 3
    return total % 3, k * di + carry, k * dj + carry


def step_vector(lattice: HoneycombLattice, step: Step) -> np.ndarray:
    """The (dy, dx) px vector of a step in a lattice (before drift)."""
    c, di, dj = step
    return c * lattice.x_offset + di * lattice.a1 + dj * lattice.a2


def partner_step(lattice: HoneycombLattice, coset: int, drift: tuple[float, float]) -> Step:
    """The convention's partner step on a coset: of its three M -> X vectors as displayed, the one in [-60, 60)."""
    steps = COSET_STEPS[coset]
    return steps[partner_index(drift_vectors(np.array([step_vector(lattice, s) for s in steps]), drift))]


def partner_step_1t(lattice: HoneycombLattice, drift: tuple[float, float]) -> Step:
    """A 1T cell's partner step: of the metal's six M -> X vectors as displayed, the one closest to +x.

    In 1T both non-metal cosets hold a column, so the metal has six X
    neighbours 60 degrees apart; :func:`~napari_stem_defects.cell_convention.partner_index`
    picks the one closest to +x (within [-30, 30) degrees). It depends on the
    image alone (a 1T grain at rotation r and at r + 60 looks the same and pairs the same).

    Examples
    --------
    >>> lat = HoneycombLattice.from_constant(3.16, 0.12, 10.0)  # (a1 + a2) / 3 at 40, a1 - (a1 + a2) / 3 at -20
    >>> partner_step_1t(lat, (0.0, 0.0))
    (2, 0, -1)
    """
    steps = COSET_STEPS[1] + COSET_STEPS[2]
    return steps[partner_index(drift_vectors(np.array([step_vector(lattice, s) for s in steps]), drift))]


def drift_vectors(vectors: np.ndarray, drift: tuple[float, float]) -> np.ndarray:
    v = np.array(vectors, dtype=float)
    v[:, 1] += drift[1] * v[:, 0]
    v[:, 0] *= 1.0 + drift[0]
    return v


def undrift(positions: np.ndarray, drift: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`~napari_stem_defects.simulate.imaging.apply_drift`."""
    p = np.array(positions, dtype=float)
    p[:, 0] /= 1.0 + drift[0]
    p[:, 1] -= drift[1] * p[:, 0]
    return p


def pixel_of(positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.clip(np.rint(positions).astype(np.int64), 0, np.array(shape) - 1)


def distort_1t_prime(pts: GrainPositions, which: np.ndarray, shift_px: np.ndarray,
                     lattices: list[HoneycombLattice]) -> None:
    """1T': metal rows along a1 move pairwise towards each other by ``shift_px`` each, perpendicular to a1."""
    for g in np.unique(pts.grain[which]):
        sel = which & (pts.grain == g)
        a1 = lattices[g].a1
        normal = np.array([a1[1], -a1[0]]) / np.hypot(*a1)
        sign = np.where(pts.j[sel] % 2 == 0, 1.0, -1.0)
        pts.spec[sel] += (sign * shift_px[sel])[:, None] * normal


def later_too_close(pts: GrainPositions, atoms: np.ndarray, distance: float) -> np.ndarray:
    """Atoms of a grain closer than ``distance`` to an atom of an earlier grain (to be dropped)."""
    drop = np.zeros(len(atoms), dtype=bool)
    for g in range(1, int(pts.grain.max()) + 1):
        earlier = atoms & (pts.grain < g) & ~drop
        mine = np.flatnonzero(atoms & (pts.grain == g))
        if earlier.any() and len(mine):
            d = cKDTree(pts.spec[earlier]).query(pts.spec[mine], distance_upper_bound=distance)[0]
            drop[mine[d < distance]] = True
    return drop
