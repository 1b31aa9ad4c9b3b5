"""Simulated image series (t, y, x) of a 2H-MX2 monolayer with drift and beam-driven defect dynamics.

A stack twin is built from the single-image digital-twin machinery: one
populated lattice (:func:`~napari_stem_defects.simulate.defects.populate`),
imaged frame after frame with :func:`~napari_stem_defects.simulate.imaging.render`
and fresh noise, while

- the specimen drifts: a rigid random walk (``shifts``) plus a smooth,
  zero-mean non-rigid warp that differs from frame to frame (both zero in
  frame 0, the reference frame);
- the beam changes the lattice: a Poisson number of events per frame, each
  one atom lost, one host atom added, or a column's content hopping into an
  empty neighbouring site of the same sublattice. Events cluster around a few
  random hot spots, as unstable sites gather into defect-rich regions in
  real series.

Every site's content in every frame and every event are recorded exactly.

Conventions
-----------
Positions are (y, x) in pixels. Frame 0 is the reference frame: content at
reference position ``p`` appears in frame ``t`` at
``p + StackTwin.displacement(t, p)`` = ``p + shifts[t] + warp_t(p)``.

Event kinds (``StackTwin.events["kind"]``); ``frame`` is the first frame
showing the new state:

- ``'emptied'``: an occupied site lost its last atom (S -> empty, Mo -> empty);
- ``'filled'``: an empty site received one host atom (empty -> Mo, empty -> S);
- ``'species_changed'``: a site stays occupied with another content: one
  atom lost from a two-atom column (S2 -> S, an X_M antisite S2 -> S) or one
  host chalcogen added to a one-atom X column (S -> S2);
- ``'moved'``: the whole content of site A hopped into an empty site B of the
  same sublattice one lattice constant away: A becomes empty, B occupied.

Beam damage of an X2 column is therefore two events: 'species_changed'
(S2 -> S), then 'emptied' (S -> empty). Adatoms on hollow sites ('H', only
present when ``defects`` asks for 'adatom') never take part in events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..materials import Material, parse_material
from .defects import populate
from .imaging import ImagingParams, apply_drift, column_cross_section, render
from .lattice import HoneycombLattice, inside
from .stack_events import SiteDynamics, event_table, site_table
from .twin import simulation_metadata

#: Initial defects when none are given (fractions of unit cells).
DEFAULT_DEFECTS: dict[str, float] = {"V_X1": 0.03, "V_X2": 0.01, "V_M": 0.01}
#: Sinusoids per axis in the non-rigid warp of a frame.
_N_WAVES = 3


@dataclass
class StackTwin:
    """A simulated image series with the exact ground truth behind it.

    Attributes
    ----------
    frames : ndarray of float32, shape (T, H, W)
        The recorded frames (each with its own noise).
    shifts : ndarray of float, shape (T, 2)
        True rigid drift (dy, dx) of each frame in pixels: content at
        reference position p appears in frame t at ``p + shifts[t]`` (plus the
        non-rigid warp). ``shifts[0]`` is (0, 0).
    sites : pandas.DataFrame
        One row per (frame, lattice site) for every site seen in at least one
        frame, empty sites included (metal 'M' and chalcogen 'X' sites, and
        'H' hollow sites holding an adatom). Columns
        :data:`~.stack_events.STACK_SITE_COLUMNS`: ``site_id`` (the same site keeps its id in
        every frame), reference position (``y_ref``, ``x_ref``: frame-0
        pixels), position in frame t (``y_px``, ``x_px``), ``species``
        ('Mo', 'S2', 'S', ..., ``'empty'``), ``occupied``, ``n_atoms`` and
        ``inside`` (whether the site lies in frame t's field of view).
    events : pandas.DataFrame
        One row per event, columns :data:`~.stack_events.EVENT_COLUMNS`, sorted by frame.
        ``frame`` is the first frame showing the new state; ``kind`` one of
        :data:`~.stack_events.EVENT_KINDS`; ``site_id`` and ``y_ref``, ``x_ref`` the site that
        changed (for 'moved' the source); ``to_site_id``, ``to_y_ref``,
        ``to_x_ref`` the destination of a 'moved' event (-1 / NaN otherwise);
        ``species_before`` the site's (source's) content in frame ``frame - 1``;
        ``species_after`` its content in ``frame`` (for 'moved' the
        destination's, which is the content that moved). Events only touch
        M and X sites at least half a lattice constant inside every frame, at
        most one event per site per frame (a move's destination included).
    pixel_size : float
        Å per pixel.
    material : Material
        The host material.
    lattice : HoneycombLattice
        The lattice in reference (frame-0) pixels, before the imaging's
        linear scan drift.
    imaging : ImagingParams
        Imaging conditions, the same for every frame.
    seed : int or None
        Seed that reproduces the stack.
    hotspots : ndarray of shape (k, 2)
        Reference positions (y, x) in pixels of the centres events cluster around.
    """

    frames: np.ndarray
    shifts: np.ndarray
    sites: pd.DataFrame
    events: pd.DataFrame
    pixel_size: float
    material: Material
    lattice: HoneycombLattice
    imaging: ImagingParams
    seed: int | None
    hotspots: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    extra: dict[str, Any] = field(default_factory=dict)
    # warp of each frame: wave vectors (T, 2 axes, N, 2) in cycles/px, phases (T, 2, N),
    # amplitudes (T, 2, N) in px, and the mean over the field of view removed (T, 2)
    _wave_k: np.ndarray = field(default=None, repr=False)
    _wave_phase: np.ndarray = field(default=None, repr=False)
    _wave_amp: np.ndarray = field(default=None, repr=False)
    _wave_mean: np.ndarray = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])

    def warp(self, t: int, points_ref: np.ndarray) -> np.ndarray:
        """Non-rigid part of the displacement of frame ``t`` at reference points (n, 2), in px.

        Zero in frame 0 and zero-mean over the field of view in every frame.
        """
        p = np.asarray(points_ref, dtype=float).reshape(-1, 2)
        if self._wave_k is None:
            return np.zeros_like(p)
        return _warp(p, self._wave_k[t], self._wave_phase[t], self._wave_amp[t]) - self._wave_mean[t]

    def displacement(self, t: int, points_ref: np.ndarray) -> np.ndarray:
        """Total true displacement (rigid + non-rigid) of frame ``t`` at reference points.

        Parameters
        ----------
        t : int
            Frame index.
        points_ref : array_like of shape (n, 2)
            Reference (frame-0) positions (y, x) in pixels.

        Returns
        -------
        ndarray of shape (n, 2)
            (dy, dx) in pixels: the content at ``p`` appears in frame ``t`` at
            ``p + displacement``.
        """
        return self.shifts[t][None, :] + self.warp(t, points_ref)

    @property
    def changed_sites(self) -> set[int]:
        """Ids of the sites touched by any event (sources and destinations of moves)."""
        ids = set(self.events["site_id"].astype(int))
        ids |= {int(s) for s in self.events["to_site_id"] if s >= 0}
        return ids

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-friendly description of how the stack was made (also a layer's metadata)."""
        return {
            **simulation_metadata(self.pixel_size, self.material, self.lattice, self.imaging, self.seed),
            "n_frames": self.n_frames,
            "shifts_px": self.shifts.tolist(),
            "hotspots_px": self.hotspots.tolist(),
            "n_events": int(len(self.events)),
            **self.extra,
        }


def simulate_stack(
    material: str | Material = "MoS2",
    n_frames: int = 20,
    shape: tuple[int, int] = (256, 256),
    pixel_size: float = 0.12,
    *,
    dose: float | None = 1e5,
    drift_step_px: float = 1.0,
    warp_px: float = 0.3,
    events_per_frame: float = 3.0,
    defects: Mapping[str, float] | None = None,
    imaging: ImagingParams | None = None,
    seed: int | None = None,
    rotation_deg: float | None = 0.0,
    clustering: float = 0.7,
    n_hotspots: int = 3,
    hotspot_radius: float = 15.0,
) -> StackTwin:
    """Simulate a HAADF-STEM image series of a 2H-MX2 monolayer with drift and defect dynamics.

    Parameters
    ----------
    material : str or Material
        Host, e.g. ``"MoS2"`` or ``"WSe2"``.
    n_frames : int
        Number of frames T (at least 1).
    shape : tuple of int
        Frame shape (H, W) in pixels.
    pixel_size : float
        Å per pixel.
    dose : float or None
        Electron dose per frame in e/Å^2 (None: noise-free); only used when
        ``imaging`` is None, which then means ``ImagingParams(dose=dose)``.
    drift_step_px : float
        Standard deviation per axis of each frame-to-frame step of the rigid
        random-walk drift, in pixels.
    warp_px : float
        Root-mean-square amplitude per axis of the non-rigid warp of each frame
        (a few low-frequency sinusoids, zero-mean over the frame), in pixels.
    events_per_frame : float
        Mean (Poisson) number of events between consecutive frames. A drawn
        event that finds no possible site (rare) is dropped.
    defects : mapping of str to float, optional
        Initial defect fractions per unit cell, as in
        :func:`~napari_stem_defects.simulate.twin.simulate_twin`; default
        :data:`DEFAULT_DEFECTS` (a few % V_X1, V_X2, V_M). Pass ``{}`` for a
        perfect initial lattice.
    imaging : ImagingParams, optional
        Probe, background and noise, the same for every frame (the noise is
        drawn afresh per frame).
    seed : int, optional
        Seed; the same seed and arguments give the same stack.
    rotation_deg : float or None
        Lattice rotation in degrees; None draws one at random.
    clustering : float
        Probability that an event happens within ``hotspot_radius`` of one of
        the hot spots rather than anywhere (0 gives uniformly spread events).
    n_hotspots : int
        Number of hot spots, placed at random on sites that stay in view.
    hotspot_radius : float
        Radius of a hot spot in Å.

    Returns
    -------
    StackTwin

    Examples
    --------
    >>> stack = simulate_stack("MoS2", n_frames=4, shape=(96, 96), events_per_frame=5, seed=0)
    >>> stack.frames.shape, stack.frames.dtype
    ((4, 96, 96), dtype('float32'))
    >>> stack.shifts[0].tolist()
    [0.0, 0.0]
    >>> set(stack.events["kind"]) <= {"emptied", "filled", "moved", "species_changed"}
    True
    >>> int(stack.sites["frame"].nunique())
    4
    >>> first = stack.sites[stack.sites["frame"] == 0].iloc[:1]
    >>> bool(np.allclose(first[["y_px", "x_px"]].to_numpy(), first[["y_ref", "x_ref"]].to_numpy()))
    True
    """
    h, w = (int(s) for s in shape)
    n_frames = int(n_frames)
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    if h < 8 or w < 8:
        raise ValueError(f"frame shape {shape} is too small; use at least 8 x 8 pixels")
    if pixel_size <= 0:
        raise ValueError("pixel_size must be positive")
    if drift_step_px < 0 or warp_px < 0 or events_per_frame < 0:
        raise ValueError("drift_step_px, warp_px and events_per_frame must be >= 0")
    if not 0.0 <= clustering <= 1.0:
        raise ValueError("clustering must be between 0 and 1")
    mat = parse_material(material)
    imaging = imaging or ImagingParams(dose=dose)
    defects = DEFAULT_DEFECTS if defects is None else defects
    rng = np.random.default_rng(seed)
    if rotation_deg is None:
        rotation_deg = float(rng.uniform(0.0, 60.0))

    # --- drift: rigid random walk and per-frame warp, drawn first so the field can cover them
    steps = rng.normal(0.0, drift_step_px, size=(n_frames, 2))
    steps[0] = 0.0
    shifts = np.cumsum(steps, axis=0)
    wave_k, wave_phase, wave_amp, wave_mean = _draw_warps(n_frames, (h, w), warp_px, rng)
    warp_bound = 2.0 * np.abs(wave_amp).sum(axis=2).max() if n_frames > 1 else 0.0
    drift_bound = float(np.abs(shifts).max()) + warp_bound

    # --- lattice over the frame grown by the largest drift and the probe's reach
    lattice = HoneycombLattice.from_constant(
        mat.a, pixel_size, rotation_deg, origin=tuple(rng.uniform(0, 1, size=2) * (h / 2, w / 2))
    )
    margin = drift_bound + 4 * imaging.probe_fwhm / pixel_size + 2
    ij = lattice.cell_indices((h, w), margin=margin)
    n_cells = len(ij)
    metal = lattice.metal_positions(ij)
    ref = np.concatenate([metal, metal + lattice.x_offset, metal + lattice.hollow_offset])
    ref = apply_drift(ref, imaging.drift)  # the scan's linear distortion, the same in every frame
    sublattice = np.repeat(np.array(["M", "X", "H"]), n_cells)
    occ = populate(mat, n_cells, np.ones(n_cells, dtype=bool), defects, rng)
    slots = np.concatenate([occ.m, occ.x, occ.h]).astype(np.int16)

    twin = StackTwin(
        frames=np.zeros((0, h, w), np.float32), shifts=shifts, sites=pd.DataFrame(), events=pd.DataFrame(),
        pixel_size=float(pixel_size), material=mat, lattice=lattice, imaging=imaging, seed=seed,
        _wave_k=wave_k, _wave_phase=wave_phase, _wave_amp=wave_amp, _wave_mean=wave_mean,
    )
    frame_pos = np.stack([ref + twin.displacement(t, ref) for t in range(n_frames)])  # (T, n, 2)
    in_frame = np.stack([inside(p, (h, w)) for p in frame_pos])  # (T, n)

    # --- sites that may change: M/X sites comfortably inside every frame
    edge = 0.5 * mat.a / pixel_size
    eligible = (sublattice != "H") & np.all(
        [inside(p, (h, w), margin=-edge) for p in frame_pos], axis=0
    )
    dynamics = SiteDynamics(mat, ref, sublattice, eligible, mat.a / pixel_size, rng)
    hotspots = dynamics.place_hotspots(n_hotspots)

    # --- frames and events
    history = np.empty((n_frames, *slots.shape), dtype=np.int16)
    frames = np.empty((n_frames, h, w), dtype=np.float32)
    events: list[dict[str, Any]] = []
    radius_px = hotspot_radius / pixel_size
    for t in range(n_frames):
        if t > 0:
            for _ in range(rng.poisson(events_per_frame)):
                event = dynamics.event(slots, hotspots, radius_px, clustering)
                if event is not None:
                    event["frame"] = t
                    events.append(event)
            dynamics.new_frame()
        history[t] = slots
        cross = column_cross_section(slots, imaging)
        lit = cross > 0
        frames[t], _ = render(frame_pos[t][lit], cross[lit], (h, w), pixel_size, imaging, rng)

    twin.frames = frames
    seen = in_frame.any(axis=0) & ((sublattice != "H") | (slots > 0).any(axis=1))
    twin.sites, site_id = site_table(history, ref, frame_pos, in_frame, sublattice, seen)
    twin.events = event_table(events, site_id, ref, sublattice)
    twin.hotspots = hotspots
    twin.extra = {
        "rotation_deg": float(rotation_deg),
        "drift_step_px": float(drift_step_px),
        "warp_px": float(warp_px),
        "events_per_frame": float(events_per_frame),
        "clustering": float(clustering),
        "hotspot_radius_A": float(hotspot_radius),
        "initial_defects": dict(defects),
    }
    return twin


# --------------------------------------------------------------------------- drift


def _draw_warps(
    n_frames: int, shape: tuple[int, int], warp_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random low-frequency sinusoid warps, one per frame (frame 0: none), zero-mean over the frame."""
    h, w = shape
    size = float(max(h, w))
    # wavelengths between half and twice the frame, in random directions
    wavelength = size * rng.uniform(0.5, 2.0, size=(n_frames, 2, _N_WAVES))
    angle = rng.uniform(0.0, 2 * np.pi, size=(n_frames, 2, _N_WAVES))
    k = np.stack([np.sin(angle), np.cos(angle)], axis=-1) / wavelength[..., None]
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_frames, 2, _N_WAVES))
    # each of N sinusoids has RMS amp / sqrt(2); together RMS warp_px per axis
    amp = np.full((n_frames, 2, _N_WAVES), warp_px * np.sqrt(2.0 / _N_WAVES))
    amp[0] = 0.0
    gy, gx = np.meshgrid(np.linspace(0, h - 1, 24), np.linspace(0, w - 1, 24), indexing="ij")
    grid = np.stack([gy.ravel(), gx.ravel()], axis=1)
    mean = np.stack([_warp(grid, k[t], phase[t], amp[t]).mean(axis=0) for t in range(n_frames)])
    return k, phase, amp, mean


def _warp(points: np.ndarray, k: np.ndarray, phase: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Sum of sinusoids per axis: ``sum_j amp[a, j] sin(2 pi k[a, j] . p + phase[a, j])``."""
    arg = 2 * np.pi * np.einsum("nc,ajc->naj", points, k) + phase[None]
    return (amp[None] * np.sin(arg)).sum(axis=2)
