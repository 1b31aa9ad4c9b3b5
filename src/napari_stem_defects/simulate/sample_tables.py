"""The truth of a composite specimen as tables and maps: its sites and cells, phase map and domain map.

:func:`~.sample.simulate_sample` places the atoms; :func:`sample_tables` lists
every site and cell with its domain, phase and boundary flag, and
:func:`sample_maps` paints the phase and domain of every pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..vocabulary import INCOMPLETE, PHASE_CODES, PHASES
from .defects import species_string
from .imaging import ImagingParams, apply_drift, column_cross_section
from .regions import AMORPHOUS, CRYSTAL
from .sample_geometry import M_ROLE, X_ROLE, GrainPositions, pixel_of
from .twin import CELL_COLUMNS, SITE_COLUMNS

#: Columns of the site table of a composite twin: those of every twin, then domain and phase.
SAMPLE_SITE_COLUMNS: tuple[str, ...] = (*SITE_COLUMNS, "domain", "phase")

#: Columns of its cell table: those of every twin, then domain, phase, boundary and the 1T second column.
SAMPLE_CELL_COLUMNS: tuple[str, ...] = (*CELL_COLUMNS, "domain", "phase", "boundary", "x2_site_id", "x2_species")


def _species(slots: np.ndarray) -> np.ndarray:
    uniq, inverse = np.unique(np.sort(slots, axis=1), axis=0, return_inverse=True)
    return np.array([species_string(s) for s in uniq], dtype=object)[inverse.ravel()]


def sample_tables(
    pts: GrainPositions, img: np.ndarray, site_ok: np.ndarray, adatoms: np.ndarray, role: np.ndarray,
    key: np.ndarray, domain_of: dict[int, int], slots: np.ndarray, label: np.ndarray, owner: np.ndarray,
    cell_parts: list[dict[str, Any]], drift: tuple[float, float], imaging: ImagingParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The site and cell tables (sites: M, then X, then H, each by domain)."""
    domain = np.full(len(key), -1)
    for k, d in domain_of.items():
        domain[key == k] = d
    order = [np.flatnonzero(site_ok & (role == r)) for r in (M_ROLE, X_ROLE)] + [np.flatnonzero(adatoms)]
    order = np.concatenate([o[np.argsort(domain[o], kind="stable")] for o in order])
    site_id = np.full(len(key), -1)
    site_id[order] = np.arange(len(order))
    cell_id = np.full(len(key), -1)  # by position of the metal site of a cell
    metals = np.concatenate([c["metals"] for c in cell_parts]) if cell_parts else np.zeros(0, int)
    cell_id[metals] = np.arange(len(metals))
    # each position's cell: the metal of its owning cell, if that metal is a cell of the same domain
    cell_of = np.full(len(key), -1)
    has_owner = owner >= 0
    metal_pos = np.asarray(pts.offset)[pts.grain[has_owner]] + owner[has_owner]
    same = key[metal_pos] == key[has_owner]
    cell_of[np.flatnonzero(has_owner)[same]] = cell_id[metal_pos[same]]
    phase_of_domain = {d: PHASES[(k // 2) % 2] for k, d in domain_of.items()}
    sites = pd.DataFrame({
        "site_id": np.arange(len(order)),
        "y_px": img[order, 0], "x_px": img[order, 1],
        "sublattice": np.array(["M", "X", "H"])[role[order]],
        "species": _species(slots[order]),
        "n_atoms": (slots[order] > 0).sum(axis=1),
        "defect": label[order].astype(str),
        "cell_id": cell_of[order],
        "cross_section_A2": column_cross_section(slots[order], imaging),
        "domain": domain[order],
        "phase": [phase_of_domain[d] for d in domain[order]],
    })
    rows = []
    for part in cell_parts:
        m, x, second = part["metals"], part["x"], part["second"]
        centre = (img[m] + apply_drift(part["x_pos"], drift)) / 2
        species = {name: np.where(idx >= 0, _species(slots[np.maximum(idx, 0)]), "")
                   for name, idx in (("x", x), ("x2", second))}
        rows.append(pd.DataFrame({
            "cell_id": cell_id[m], "i": pts.i[m], "j": pts.j[m], "y_px": centre[:, 0], "x_px": centre[:, 1],
            "m_site_id": site_id[m], "x_site_id": np.where(x >= 0, site_id[np.maximum(x, 0)], -1),
            "m_species": _species(slots[m]), "x_species": species["x"],
            "class": np.where(part["complete"], part["cls"], INCOMPLETE).astype(str),
            "domain": domain_of[part["key"]], "phase": PHASES[(part["key"] // 2) % 2],
            "boundary": part["boundary"],
            "x2_site_id": np.where(second >= 0, site_id[np.maximum(second, 0)], -1),
            "x2_species": species["x2"],
        }))
    cells = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(SAMPLE_CELL_COLUMNS))
    return sites, cells


def sample_maps(sites: pd.DataFrame, state: np.ndarray, mask: np.ndarray,
                phases: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Phase map (nearest site's phase on the crystal; hole, amorphous, masked) and domain map (domain + 1)."""
    from scipy import ndimage

    h, w = state.shape
    crystal = (state == CRYSTAL) & ~mask
    domain_map = np.zeros((h, w), dtype=np.int32)
    if len(sites) and sites["domain"].nunique() == 1:
        domain_map[crystal] = int(sites["domain"].iloc[0]) + 1
    elif len(sites):
        seeds = np.full((h, w), -1, dtype=np.int32)
        pix = pixel_of(sites[["y_px", "x_px"]].to_numpy(), (h, w))
        seeds[pix[:, 0], pix[:, 1]] = sites["domain"].to_numpy()
        iy, ix = ndimage.distance_transform_edt(seeds < 0, return_distances=False, return_indices=True)
        domain_map[crystal] = seeds[iy[crystal], ix[crystal]] + 1
    if len(sites):  # a site's own pixel is crystal of its domain, even where a region's edge cuts the pixel
        pix = pixel_of(sites[["y_px", "x_px"]].to_numpy(), (h, w))
        domain_map[pix[:, 0], pix[:, 1]] = sites["domain"].to_numpy() + 1
        state = state.copy()
        state[pix[:, 0], pix[:, 1]] = CRYSTAL
    codes = np.array([PHASE_CODES["none"]] + [PHASE_CODES[p] for p in phases], dtype=np.uint8)
    phase_map = codes[domain_map]
    phase_map[state != CRYSTAL] = PHASE_CODES["hole"]  # vacuum or hole
    phase_map[state == AMORPHOUS] = PHASE_CODES["amorphous"]
    phase_map[mask] = PHASE_CODES["masked"]
    return phase_map, domain_map


__all__ = ["SAMPLE_CELL_COLUMNS", "SAMPLE_SITE_COLUMNS", "sample_maps", "sample_tables"]
