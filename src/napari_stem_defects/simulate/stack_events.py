"""Beam-driven site dynamics of a simulated image series, and the tables that record them.

:class:`SiteDynamics` draws the events of each frame (an atom lost, a host
atom added, a column's content hopping into an empty neighbour), clustered
around a few hot spots, and applies them to the sites' slots;
:func:`site_table` and :func:`event_table` record every site in every frame
and every event (:attr:`~.stack.StackTwin.sites`, :attr:`~.stack.StackTwin.events`).
The event kinds are described in :mod:`.stack`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..materials import ATOMIC_NUMBER, Material
from .defects import _draw, species_string

#: Species label of an empty site (the same as ``napari_stem_defects.columns.result.EMPTY``).
EMPTY = "empty"

#: Event kinds, in the order they are documented.
EVENT_KINDS = ("emptied", "filled", "moved", "species_changed")

#: Columns of :attr:`StackTwin.sites`.
STACK_SITE_COLUMNS = (
    "frame", "site_id", "sublattice", "y_ref", "x_ref", "y_px", "x_px", "species", "occupied",
    "n_atoms", "inside",
)

#: Columns of :attr:`StackTwin.events`.
EVENT_COLUMNS = (
    "frame", "kind", "site_id", "to_site_id", "sublattice", "y_ref", "x_ref", "to_y_ref", "to_x_ref",
    "species_before", "species_after",
)

#: Relative rates of the three processes: lose one atom, gain one host atom, hop.
_PROCESS_WEIGHTS = {"damage": 0.5, "fill": 0.2, "move": 0.3}


class SiteDynamics:
    """Draws events on the eligible M and X sites and applies them to the slots."""

    def __init__(
        self,
        material: Material,
        ref: np.ndarray,
        sublattice: np.ndarray,
        eligible: np.ndarray,
        a_px: float,
        rng: np.random.Generator,
    ) -> None:
        self.material = material
        self.rng = rng
        self.ref = ref
        self.sublattice = sublattice
        self.ids = np.flatnonzero(eligible)
        self.pos = ref[self.ids]
        self.is_x = sublattice[self.ids] == "X"
        self.tree = cKDTree(self.pos) if len(self.ids) else None
        # same-sublattice neighbours (one lattice constant away) among eligible sites, as local
        # indices in rows padded with len(ids) (a sentinel that is never free)
        n = len(self.ids)
        self.neighbours = np.full((n, 6), n, dtype=np.int64)
        if self.tree is not None:
            for local, near in enumerate(self.tree.query_ball_point(self.pos, r=1.1 * a_px)):
                near = np.asarray(near, dtype=int)
                near = near[(near != local) & (self.is_x[near] == self.is_x[local])]
                self.neighbours[local, : len(near)] = near[:6]
        self.touched = np.zeros(len(self.ids), dtype=bool)
        self.z_metal = ATOMIC_NUMBER[material.main_metal]

    def new_frame(self) -> None:
        self.touched[:] = False

    def place_hotspots(self, n: int) -> np.ndarray:
        if n <= 0 or len(self.ids) == 0:
            return np.zeros((0, 2))
        return self.pos[self.rng.choice(len(self.ids), size=n, replace=len(self.ids) < n)].copy()

    def event(
        self, slots: np.ndarray, hotspots: np.ndarray, radius_px: float, clustering: float
    ) -> dict[str, Any] | None:
        """Draw one event, apply it to ``slots`` and describe it; None if nothing could happen."""
        if len(self.ids) == 0:
            return None
        rng = self.rng
        region = None
        if len(hotspots) and rng.random() < clustering:
            centre = hotspots[rng.integers(len(hotspots))]
            region = np.asarray(self.tree.query_ball_point(centre, r=radius_px), dtype=int)
        processes = list(_PROCESS_WEIGHTS)
        p = np.array([_PROCESS_WEIGHTS[k] for k in processes])
        order = rng.choice(len(processes), size=len(processes), replace=False, p=p / p.sum())
        for index in order:  # the drawn process first; the others if it has no candidate here
            out = getattr(self, f"_{processes[index]}")(slots, region)
            if out is not None:
                return out
        return None

    def _candidates(self, mask: np.ndarray, region: np.ndarray | None) -> np.ndarray:
        mask = mask & ~self.touched
        if region is not None:
            keep = np.zeros_like(mask)
            keep[region] = True
            mask &= keep
        return np.flatnonzero(mask)

    def _record(self, kind: str, local: int, before: np.ndarray, after: np.ndarray,
                to_local: int | None = None) -> dict[str, Any]:
        self.touched[local] = True
        if to_local is not None:
            self.touched[to_local] = True
        return {
            "kind": kind,
            "site": int(self.ids[local]),
            "to_site": -1 if to_local is None else int(self.ids[to_local]),
            "before": _species(before),
            "after": _species(after),
        }

    def _damage(self, slots: np.ndarray, region: np.ndarray | None) -> dict[str, Any] | None:
        n_atoms = (slots[self.ids] > 0).sum(axis=1)
        cand = self._candidates(n_atoms > 0, region)
        if len(cand) == 0:
            return None
        local = int(self.rng.choice(cand))
        site = self.ids[local]
        before = slots[site].copy()
        full = np.flatnonzero(before > 0)
        slots[site, self.rng.choice(full)] = 0
        kind = "emptied" if len(full) == 1 else "species_changed"
        return self._record(kind, local, before, slots[site])

    def _fill(self, slots: np.ndarray, region: np.ndarray | None) -> dict[str, Any] | None:
        n_atoms = (slots[self.ids] > 0).sum(axis=1)
        # an empty site takes one host atom; a one-atom X column takes its second chalcogen
        cand = self._candidates((n_atoms == 0) | (self.is_x & (n_atoms == 1)), region)
        if len(cand) == 0:
            return None
        local = int(self.rng.choice(cand))
        site = self.ids[local]
        before = slots[site].copy()
        if self.is_x[local]:
            slot = int(self.rng.choice(np.flatnonzero(before == 0)))
            slots[site, slot] = self._chalcogen(slot)
        else:
            slots[site, 0] = int(_draw(self.material.metals, 1, self.rng)[0])
        kind = "filled" if not before.any() else "species_changed"
        return self._record(kind, local, before, slots[site])

    def _move(self, slots: np.ndarray, region: np.ndarray | None) -> dict[str, Any] | None:
        occupied = (slots[self.ids] > 0).any(axis=1)
        free = np.append(~occupied & ~self.touched, False)  # the sentinel is never free
        has_room = free[self.neighbours].any(axis=1)
        cand = self._candidates(occupied & has_room, region)
        if len(cand) == 0:
            return None
        local = int(self.rng.choice(cand))
        nb = self.neighbours[local]
        to_local = int(self.rng.choice(nb[free[nb]]))
        site, to_site = self.ids[local], self.ids[to_local]
        before = slots[site].copy()
        slots[to_site] = before
        slots[site] = 0
        return self._record("moved", local, before, slots[to_site], to_local)

    def _chalcogen(self, slot: int) -> int:
        """A host chalcogen for X2 slot ``slot`` (0 top, 1 bottom)."""
        if self.material.janus:
            return ATOMIC_NUMBER[list(self.material.chalcogens)[slot]]
        return int(_draw(self.material.chalcogens, 1, self.rng)[0])


def _species(slots: np.ndarray) -> str:
    return species_string(slots) or EMPTY


def site_table(
    history: np.ndarray,
    ref: np.ndarray,
    frame_pos: np.ndarray,
    in_frame: np.ndarray,
    sublattice: np.ndarray,
    seen: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Long table of every seen site in every frame; also the new id of every modelled site (-1 if unseen)."""
    n_frames = history.shape[0]
    keep = np.flatnonzero(seen)
    site_id = np.full(len(ref), -1, dtype=np.int64)
    site_id[keep] = np.arange(len(keep))
    h = history[:, keep]  # (T, n, 2)
    # species strings through the distinct slot pairs (a handful)
    codes = h[..., 0].astype(np.int64) * 256 + h[..., 1]
    uniq, inverse = np.unique(codes.ravel(), return_inverse=True)
    names = np.array([_species(np.array([c // 256, c % 256])) for c in uniq], dtype=object)
    n = len(keep)
    sites = pd.DataFrame({
        "frame": np.repeat(np.arange(n_frames), n),
        "site_id": np.tile(np.arange(n), n_frames),
        "sublattice": np.tile(sublattice[keep], n_frames),
        "y_ref": np.tile(ref[keep, 0], n_frames),
        "x_ref": np.tile(ref[keep, 1], n_frames),
        "y_px": frame_pos[:, keep, 0].ravel(),
        "x_px": frame_pos[:, keep, 1].ravel(),
        "species": names[inverse],
        "occupied": (h > 0).any(axis=2).ravel(),
        "n_atoms": (h > 0).sum(axis=2).ravel(),
        "inside": in_frame[:, keep].ravel(),
    })
    return sites, site_id


def event_table(
    events: list[dict[str, Any]], site_id: np.ndarray, ref: np.ndarray, sublattice: np.ndarray
) -> pd.DataFrame:
    if not events:
        table = pd.DataFrame({c: [] for c in EVENT_COLUMNS})
        return table.astype({"frame": int, "site_id": int, "to_site_id": int, "to_y_ref": float,
                             "to_x_ref": float, "y_ref": float, "x_ref": float})
    src = np.array([e["site"] for e in events])
    dst = np.array([e["to_site"] for e in events])
    moved = dst >= 0
    dst_safe = np.where(moved, dst, 0)
    return pd.DataFrame({
        "frame": np.array([e["frame"] for e in events], dtype=int),
        "kind": [e["kind"] for e in events],
        "site_id": site_id[src],
        "to_site_id": np.where(moved, site_id[dst_safe], -1),
        "sublattice": sublattice[src],
        "y_ref": ref[src, 0],
        "x_ref": ref[src, 1],
        "to_y_ref": np.where(moved, ref[dst_safe, 0], np.nan),
        "to_x_ref": np.where(moved, ref[dst_safe, 1], np.nan),
        "species_before": [e["before"] for e in events],
        "species_after": [e["after"] for e in events],
    })


__all__ = ["EMPTY", "EVENT_COLUMNS", "EVENT_KINDS", "STACK_SITE_COLUMNS", "SiteDynamics", "event_table", "site_table"]
