"""Composite digital twins: grains, mirror twins, 1T/1T' regions, holes, amorphous patches and NaN masks.

:func:`simulate_sample` images a specimen described by a list of regions
(:mod:`~napari_stem_defects.simulate.regions`) and returns the same
:class:`~napari_stem_defects.simulate.twin.DigitalTwin` as ``simulate_twin``,
with exact truth. The conventions of that truth:

- A **domain** is one grain x one orientation (2H, or 2H mirrored) x one phase
  ('2H' or '1T'; 1T' is phase '1T'). Domain ids run 0..K-1 over the domains
  with a site in the image, ordered by (grain, phase, mirror).
- **Sites**: every metal ('M') and chalcogen ('X') column of a domain whose
  position lies in the image, outside masks; plus 'H' for adatoms on 2H
  hollow sites. In 2H an X site is an X2 column; in 1T every honeycomb
  position holds a column: the metal and two single-chalcogen X columns.
  Nothing in holes, amorphous patches, vacuum or masked pixels.
- **Cells** follow :mod:`napari_stem_defects.cell_convention` in each domain:
  in 2H the partner step p is the one of the metal's three M -> X2 vectors
  (drift included, as displayed) whose direction lies in [-60, 60) degrees,
  on the domain's X2 coset (``+(a1 + a2) / 3``, or ``-(a1 + a2) / 3`` in a
  mirror domain); a 2H cell's hollow site is at ``M + 2p``. In 1T, where both
  cosets hold columns and two of the six M -> X vectors lie in that window,
  p is the one in [-30, 30) degrees (image alone decides); the cell's second
  column (``x2``) is at ``M - p``. Each domain's p is in ``extra['domains']``.
- A cell is **incomplete** (class ``'incomplete'``, never a defect) when one
  of its columns (partner, or x2 in 1T) is not a site of its own domain:
  outside the image, masked, in another domain, a hole or a patch.
- A cell is on a **boundary** when any of its columns lies within 1.5
  metal-chalcogen distances of a site of another domain, of a hole, amorphous,
  vacuum or masked pixel, or of the image border. Point defects go only to
  complete cells off every boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..cell_convention import normalise_rotation
from ..materials import ATOMIC_NUMBER, Material, parse_material
from ..vocabulary import DEFECT_TYPES, PHASES
from .defects import Occupancy, _draw, populate
from .imaging import ImagingParams, apply_drift, column_cross_section, render
from .lattice import HoneycombLattice, inside
from .regions import (
    AMORPHOUS,
    CRYSTAL,
    Grain,
    Region,
    check_regions,
    masked_pixels,
    paint,
    random_regions,
    region_from_dict,
    region_to_dict,
)
from .sample_geometry import (
    H_ROLE,
    M_ROLE,
    X_ROLE,
    GrainPositions,
    Step,
    distort_1t_prime,
    drift_vectors,
    later_too_close,
    partner_step,
    partner_step_1t,
    pixel_of,
    step_vector,
    times,
    undrift,
)
from .sample_tables import sample_maps, sample_tables
from .twin import DigitalTwin

#: Defect types each phase's cells may take (a 1T cell has no hollow site and no X2 column to swap).
PHASE_DEFECTS: dict[str, tuple[str, ...]] = {
    "2H": DEFECT_TYPES, "1T": ("V_X1", "V_X2", "V_M", "V_X1+V_M", "V_X2+V_M", "dopant_M", "sub_X"),
}
#: A cell is on a boundary when a column lies this close (metal-chalcogen distances) to anything else.
BOUNDARY_NN: float = 1.5
#: Atoms of two grains (or a patch and a grain) closer than this (nn) keep only the earlier one.
MIN_SEPARATION_NN: float = 0.6


def simulate_sample(
    material: str | Material = "MoS2",
    shape: tuple[int, int] = (1024, 1024),
    pixel_size: float = 0.12,
    *,
    regions: Sequence[Region | Mapping[str, Any]] | None = None,
    defects: Mapping[str, float] | None = None,
    imaging: ImagingParams | None = None,
    seed: int | None = None,
    dopant: str | None = None,
    substituent: str | None = None,
    adatom: str | None = None,
) -> DigitalTwin:
    """Simulate a HAADF-STEM image of a composite specimen with exact truth.

    Parameters
    ----------
    material, shape, pixel_size, imaging, seed, dopant, substituent, adatom
        As :func:`~.twin.simulate_twin`; every phase and patch is of the one host material.
    regions : sequence of regions or their dicts, optional
        The specimen, painted in order (see :mod:`~napari_stem_defects.simulate.regions`);
        None draws a layout from the seed (:func:`~napari_stem_defects.simulate.regions.random_regions`).
    defects : mapping of str to float, optional
        Fraction of the eligible cells of each domain with each defect type
        (1T domains take only :data:`PHASE_DEFECTS` ['1T']).

    Returns
    -------
    DigitalTwin
        ``sites`` with :data:`~.sample_tables.SAMPLE_SITE_COLUMNS`, ``cells`` with
        :data:`~.sample_tables.SAMPLE_CELL_COLUMNS`; ``extra`` holds ``phase_map`` ((H, W)
        uint8, :data:`~napari_stem_defects.vocabulary.PHASE_CODES`),
        ``domain_map`` ((H, W) int32, domain + 1, 0 off the crystal),
        ``regions`` (the layout as dicts, origins drawn: passing it back
        reproduces the specimen) and ``domains`` (grain, phase, mirror,
        lattice and partner step of each domain). ``lattice`` is the first grain's.

    Examples
    --------
    >>> from napari_stem_defects.simulate.regions import Disc, Grain, Hole
    >>> twin = simulate_sample("MoS2", (128, 128), regions=[Grain(), Hole(Disc((64, 64), 40))], seed=1)
    >>> sorted(twin.sites["phase"].unique()), int((twin.extra["phase_map"] == 3).sum()) > 4000
    (['2H'], True)
    """
    from scipy import ndimage  # lazy: keeps `import napari_stem_defects.simulate` light

    h, w = (int(s) for s in shape)
    if h < 8 or w < 8:
        raise ValueError(f"image shape {shape} is too small; use at least 8 x 8 pixels")
    if pixel_size <= 0:
        raise ValueError("pixel_size must be positive")
    mat = parse_material(material)
    imaging = imaging or ImagingParams()
    _check_defects(defects)
    rng = np.random.default_rng(seed)
    if regions is None:
        layout = random_regions((h, w), pixel_size, mat.a, rng)
    else:
        layout = [region_from_dict(r) for r in regions]
    check_regions(layout)
    # every grain draws an origin, used where it has none: replaying extra['regions'] gives the same twin
    layout = [r if r.kind != "grain" else Grain(**{**vars(r), "origin": _origin(r.origin, rng, (h, w))})
              for r in layout]
    nn = mat.a / np.sqrt(3.0) / pixel_size
    drift = imaging.drift
    lattices = [HoneycombLattice.from_constant(mat.a, pixel_size, g.rotation_deg, origin=g.origin)
                for g in layout if g.kind == "grain"]

    # --- every honeycomb position of every grain near the field of view, and what the regions make of it
    pts = GrainPositions(lattices, (h, w), 4 * imaging.probe_fwhm / pixel_size + 2, drift)
    pnt = paint(layout, pts.spec)
    member = pts.near & (pnt.grain == pts.grain) & (pnt.state == CRYSTAL)
    t1 = pnt.phase == PHASES.index("1T")
    mirror = pnt.mirror & ~t1
    role = np.where(pts.coset == 0, M_ROLE, np.where(t1 | (pts.coset == np.where(mirror, 2, 1)), X_ROLE, H_ROLE))
    key = pts.grain.astype(np.int64) * 4 + pnt.phase * 2 + mirror
    distort_1t_prime(pts, member & t1 & (role == M_ROLE) & (pnt.distortion_A > 0), pnt.distortion_A / pixel_size,
                     lattices)
    member &= ~later_too_close(pts, member & (role != H_ROLE), MIN_SEPARATION_NN * nn)
    img = apply_drift(pts.spec, drift)
    in_img = inside(img, (h, w))
    mask = masked_pixels(layout, (h, w))
    pix = pixel_of(img, (h, w))
    masked = mask[pix[:, 0], pix[:, 1]] & in_img
    site_ok = member & in_img & ~masked & (role != H_ROLE)

    # --- the pixels: what the regions put there, and the distance of anything to a non-crystal pixel
    state, patch = _paint_pixels(layout, (h, w), drift)
    excluded = (state != CRYSTAL) | mask
    edge = excluded & ~ndimage.binary_erosion(excluded, border_value=1)
    edge_tree = cKDTree(np.argwhere(edge)) if edge.any() else None
    atoms = member & (role != H_ROLE)
    others: dict[int, cKDTree | None] = {}

    def clearance(pos: np.ndarray, k: int) -> np.ndarray:
        """Distance (px) of positions of domain key k to the border, non-crystal pixels and other domains' atoms."""
        out = np.minimum.reduce([pos[:, 0] + 0.5, h - 0.5 - pos[:, 0], pos[:, 1] + 0.5, w - 0.5 - pos[:, 1]])
        if not len(pos):
            return out
        if edge_tree is not None:
            out = np.minimum(out, edge_tree.query(pos, distance_upper_bound=3 * nn)[0])
        if k not in others:
            other = atoms & (key != k)
            others[k] = cKDTree(img[other]) if other.any() else None
        if others[k] is not None:
            out = np.minimum(out, others[k].query(pos, distance_upper_bound=3 * nn)[0])
        return out

    # --- domains, their cells, occupancy and point defects
    keys = np.unique(key[member])
    domain_keys = [int(k) for k in keys if (site_ok & (key == k)).any()]
    domain_of = {k: d for d, k in enumerate(domain_keys)}
    slots = np.zeros((len(pts.spec), 2), dtype=np.int16)
    label = np.full(len(pts.spec), "none", dtype=object)
    owner = np.full(len(pts.spec), -1, dtype=np.int64)  # flat cell index (in its grain) of each position
    cell_parts, domains = [], []
    for k in (int(k) for k in keys):
        g, phase = k // 4, PHASES[(k // 2) % 2]
        lat = lattices[g]
        p = partner_step_1t(lat, drift) if phase == "1T" else partner_step(lat, 2 if k % 2 else 1, drift)
        second = times(p, -1) if phase == "1T" else times(p, 2)  # 1T: x2 at M - p; 2H: hollow at M + 2p
        metals = np.flatnonzero(site_ok & (key == k) & (role == M_ROLE))
        hollow_ok = member & in_img & ~masked & (role == H_ROLE)
        part = _cells_of(pts, metals, g, p, second, phase, key == k, site_ok, hollow_ok)
        clear = np.minimum(clearance(img[metals], k), clearance(apply_drift(part["x_pos"], drift), k))
        if phase == "1T":
            clear = np.minimum(clear, clearance(apply_drift(part["second_pos"], drift), k))
        part["boundary"] = clear < BOUNDARY_NN * nn
        eligible = np.zeros(pts.n_cells[g], dtype=bool)
        ok = part["complete"] & ~part["boundary"]
        if phase == "2H":
            ok &= part["hollow_ok"] & (clearance(apply_drift(part["second_pos"], drift), k) >= nn)
        eligible[pts.flat(g, pts.i[metals[ok]], pts.j[metals[ok]])] = True
        allowed = {t: f for t, f in (defects or {}).items() if t in PHASE_DEFECTS[phase]}
        occ = populate(mat, pts.n_cells[g], eligible, allowed, rng, dopant=dopant, substituent=substituent,
                       adatom=adatom)
        _fill(pts, np.flatnonzero(member & (key == k)), role, g, p, second, phase, occ, slots, label, owner)
        part.update(metals=metals, key=k, cls=occ.cell_class[pts.flat(g, pts.i[metals], pts.j[metals])])
        if k in domain_of:
            cell_parts.append(part)
            v = drift_vectors(step_vector(lat, p)[None], drift)[0]
            domains.append({
                "domain": domain_of[k], "grain": int(g), "phase": phase, "mirror": bool(k % 2),
                "rotation_deg": normalise_rotation(layout_grains(layout)[g].rotation_deg),
                "a1_px": lat.a1.tolist(), "a2_px": lat.a2.tolist(), "origin_px": lat.origin.tolist(),
                "partner_step_px": v.tolist(), "n_cells": int(len(metals)),
            })
    adatoms = member & in_img & ~masked & (role == H_ROLE) & (slots > 0).any(axis=1)

    # --- amorphous patches, contamination, image
    extra_pos, extra_slots = _patches(layout, state, patch, drift, pts.spec[atoms], mat, nn, pixel_size, rng)
    lit = atoms | (member & (role == H_ROLE) & (slots > 0).any(axis=1))
    positions = np.concatenate([img[lit], apply_drift(extra_pos, drift)])
    all_slots = np.concatenate([slots[lit], extra_slots])
    image, expected = render(positions, column_cross_section(all_slots, imaging), (h, w), pixel_size, imaging, rng)
    image[mask] = np.nan
    expected[mask] = np.nan

    sites, cells = sample_tables(pts, img, site_ok, adatoms, role, key, domain_of, slots, label, owner,
                                 cell_parts, drift, imaging)
    phase_map, domain_map = sample_maps(sites, state, mask, [d["phase"] for d in domains])
    for d in domains:
        d["n_sites"] = int((sites["domain"] == d["domain"]).sum())
        d["area_px"] = int((domain_map == d["domain"] + 1).sum())
    return DigitalTwin(
        image=image, expected=expected, sites=sites, cells=cells, pixel_size=float(pixel_size), material=mat,
        lattice=lattices[0], imaging=imaging, seed=seed,
        extra={"rotation_deg": float(layout_grains(layout)[0].rotation_deg),
               "regions": [region_to_dict(r) for r in layout], "domains": domains,
               "phase_map": phase_map, "domain_map": domain_map},
    )


