"""The result of drift registration: rigid shifts, residual fields, and the frame <-> reference coordinate mapping.

Conventions: content at reference position ``p = (y, x)`` appears in frame t
at ``p + displacement(t, p)``, the rigid ``shifts[t]`` plus a residual field
interpolated from a coarse grid of nodes by a natural cubic spline
(:func:`spline_basis`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

from .phase_correlation import DEFAULT_PERIOD_PX


@dataclass
class Registration:
    """A registered image series and the displacements that map it.

    Attributes
    ----------
    registered : ndarray of float32, shape (T, H, W)
        Frames resampled onto the reference frame's coordinates. Pixels a
        frame does not see hold its fill value (the frame's mean by default).
    shifts : ndarray of float, shape (T, 2)
        Rigid (dy, dx) drift of each frame in px: content at reference
        position p appears in frame t at ``p + shifts[t]`` (plus the
        non-rigid part). With a non-rigid registration it is the mean
        displacement over the frame. ``shifts[reference] == (0, 0)``.
    fields : ndarray of float, shape (T, 2, gy, gx), or None
        Residual non-rigid (dy, dx) displacement in px at the grid nodes
        (zero mean over the frame); None for a rigid-only registration.
        Between nodes it is a natural cubic spline in y and x.
    grid_y, grid_x : ndarray of float, or None
        Node coordinates in reference pixels, evenly spaced from the first
        to the last pixel.
    valid : ndarray of bool, shape (H, W)
        Reference pixels seen in every frame.
    reference : int
        Index of the reference frame.
    quality : ndarray of float, shape (T,)
        Normalised correlation of each frame with the reference at its shift
        (1 for the reference); a low value flags a frame that may be
        misregistered. 0 for a frame with nothing in common with the
        reference (e.g. blank), which keeps the last good frame's shift.
    period_px : float
        Lattice plane spacing (px) used to bound the searches.
    patch_px : int or None
        Side of the non-rigid correlation patches (px).
    """

    registered: np.ndarray
    shifts: np.ndarray
    fields: np.ndarray | None
    grid_y: np.ndarray | None
    grid_x: np.ndarray | None
    valid: np.ndarray
    reference: int = 0
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    period_px: float = DEFAULT_PERIOD_PX
    patch_px: int | None = None

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.shifts)

    def _frame_index(self, t: int) -> int:
        t = int(t)
        if not -self.n_frames <= t < self.n_frames:
            raise IndexError(f"frame {t} out of range for {self.n_frames} frames")
        return t % self.n_frames

    def displacement(self, t: int, points_ref: np.ndarray) -> np.ndarray:
        """Total (rigid + non-rigid) displacement at reference positions.

        Parameters
        ----------
        t : int
            Frame index.
        points_ref : array_like, shape (n, 2) or (2,)
            (y, x) positions in reference pixels.

        Returns
        -------
        ndarray of float, same shape as ``points_ref``
            (dy, dx) such that the content at p appears in frame t at
            ``p + displacement``.
        """
        t = self._frame_index(t)
        pts = np.asarray(points_ref, dtype=float)
        flat = pts.reshape(-1, 2)
        out = np.broadcast_to(self.shifts[t], flat.shape).copy()
        if self.fields is not None:
            by = spline_basis(flat[:, 0], self.grid_y)
            bx = spline_basis(flat[:, 1], self.grid_x)
            for c in range(2):
                out[:, c] += ((by @ self.fields[t, c]) * bx).sum(axis=1)
        return out.reshape(pts.shape)

    def to_frame(self, t: int, points_ref: np.ndarray) -> np.ndarray:
        """Map reference positions to where their content appears in frame t.

        Parameters
        ----------
        t : int
            Frame index.
        points_ref : array_like, shape (n, 2) or (2,)
            (y, x) in reference pixels.

        Returns
        -------
        ndarray of float, same shape
            (y, x) in frame t's pixels.
        """
        pts = np.asarray(points_ref, dtype=float)
        return pts + self.displacement(t, pts)

    def to_reference(
        self, t: int, points_frame: np.ndarray, *, tol: float = 1e-4, max_iter: int = 50
    ) -> np.ndarray:
        """Map positions in frame t back to reference coordinates (inverse of :meth:`to_frame`).

        Solves ``p + displacement(t, p) = q`` by fixed-point iteration
        (exact after one step for a rigid-only registration).

        Parameters
        ----------
        t : int
            Frame index.
        points_frame : array_like, shape (n, 2) or (2,)
            (y, x) in frame t's pixels.
        tol : float
            Stop when no point moves more than this (px).
        max_iter : int
            Iteration limit.

        Returns
        -------
        ndarray of float, same shape
            (y, x) in reference pixels.
        """
        q = np.asarray(points_frame, dtype=float)
        p = q - self.shifts[self._frame_index(t)]
        if self.fields is None:
            return p
        for _ in range(max_iter):
            new = q - self.displacement(t, p)
            done = np.max(np.abs(new - p), initial=0.0) < tol
            p = new
            if done:
                break
        return p

    def displacement_field(self, t: int) -> np.ndarray:
        """Dense displacement of frame t at every reference pixel.

        Parameters
        ----------
        t : int
            Frame index.

        Returns
        -------
        ndarray of float32, shape (2, H, W)
            (dy, dx) at each reference pixel; equals :meth:`displacement` at
            the pixel centres.
        """
        t = self._frame_index(t)
        shape = self.valid.shape
        out = np.empty((2, *shape), dtype=np.float32)
        ry = rx = None
        if self.fields is not None:
            ry = spline_basis(np.arange(shape[0]), self.grid_y)
            rx = spline_basis(np.arange(shape[1]), self.grid_x)
        for c in range(2):
            out[c] = self.shifts[t, c]
            if ry is not None:
                out[c] += ry @ self.fields[t, c] @ rx.T
        return out


def spline_basis(u: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(len(u), len(nodes)) weights of the node values at coordinates ``u``.

    A natural cubic spline through evenly spaced nodes, continued linearly
    (with its end slope) beyond the outer nodes.
    """
    u = np.asarray(u, dtype=float)
    k = len(nodes)
    if k == 1:
        return np.ones((len(u), 1))
    spline = CubicSpline(nodes, np.eye(k), bc_type="natural")
    inner = np.clip(u, nodes[0], nodes[-1])
    out = spline(inner)
    slope = spline(inner, 1)
    outside = (u != inner)[:, None]
    return np.where(outside, out + slope * (u - inner)[:, None], out)
