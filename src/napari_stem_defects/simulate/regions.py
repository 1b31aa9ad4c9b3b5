"""Regions of a composite specimen: shapes, what each region holds, and how a layout is drawn.

A specimen for :func:`~napari_stem_defects.simulate.sample.simulate_sample` is
a list of regions painted in order, each later region overriding the earlier
ones where they overlap (a painter's model):

- :class:`Grain`: a crystal with its own lattice rotation and origin (a tilt
  grain boundary is where two grains meet), its phase and orientation;
- :class:`PhaseRegion`: turns the grain(s) underneath into another phase (1T or
  1T') on the same metal lattice (a coherent 2H/1T interface);
- :class:`MirrorRegion`: a 2H mirror twin domain: the X2 columns move to the
  other non-metal coset of the same metal lattice;
- :class:`Hole`: vacuum, no atoms; :class:`Amorphous`: random atoms of the
  material (and optionally a contamination blob) instead of the lattice;
- :class:`Mask`: pixels of the recorded image set to NaN (always on top).

Points nothing covers are vacuum. Shapes are in image pixels (y, x) =
(row, col) before scan drift; angles are anticlockwise as displayed (x to the
right, y up on screen), as in :mod:`napari_stem_defects.cell_convention`.
Every region converts to and from a JSON-friendly dict
(:func:`region_to_dict`, :func:`region_from_dict`).

Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..cell_convention import normalise_rotation
from ..vocabulary import PHASES

# ----------------------------------------------------------------------------- shapes


def _unit(angle_deg: float) -> np.ndarray:
    """(dy, dx) of the screen direction ``angle_deg`` (anticlockwise from +x as displayed)."""
    t = np.deg2rad(angle_deg)
    return np.array([-np.sin(t), np.cos(t)])


@dataclass(frozen=True)
class Disc:
    """A disc of ``radius`` px around ``centre`` (y, x)."""

    centre: tuple[float, float]
    radius: float

    def contains(self, points: np.ndarray) -> np.ndarray:
        """True for points (y, x) inside."""
        p = np.asarray(points, dtype=float)
        return (p[..., 0] - self.centre[0]) ** 2 + (p[..., 1] - self.centre[1]) ** 2 <= self.radius**2


@dataclass(frozen=True)
class Rect:
    """The rectangle ``top <= y < bottom``, ``left <= x < right`` (pixel centres on integers)."""

    top: float
    left: float
    bottom: float
    right: float

    def contains(self, points: np.ndarray) -> np.ndarray:
        """True for points (y, x) inside."""
        p = np.asarray(points, dtype=float)
        return (p[..., 0] >= self.top) & (p[..., 0] < self.bottom) & (p[..., 1] >= self.left) & (
            p[..., 1] < self.right)


@dataclass(frozen=True)
class HalfPlane:
    """Points on the side of a line that the normal points to.

    The line passes through ``point`` (y, x); the inside is where
    ``(p - point) . n >= 0``, n the unit vector at screen angle ``normal_deg``.
    """

    point: tuple[float, float]
    normal_deg: float

    @classmethod
    def along(cls, point: tuple[float, float], line_deg: float, left: bool = True) -> HalfPlane:
        """The half plane to the left (or right) of a line through ``point`` running at ``line_deg``, as displayed.

        Examples
        --------
        >>> HalfPlane.along((10.0, 0.0), 0.0).contains(np.array([[5.0, 3.0], [15.0, 3.0]])).tolist()
        [True, False]
        """
        return cls(point=(float(point[0]), float(point[1])), normal_deg=float(line_deg + (90.0 if left else -90.0)))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """True for points (y, x) inside."""
        p = np.asarray(points, dtype=float)
        n = _unit(self.normal_deg)
        return (p[..., 0] - self.point[0]) * n[0] + (p[..., 1] - self.point[1]) * n[1] >= 0.0


@dataclass(frozen=True)
class Polygon:
    """A simple polygon with ``vertices`` ((y, x), ...), inside by the even-odd rule."""

    vertices: tuple[tuple[float, float], ...]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """True for points (y, x) inside."""
        p = np.asarray(points, dtype=float)
        y, x = p[..., 0], p[..., 1]
        inside = np.zeros(y.shape, dtype=bool)
        v = np.asarray(self.vertices, dtype=float)
        for (y0, x0), (y1, x1) in zip(v, np.roll(v, -1, axis=0), strict=True):
            if y0 == y1:
                continue
            crosses = (y0 > y) != (y1 > y)
            x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (x < x_cross)
        return inside


Shape = Disc | Rect | HalfPlane | Polygon
_SHAPES: dict[str, type] = {"disc": Disc, "rect": Rect, "half_plane": HalfPlane, "polygon": Polygon}


def _contains(shape: Shape | None, points: np.ndarray) -> np.ndarray:
    if shape is None:
        return np.ones(np.asarray(points).shape[:-1], dtype=bool)
    return shape.contains(points)


# ----------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Grain:
    """A crystalline grain filling ``shape`` (None: the whole plane).

    Parameters
    ----------
    shape : Disc, Rect, HalfPlane, Polygon or None
        Where the grain is.
    rotation_deg : float
        Lattice rotation, anticlockwise as displayed.
    origin : tuple of float or None
        Metal site of cell (0, 0), (y, x) px; None draws one from the seed.
    phase : str
        '2H' or '1T'.
    mirror : bool
        2H only: X2 columns on the other coset (``M - (a1 + a2) / 3``).
    distorted : bool
        1T only: 1T' (metal rows displaced pairwise by ``distortion_A``).
    distortion_A : float
        Displacement of each metal row of a 1T' region, Å.
    """

    shape: Shape | None = None
    rotation_deg: float = 0.0
    origin: tuple[float, float] | None = None
    phase: str = "2H"
    mirror: bool = False
    distorted: bool = False
    distortion_A: float = 0.15
    kind = "grain"


@dataclass(frozen=True)
class PhaseRegion:
    """Turns the crystal inside ``shape`` into ``phase`` (1T' when ``distorted``) on each grain's metal lattice."""

    shape: Shape
    phase: str = "1T"
    distorted: bool = False
    distortion_A: float = 0.15
    kind = "phase"


@dataclass(frozen=True)
class MirrorRegion:
    """A 2H mirror twin domain inside ``shape`` (its X2 columns on the other coset); a no-op on 1T."""

    shape: Shape
    kind = "mirror"


@dataclass(frozen=True)
class Hole:
    """Vacuum inside ``shape``: no atoms, clean edges."""

    shape: Shape
    kind = "hole"


@dataclass(frozen=True)
class Amorphous:
    """Random atoms of the material inside ``shape`` instead of the lattice.

    Parameters
    ----------
    shape : Disc, Rect, HalfPlane or Polygon
        Where the patch is.
    density : float
        Atoms per area relative to the crystal's (3 atoms per unit cell).
    spacing_nn : float
        Minimum distance between atoms, in metal-chalcogen distances.
    contamination : float
        Peak areal density (C atoms per Å^2) of a Gaussian carbon blob centred
        on the patch (hydrocarbon contamination); 0 for none.
    """

    shape: Shape
    density: float = 1.0
    spacing_nn: float = 0.6
    contamination: float = 0.0
    kind = "amorphous"


@dataclass(frozen=True)
class Mask:
    """Pixels inside ``shape`` are NaN in the recorded image (missing data); no sites there."""

    shape: Shape
    kind = "mask"


Region = Grain | PhaseRegion | MirrorRegion | Hole | Amorphous | Mask
_REGIONS: dict[str, type] = {c.kind: c for c in (Grain, PhaseRegion, MirrorRegion, Hole, Amorphous, Mask)}


def region_to_dict(region: Region) -> dict[str, Any]:
    """JSON-friendly description of a region (``kind``, its fields, ``shape`` with its ``type``).

    Examples
    --------
    >>> region_to_dict(Hole(Disc((5.0, 6.0), 3.0)))
    {'kind': 'hole', 'shape': {'type': 'disc', 'centre': [5.0, 6.0], 'radius': 3.0}}
    """
    out: dict[str, Any] = {"kind": region.kind}
    for f in fields(region):
        value = getattr(region, f.name)
        if f.name == "shape":
            value = None if value is None else {
                "type": next(k for k, c in _SHAPES.items() if isinstance(value, c)), **_plain(asdict(value))}
        out[f.name] = _plain(value)
    return out


def region_from_dict(d: Mapping[str, Any] | Region) -> Region:
    """The region a :func:`region_to_dict` dict describes (regions pass through).

    Examples
    --------
    >>> region_from_dict({"kind": "mask", "shape": {"type": "rect", "top": 0, "left": 0, "bottom": 4, "right": 9}})
    Mask(shape=Rect(top=0, left=0, bottom=4, right=9))
    """
    if isinstance(d, tuple(_REGIONS.values())):
        return d  # type: ignore[return-value]
    if not isinstance(d, Mapping) or d.get("kind") not in _REGIONS:
        raise ValueError(f"a region needs a 'kind' among {sorted(_REGIONS)}; got {d!r}")
    cls = _REGIONS[d["kind"]]
    kwargs = {k: v for k, v in d.items() if k != "kind"}
    unknown = set(kwargs) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{d['kind']} region: unknown field(s) {sorted(unknown)}")
    shape = kwargs.get("shape")
    if isinstance(shape, Mapping):
        kind = shape.get("type")
        if kind not in _SHAPES:
            raise ValueError(f"shape type {kind!r} is not one of {sorted(_SHAPES)}")
        params = {k: v for k, v in shape.items() if k != "type"}
        if kind == "polygon":
            params["vertices"] = tuple(tuple(float(c) for c in v) for v in params["vertices"])
        for key in ("centre", "point"):
            if key in params:
                params[key] = tuple(float(c) for c in params[key])
        kwargs["shape"] = _SHAPES[kind](**params)
    if kwargs.get("origin") is not None:
        kwargs["origin"] = tuple(float(c) for c in kwargs["origin"])
    return cls(**kwargs)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_regions(regions: Sequence[Region]) -> None:
    """Refuse layouts that cannot be simulated, with a message that says why."""
    if not any(isinstance(r, Grain) for r in regions):
        raise ValueError("a sample needs at least one Grain region (the crystal)")
    for r in regions:
        if r.kind != "grain" and r.shape is None:
            raise ValueError(f"a {r.kind} region needs a shape")
        phase = getattr(r, "phase", "2H")
        if phase not in PHASES:
            raise ValueError(f"phase {phase!r} is not one of {list(PHASES)}")
        if isinstance(r.shape, Disc) and r.shape.radius <= 0:
            raise ValueError("a disc needs a positive radius")
        if isinstance(r.shape, Polygon) and len(r.shape.vertices) < 3:
            raise ValueError("a polygon needs at least 3 vertices")


# ----------------------------------------------------------------------------- painting

#: What a point is, after painting: vacuum, crystal, hole, amorphous.
VACUUM, CRYSTAL, HOLE, AMORPHOUS = 0, 1, 2, 3


@dataclass
class Paint:
    """What the regions put at each of a set of points (arrays of the points' shape).

    ``grain`` is the index among the Grain regions (-1: none), ``phase`` the
    index in :data:`~napari_stem_defects.vocabulary.PHASES`, ``state`` one of
    VACUUM, CRYSTAL, HOLE, AMORPHOUS, ``patch`` the index of the Amorphous
    region (-1 elsewhere), ``distortion_A`` the 1T' row displacement (0: none).
    """

    grain: np.ndarray
    phase: np.ndarray
    mirror: np.ndarray
    state: np.ndarray
    patch: np.ndarray
    distortion_A: np.ndarray


def paint(regions: Sequence[Region], points: np.ndarray) -> Paint:
    """Paint ``regions`` in order onto ``points`` (y, x) px, specimen coordinates; masks are ignored here."""
    shape = np.asarray(points).shape[:-1]
    out = Paint(
        grain=np.full(shape, -1, dtype=np.int16), phase=np.zeros(shape, dtype=np.int8),
        mirror=np.zeros(shape, dtype=bool), state=np.full(shape, VACUUM, dtype=np.int8),
        patch=np.full(shape, -1, dtype=np.int16), distortion_A=np.zeros(shape),
    )
    n_grain = n_patch = 0
    for r in regions:
        if r.kind == "mask":
            continue
        inside = _contains(r.shape, points)
        if r.kind == "grain":
            out.grain[inside] = n_grain
            out.state[inside] = CRYSTAL
            out.patch[inside] = -1
            out.phase[inside] = PHASES.index(r.phase)
            out.mirror[inside] = r.mirror
            out.distortion_A[inside] = r.distortion_A if r.distorted else 0.0
            n_grain += 1
        elif r.kind == "phase":
            out.phase[inside] = PHASES.index(r.phase)
            out.distortion_A[inside] = r.distortion_A if r.distorted else 0.0
        elif r.kind == "mirror":
            out.mirror[inside] = True
        elif r.kind == "hole":
            out.state[inside] = HOLE
            out.patch[inside] = -1
        elif r.kind == "amorphous":
            out.state[inside] = AMORPHOUS
            out.patch[inside] = n_patch
            n_patch += 1
    return out


def masked_pixels(regions: Sequence[Region], shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) image of the pixels the Mask regions cover."""
    out = np.zeros(shape, dtype=bool)
    grid = None
    for r in (r for r in regions if r.kind == "mask"):
        if isinstance(r.shape, Rect):  # top <= row < bottom, left <= col < right
            rows = slice(max(int(np.ceil(r.shape.top)), 0), max(int(np.ceil(r.shape.bottom)), 0))
            cols = slice(max(int(np.ceil(r.shape.left)), 0), max(int(np.ceil(r.shape.right)), 0))
            out[rows, cols] = True
            continue
        if grid is None:
            grid = np.stack(np.mgrid[: shape[0], : shape[1]], axis=-1).astype(float)
        out |= r.shape.contains(grid)
    return out


# ----------------------------------------------------------------------------- random layouts


def random_regions(
    shape: tuple[int, int], pixel_size: float, lattice_constant: float, rng: np.random.Generator,
) -> list[Region]:
    """Draw a composite specimen: grains, a mirror twin, a 1T/1T' patch, a hole, an amorphous patch, a mask.

    Each phenomenon appears with a probability (a second grain 0.7, a mirror
    twin 0.6, a 1T region 0.6 (1T' half of those), a hole 0.5, an amorphous
    patch 0.5, a NaN mask 0.3), so a set of twins covers them all and their mixtures.

    Parameters
    ----------
    shape : tuple of int
        Image (H, W).
    pixel_size : float
        Å per pixel.
    lattice_constant : float
        Lattice constant ``a`` in Å (sets the hole and patch sizes in neighbour distances).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of regions
    """
    h, w = shape
    nn = lattice_constant / np.sqrt(3.0) / pixel_size
    size = min(h, w)

    def point(lo: float = 0.2, hi: float = 0.8) -> tuple[float, float]:
        return float(rng.uniform(lo, hi) * h), float(rng.uniform(lo, hi) * w)

    def blob(r_lo: float, r_hi: float) -> Shape:
        radius = float(np.clip(rng.uniform(r_lo, r_hi) * nn, 4 * nn, 0.3 * size))
        c = point()
        if rng.random() < 0.5:
            return Disc(c, radius)
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.75, 1.0, n)
        return Polygon(tuple((float(c[0] - r * np.sin(t)), float(c[1] + r * np.cos(t)))
                             for r, t in zip(radii, angles, strict=True)))

    rotation = float(rng.uniform(-90.0, 30.0))
    regions: list[Region] = [Grain(None, rotation_deg=rotation)]
    if rng.random() < 0.7:
        tilt = float(rng.uniform(8.0, 30.0)) * (1 if rng.random() < 0.5 else -1)
        regions.append(Grain(HalfPlane(point(0.3, 0.7), float(rng.uniform(0, 360))), rotation_deg=rotation + tilt))
    if rng.random() < 0.6:  # a mirror twin boundary along a lattice direction of the first grain
        line = normalise_rotation(rotation) + 60.0 * int(rng.integers(0, 3))
        mirror = MirrorRegion(HalfPlane.along(point(0.3, 0.7), line, left=bool(rng.random() < 0.5)))
        regions.insert(1, mirror)  # under the second grain
    if rng.random() < 0.6:
        regions.append(PhaseRegion(blob(6, 16), "1T", distorted=bool(rng.random() < 0.5)))
    if rng.random() < 0.5:
        regions.append(Hole(blob(4, 8)))
    if rng.random() < 0.5:
        regions.append(Amorphous(blob(5, 10), contamination=float(rng.choice([0.0, rng.uniform(0.5, 3.0)]))))
    if rng.random() < 0.3:
        mh, mw = rng.uniform(0.05, 0.25) * h, rng.uniform(0.05, 0.25) * w
        top, left = rng.uniform(0, h - mh), rng.uniform(0, w - mw)
        regions.append(Mask(Rect(float(np.floor(top)), float(np.floor(left)),
                                 float(np.floor(top + mh)), float(np.floor(left + mw)))))
    return regions