def layout_grains(layout: Sequence[Region]) -> list[Grain]:
    """The Grain regions of a layout, in order (their index is the ``grain`` of the domains)."""
    return [r for r in layout if r.kind == "grain"]


def _origin(origin: tuple[float, float] | None, rng: np.random.Generator,
            shape: tuple[int, int]) -> tuple[float, float]:
    drawn = rng.uniform(0, 1, 2) * (shape[0] / 2, shape[1] / 2)
    return (float(drawn[0]), float(drawn[1])) if origin is None else (float(origin[0]), float(origin[1]))


def _check_defects(defects: Mapping[str, float] | None) -> None:
    fractions = dict(defects or {})
    unknown = set(fractions) - set(DEFECT_TYPES)
    if unknown:
        raise ValueError(f"unknown defect types {sorted(unknown)}; choose from {list(DEFECT_TYPES)}")
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) > 1:
        raise ValueError("defect fractions must be >= 0 and sum to at most 1")


# ----------------------------------------------------------------------------- cells and occupancy


def _cells_of(pts: GrainPositions, metals: np.ndarray, g: int, p: Step, second: Step, phase: str,
              in_domain: np.ndarray, site_ok: np.ndarray, hollow_ok: np.ndarray) -> dict[str, np.ndarray]:
    """Partner, second column (1T x2 / 2H hollow) and completeness of the cells of some metal sites."""
    i, j = pts.i[metals], pts.j[metals]
    x = pts.index(g, p, i, j)
    y = pts.index(g, second, i, j)
    x_site = site_ok[x] & in_domain[x]
    out = {"x": np.where(x_site, x, -1), "x_pos": pts.spec[x], "second_pos": pts.spec[y]}
    if phase == "1T":
        y_site = site_ok[y] & in_domain[y]
        out.update(second=np.where(y_site, y, -1), complete=x_site & y_site, hollow_ok=np.zeros(len(metals), bool))
    else:
        out.update(second=np.full(len(metals), -1), complete=x_site, hollow_ok=hollow_ok[y] & in_domain[y])
    return out


def _fill(pts: GrainPositions, sel: np.ndarray, role: np.ndarray, g: int, p: Step, second: Step, phase: str,
          occ: Occupancy, slots: np.ndarray, label: np.ndarray, owner: np.ndarray) -> None:
    """Atoms, defect labels and owning cell of every position of one domain, from its occupancy."""
    i, j, r, c = pts.i[sel], pts.j[sel], role[sel], pts.coset[sel]
    for which, step, source, defect, slot in (
        (r == M_ROLE, (0, 0, 0), occ.m, occ.m_defect, None),
        (r == H_ROLE, second, occ.h, occ.h_defect, None),
        ((r == X_ROLE) & (c == p[0]), p, occ.x, occ.x_defect, 0 if phase == "1T" else None),
        ((r == X_ROLE) & (c == second[0]) & (phase == "1T"), second, occ.x, occ.x_defect, 1),
    ):
        if not which.any():
            continue
        cell = pts.flat(g, i[which] - step[1], j[which] - step[2])
        target = sel[which]
        owner[target] = cell
        if slot is None:
            slots[target] = source[cell]
            label[target] = defect[cell]
        else:
            slots[target] = np.stack([source[cell, slot], np.zeros(len(cell), np.int16)], axis=1)
            label[target] = np.where(np.isin(occ.x_slot[cell], (-1, slot)), defect[cell], "none")


def _paint_pixels(layout: Sequence[Region], shape: tuple[int, int],
                  drift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """State (VACUUM, CRYSTAL, HOLE, AMORPHOUS) and amorphous patch index of every pixel, a band of rows at a time."""
    h, w = shape
    state = np.empty(shape, dtype=np.int8)
    patch = np.empty(shape, dtype=np.int16)
    band = max(1, 2**18 // w)
    cols = np.arange(w, dtype=float)
    for top in range(0, h, band):
        rows = np.arange(top, min(top + band, h), dtype=float)
        grid = np.stack(np.broadcast_arrays(rows[:, None], cols[None, :]), axis=-1).reshape(-1, 2)
        painted = paint(layout, undrift(grid, drift))
        state[top : top + len(rows)] = painted.state.reshape(len(rows), w)
        patch[top : top + len(rows)] = painted.patch.reshape(len(rows), w)
    return state, patch


def _patches(layout: Sequence[Region], state: np.ndarray, patch: np.ndarray, drift: tuple[float, float],
             crystal: np.ndarray, mat: Material, nn: float, pixel_size: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random atoms (and contamination carbon) of the amorphous patches, specimen coordinates."""
    positions, slots = [np.zeros((0, 2))], [np.zeros((0, 2), dtype=np.int16)]
    cell_area = np.sqrt(3.0) / 2.0 * (np.sqrt(3.0) * nn) ** 2  # px^2
    patches = [r for r in layout if r.kind == "amorphous"]
    tree = cKDTree(crystal) if len(crystal) else None
    for q, region in enumerate(patches):
        inside_q = (state == AMORPHOUS) & (patch == q)
        if not inside_q.any():
            continue
        where = undrift(np.argwhere(inside_q).astype(float), drift)
        lo, hi = where.min(axis=0) - 1, where.max(axis=0) + 1
        n_target = rng.poisson(region.density * 3.0 / cell_area * inside_q.sum())
        cand = rng.uniform(lo, hi, size=(int(4 * n_target * np.prod(hi - lo) / inside_q.sum()) + 8, 2))
        cand = cand[_in_patch(layout, cand, q)]
        keep = _sequential_spacing(cand, region.spacing_nn * nn)[:n_target]
        atoms = cand[keep]
        if tree is not None and len(atoms):
            atoms = atoms[tree.query(atoms, distance_upper_bound=MIN_SEPARATION_NN * nn)[0] >= MIN_SEPARATION_NN * nn]
        is_metal = rng.random(len(atoms)) < 1.0 / 3.0
        z = np.where(is_metal, _draw(mat.metals, len(atoms), rng), _draw(mat.chalcogens, len(atoms), rng))
        positions.append(atoms)
        slots.append(np.stack([z, np.zeros_like(z)], axis=1).astype(np.int16))
        if region.contamination > 0:  # a Gaussian carbon blob on the patch
            centre, sigma = where.mean(axis=0), 0.5 * np.sqrt(inside_q.sum() / np.pi)
            n_c = rng.poisson(region.contamination * 2 * np.pi * (sigma * pixel_size) ** 2)
            blob = centre + sigma * rng.standard_normal((n_c, 2))
            blob = blob[_in_patch(layout, blob, q)]
            positions.append(blob)
            slots.append(np.tile(np.array([[ATOMIC_NUMBER["C"], 0]], dtype=np.int16), (len(blob), 1)))
    return np.concatenate(positions), np.concatenate(slots)


def _in_patch(layout: Sequence[Region], points: np.ndarray, q: int) -> np.ndarray:
    pnt = paint(layout, points)
    return (pnt.state == AMORPHOUS) & (pnt.patch == q)


def _sequential_spacing(points: np.ndarray, spacing: float) -> np.ndarray:
    """Indices of the points kept when each, in order, is kept unless an earlier kept one is closer than ``spacing``."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = cKDTree(points).query_pairs(spacing, output_type="ndarray")
    neighbours: list[list[int]] = [[] for _ in range(len(points))]
    for a, b in pairs:
        neighbours[max(a, b)].append(min(a, b))
    kept = np.zeros(len(points), dtype=bool)
    for k in range(len(points)):
        kept[k] = not any(kept[n] for n in neighbours[k])
    return np.flatnonzero(kept)
