"""Tracking columns over an image series, events, and their scores against ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from napari_stem_defects.dynamics import tracking
from napari_stem_defects.dynamics.evaluate import match_events, pair_events, tracking_accuracy
from napari_stem_defects.dynamics.events import EVENT_COLUMNS, detect_events, is_valid
from napari_stem_defects.dynamics.tracking import (
    TRACK_COLUMNS,
    TRACK_FEATURE_COLUMNS,
    min_cost_matching,
    napari_tracks_data,
    track_columns,
    track_features,
)

A = 12.0  # lattice constant, px
NN = A / np.sqrt(3.0)  # M-X distance
A1 = np.array([0.0, A])
A2 = np.array([A * np.sqrt(3.0) / 2.0, A / 2.0])
ORIGIN = np.array([20.0, 20.0])
N_CELLS = 6
T = 9
# The parameters the dynamics pipeline uses, from the nearest-neighbour distance.
MAX_DISP = 0.45 * NN
HOP = 1.25 * np.sqrt(3.0) * NN
MOVE = 0.3 * NN


def site_pos(sub: str, i: int, j: int) -> np.ndarray:
    """Reference position of a site of cell (i, j): metal, chalcogen or hollow."""
    frac = {"M": 0.0, "X": 1.0 / 3.0, "H": 2.0 / 3.0}[sub]
    return ORIGIN + i * A1 + j * A2 + frac * (A1 + A2)


class Scenario:
    """A honeycomb of M and X sites over T frames with scripted changes, and its ground truth.

    - site ``emptied``: M(1,1) Mo -> empty at frame 2
    - site ``refill``: X(4,1) empty until frame 3, S2 from frame 4
    - hop: the S2 of X(2,3) moves to the empty neighbour X(3,3) at frame 5
    - ``change``: X(1,4) S2 -> S at frame 3
    - ``flicker``: X(4,4) reads S at frame 6 only
    - ``gap``: M(3,1) is not detected at frame 3
    - an adatom (H) in the hollow of cell (2,2) from frame 1 to 6, gliding 2.6 px at frame 4
    """

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        rows = []
        sid = 0
        self.site_of: dict[tuple, int] = {}
        for sub in ("M", "X"):
            for i in range(N_CELLS):
                for j in range(N_CELLS):
                    self.site_of[(sub, i, j)] = sid
                    y, x = site_pos(sub, i, j)
                    default = "Mo" if sub == "M" else "S2"
                    for t in range(T):
                        rows.append({"frame": t, "site_id": sid, "sublattice": sub, "y_ref": y, "x_ref": x,
                                     "species": default})
                    sid += 1
        self.adatom_id = sid
        self.adatom_start = site_pos("H", 2, 2)
        self.glide = np.array([1.3, 2.25])  # |glide| ~ 2.6 px
        for t in range(T):
            y, x = self.adatom_start + (self.glide if t >= 4 else 0.0)
            rows.append({"frame": t, "site_id": sid, "sublattice": "H", "y_ref": y, "x_ref": x,
                         "species": "Mo" if 1 <= t <= 6 else "empty"})
        truth = pd.DataFrame(rows)

        def set_species(key, frames, species):
            sel = (truth["site_id"] == self.site_of[key]) & truth["frame"].isin(list(frames))
            truth.loc[sel, "species"] = species

        set_species(("M", 1, 1), range(2, T), "empty")
        set_species(("X", 4, 1), range(0, 4), "empty")
        set_species(("X", 3, 3), range(0, 5), "empty")
        set_species(("X", 2, 3), range(5, T), "empty")
        set_species(("X", 1, 4), range(3, T), "S")
        truth["occupied"] = truth["species"] != "empty"
        truth["inside"] = True
        truth["y_px"], truth["x_px"] = truth["y_ref"], truth["x_ref"]
        truth["n_atoms"] = np.where(truth["occupied"], np.where(truth["species"] == "S2", 2, 1), 0)
        self.truth_sites = truth

        # Observed tables: jittered positions, the flicker, the gap, no empty hollow, shuffled rows.
        obs = truth.copy()
        jitter = np.where(obs["sublattice"].to_numpy() == "H", 0.1, 0.3)[:, None]
        obs[["y_px", "x_px"]] = obs[["y_ref", "x_ref"]].to_numpy() + rng.uniform(-1, 1, (len(obs), 2)) * jitter
        flick = (obs["site_id"] == self.site_of[("X", 4, 4)]) & (obs["frame"] == 6)
        obs.loc[flick, "species"] = "S"
        gap = (obs["site_id"] == self.site_of[("M", 3, 1)]) & (obs["frame"] == 3)
        obs = obs[~gap & ~((obs["sublattice"] == "H") & ~obs["occupied"])]
        obs["intensity"] = rng.uniform(1.0, 2.0, len(obs))
        obs["probability"] = 0.9
        self.frames = []
        for t in range(T):
            f = obs[obs["frame"] == t].sample(frac=1.0, random_state=t)
            self.frames.append(f[["site_id", "y_px", "x_px", "sublattice", "species", "probability",
                                  "intensity"]].reset_index(drop=True))

        def ev(frame, kind, key, species_before, species_after, to_key=None, pos=None, to_pos=None):
            sid_ = self.site_of[key] if key != "adatom" else self.adatom_id
            p = site_pos(*key) if pos is None else pos
            q = (site_pos(*to_key) if to_key is not None else np.full(2, np.nan)) if to_pos is None else to_pos
            return {"frame": frame, "kind": kind, "site_id": sid_,
                    "to_site_id": self.site_of[to_key] if to_key is not None else -1,
                    "sublattice": "H" if key == "adatom" else key[0], "y_ref": p[0], "x_ref": p[1],
                    "to_y_ref": q[0], "to_x_ref": q[1], "species_before": species_before,
                    "species_after": species_after}

        start, end = self.adatom_start, self.adatom_start + self.glide
        self.truth_events = pd.DataFrame([
            ev(1, "filled", "adatom", "empty", "Mo", pos=start),
            ev(2, "emptied", ("M", 1, 1), "Mo", "empty"),
            ev(3, "species_changed", ("X", 1, 4), "S2", "S"),
            ev(4, "filled", ("X", 4, 1), "empty", "S2"),
            ev(4, "moved", "adatom", "Mo", "Mo", pos=start, to_pos=end),
            ev(5, "moved", ("X", 2, 3), "S2", "S2", to_key=("X", 3, 3)),
            ev(7, "emptied", "adatom", "Mo", "empty", pos=end),
        ])
        # The truth events by key, to compare with what is found.
        self.expected = {
            ("filled", 1): ("adatom", None), ("emptied", 2): (("M", 1, 1), None),
            ("species_changed", 3): (("X", 1, 4), None), ("filled", 4): (("X", 4, 1), None),
            ("moved", 4): ("adatom", "adatom"), ("moved", 5): (("X", 2, 3), ("X", 3, 3)),
            ("emptied", 7): ("adatom", None),
        }

    def track_of(self, tracks: pd.DataFrame, key) -> int:
        sid = self.adatom_id if key == "adatom" else self.site_of[key]
        ids = tracks.loc[tracks["source_site_id"] == sid, "track_id"].unique()
        assert len(ids) == 1
        return int(ids[0])


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture(scope="module")
def tracks(scenario) -> pd.DataFrame:
    return track_columns(scenario.frames, max_displacement_px=MAX_DISP, max_gap=2)


def events_of(tracks, min_persistence=2, **kw):
    return detect_events(tracks, hop_distance_px=HOP, move_threshold_px=MOVE, min_persistence=min_persistence, **kw)


# --- tracking ---------------------------------------------------------------------------------------

def test_one_track_per_site(scenario, tracks):
    assert tuple(tracks.columns) == TRACK_COLUMNS
    n_sites = 2 * N_CELLS**2 + 1
    assert tracks["track_id"].nunique() == n_sites
    # Every track follows exactly one site, every site is one track.
    per_track = tracks.groupby("track_id")["source_site_id"].nunique()
    per_site = tracks.groupby("source_site_id")["track_id"].nunique()
    assert (per_track == 1).all() and (per_site == 1).all() and len(per_site) == n_sites
    # Sorted by track then frame; sublattice constant along a track.
    assert (tracks.groupby("track_id")["sublattice"].nunique() == 1).all()
    key = tracks["track_id"].to_numpy() * 100 + tracks["frame"].to_numpy()
    assert np.all(np.diff(key) > 0)
    # Empty sites keep their track through the change.
    emptied = tracks[tracks["track_id"] == scenario.track_of(tracks, ("M", 1, 1))]
    assert list(emptied["occupied"]) == [True, True] + [False] * (T - 2)
    assert list(emptied["species"]) == ["Mo", "Mo"] + ["empty"] * (T - 2)


def test_gap_is_bridged(scenario, tracks):
    gap = tracks[tracks["track_id"] == scenario.track_of(tracks, ("M", 3, 1))]
    assert list(gap["frame"]) == [0, 1, 2, 4, 5, 6, 7, 8]
    features = track_features(tracks).set_index("track_id")
    f = features.loc[scenario.track_of(tracks, ("M", 3, 1))]
    assert (f["n_frames"], f["lifetime_frames"], f["first_frame"], f["last_frame"]) == (8, 9, 0, 8)


def test_gap_longer_than_max_gap_splits_track():
    frames = [pd.DataFrame({"y_px": [5.0], "x_px": [5.0], "sublattice": ["M"], "species": ["Mo"]})
              if t not in (1, 2, 3) else pd.DataFrame({"y_px": [], "x_px": [], "sublattice": [], "species": []})
              for t in range(5)]
    assert track_columns(frames, max_displacement_px=1.0, max_gap=2)["track_id"].nunique() == 2
    assert track_columns(frames, max_displacement_px=1.0, max_gap=3)["track_id"].nunique() == 1


def test_sublattices_never_link():
    f0 = pd.DataFrame({"y_px": [10.0], "x_px": [10.0], "sublattice": ["M"], "species": ["Mo"]})
    f1 = pd.DataFrame({"y_px": [10.5], "x_px": [10.0], "sublattice": ["X"], "species": ["S2"]})
    tracks = track_columns([f0, f1], max_displacement_px=5.0)
    assert tracks["track_id"].nunique() == 2
    assert list(tracks.groupby("track_id")["sublattice"].first()) == ["M", "X"]


def test_assignment_is_optimal_not_greedy():
    # Greedy nearest-first would link the middle observation to track 0 and leave track 1 unlinked.
    f0 = pd.DataFrame({"y_px": [0.0, 0.0], "x_px": [0.0, 2.0], "sublattice": "M", "site_id": [0, 1]})
    f1 = pd.DataFrame({"y_px": [0.0, 0.0], "x_px": [-0.9, 1.1], "sublattice": "M", "site_id": [0, 1]})
    tracks = track_columns([f0, f1], max_displacement_px=1.5)
    assert tracks["track_id"].nunique() == 2
    assert (tracks.groupby("track_id")["source_site_id"].nunique() == 1).all()


@pytest.mark.parametrize("dense_limit", [None, 0])  # 0: every block through the large sparse solver
def test_min_cost_matching_equals_dense_assignment(dense_limit, monkeypatch):
    if dense_limit is not None:
        monkeypatch.setattr(tracking, "_DENSE_LIMIT", dense_limit)
    rng = np.random.default_rng(3)
    for _ in range(30):
        n, m = rng.integers(1, 12, 2)
        mask = rng.random((n, m)) < 0.3
        if not mask.any():
            continue
        cost = rng.random((n, m))
        r, c = np.nonzero(mask)
        a, b = min_cost_matching(r, c, cost[r, c])
        assert len(set(a)) == len(a) and len(set(b)) == len(b) and mask[a, b].all()
        dense = np.where(mask, cost, 1e12)
        ra, cb = linear_sum_assignment(dense)
        ok = mask[ra, cb]
        assert len(a) == ok.sum()
        assert cost[a, b].sum() == pytest.approx(cost[ra[ok], cb[ok]].sum())


def test_invalid_arguments():
    with pytest.raises(ValueError):
        track_columns([], max_displacement_px=0.0)
    with pytest.raises(ValueError):
        track_columns([], max_displacement_px=1.0, max_gap=-1)
    empty = track_columns([], max_displacement_px=1.0)
    assert tuple(empty.columns) == TRACK_COLUMNS and len(empty) == 0
    assert len(track_features(empty)) == 0 and len(events_of(empty)) == 0


def test_large_stack_links_every_site():
    rng = np.random.default_rng(1)
    i, j = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    ref = {s: site_pos(s, 0, 0) + i.reshape(-1, 1) * A1 + j.reshape(-1, 1) * A2 for s in ("M", "X")}
    frames = []
    for _ in range(10):
        parts = [pd.DataFrame({"y_px": ref[s][:, 0] + rng.normal(0, 0.3, len(ref[s])),
                               "x_px": ref[s][:, 1] + rng.normal(0, 0.3, len(ref[s])),
                               "sublattice": s, "site_id": np.arange(len(ref[s])) + k * 10_000})
                 for k, s in enumerate(("M", "X"))]
        frames.append(pd.concat(parts, ignore_index=True).sample(frac=0.99, random_state=int(rng.integers(1e6))))
    tracks = track_columns(frames, max_displacement_px=MAX_DISP, max_gap=2)
    assert tracks["track_id"].nunique() == 2 * 40 * 40
    assert (tracks.groupby("track_id")["source_site_id"].nunique() == 1).all()


# --- features and napari ------------------------------------------------------------------------------

def test_track_features(scenario, tracks):
    events = events_of(tracks)
    features = track_features(tracks, events)
    assert tuple(features.columns) == TRACK_FEATURE_COLUMNS
    assert len(features) == tracks["track_id"].nunique()
    f = features.set_index("track_id")
    ad = f.loc[scenario.track_of(tracks, "adatom")]
    assert (ad["sublattice"], ad["first_frame"], ad["last_frame"], ad["n_frames"]) == ("H", 1, 6, 6)
    assert ad["net_displacement_px"] == pytest.approx(np.linalg.norm(scenario.glide), abs=0.3)
    assert ad["max_step_px"] == pytest.approx(np.linalg.norm(scenario.glide), abs=0.3)
    assert ad["path_length_px"] >= ad["net_displacement_px"]
    assert ad["n_events"] == 3  # arrives, glides, leaves
    assert f.loc[scenario.track_of(tracks, ("M", 1, 1)), "occupied_frames"] == 2
    assert f.loc[scenario.track_of(tracks, ("X", 2, 3)), "n_events"] == 1
    assert f.loc[scenario.track_of(tracks, ("X", 3, 3)), "n_events"] == 1
    assert f["n_events"].sum() == 8  # 7 events, the hop counted by both its sites
    assert (track_features(tracks)["n_events"] == 0).all()


def test_napari_tracks_layer(scenario, tracks):
    napari = pytest.importorskip("napari")
    shuffled = tracks.sample(frac=1.0, random_state=0)
    data, features = napari_tracks_data(shuffled)
    assert data.shape == (len(tracks), 4) and len(features) == len(tracks)
    assert np.all(np.diff(data[:, 0] * 100 + data[:, 1]) > 0)
    np.testing.assert_array_equal(data, tracks[["track_id", "frame", "y_px", "x_px"]].to_numpy(float))
    assert list(features["species"]) == list(tracks["species"])
    layer = napari.layers.Tracks(data, features=features)
    assert layer.data.shape == data.shape
    assert len(layer.features) == len(tracks)
    assert set(layer.features.columns) >= {"sublattice", "species", "occupied"}


# --- events --------------------------------------------------------------------------------------------

def _found_keys(scenario, tracks, events):
    """{(kind, frame): (from key, to key)} of the found events, sites named like the scenario's."""
    name = {scenario.track_of(tracks, k): k for k in [*scenario.site_of, "adatom"]}
    out = {}
    for ev in events.itertuples():
        assert (ev.kind, ev.frame) not in out, f"two {ev.kind} events at frame {ev.frame}"
        out[(ev.kind, ev.frame)] = (name[ev.track_id], name[ev.to_track_id] if ev.to_track_id >= 0 else None)
    return out


def test_events_found_with_kind_frame_and_position(scenario, tracks):
    events = events_of(tracks, min_persistence=2)
    assert tuple(events.columns) == EVENT_COLUMNS
    assert _found_keys(scenario, tracks, events) == scenario.expected
    assert list(events["event_id"]) == list(range(len(events)))
    # Positions: where the site is; a move from its source to its destination.
    for ev in events.itertuples():
        key, to_key = scenario.expected[(ev.kind, ev.frame)]
        if key == "adatom":
            start, end = scenario.adatom_start, scenario.adatom_start + scenario.glide
            p = end if ev.kind == "emptied" else start
            q = end if ev.kind == "moved" else None
        else:
            p, q = site_pos(*key), site_pos(*to_key) if to_key else None
        assert np.hypot(ev.y_px - p[0], ev.x_px - p[1]) < 0.5
        if q is None:
            assert ev.to_track_id == -1 and np.isnan(ev.to_y_px)
        else:
            assert np.hypot(ev.to_y_px - q[0], ev.to_x_px - q[1]) < 0.5
    species = events.set_index(["kind", "frame"])[["species_before", "species_after"]]
    assert tuple(species.loc[("species_changed", 3)]) == ("S2", "S")
    assert tuple(species.loc[("moved", 5)]) == ("S2", "S2")
    assert tuple(species.loc[("emptied", 2)]) == ("Mo", "empty")
    assert tuple(species.loc[("filled", 4)]) == ("empty", "S2")
    assert set(events["sublattice"]) == {"M", "X", "H"}


def test_flicker_counts_only_without_persistence(scenario, tracks):
    found = _found_keys(scenario, tracks, events_of(tracks, min_persistence=1))
    flicker = (("X", 4, 4), None)
    assert found.pop(("species_changed", 6)) == flicker
    assert found.pop(("species_changed", 7)) == flicker
    assert found == scenario.expected


def test_hop_is_one_move_not_emptied_and_filled(scenario, tracks):
    events = events_of(tracks)
    at5 = events[events["frame"] == 5]
    assert list(at5["kind"]) == ["moved"]
    # Too short a hop distance: the same change is an emptied and a filled site.
    split = detect_events(tracks, hop_distance_px=0.5 * A, move_threshold_px=MOVE, min_persistence=2)
    assert sorted(split.loc[split["frame"] == 5, "kind"]) == ["emptied", "filled"]


def test_valid_mask_keeps_moves_into_it(scenario, tracks):
    mask = np.ones((200, 200), bool)
    for key in (("X", 2, 3), ("X", 1, 4)):  # the hop's source and the species change
        y, x = np.rint(site_pos(*key)).astype(int)
        mask[y - 2:y + 3, x - 2:x + 3] = False
    found = _found_keys(scenario, tracks, events_of(tracks, valid=mask))
    expected = dict(scenario.expected)
    del expected[("species_changed", 3)]
    assert found == expected


def test_first_frame_flicker_is_no_event():
    tracks = pd.DataFrame({"track_id": 0, "frame": np.arange(5), "y_px": 5.0, "x_px": 5.0, "sublattice": "X",
                           "species": ["S", "S2", "S2", "S2", "S2"], "occupied": True})
    assert len(detect_events(tracks, hop_distance_px=10, move_threshold_px=1, min_persistence=2)) == 0
    one = detect_events(tracks, hop_distance_px=10, move_threshold_px=1, min_persistence=1)
    assert list(one["kind"]) == ["species_changed"] and list(one["frame"]) == [1]


def test_position_outlier_is_no_move():
    y = np.array([5.0, 5.0, 9.0, 5.0, 5.0])
    tracks = pd.DataFrame({"track_id": 0, "frame": np.arange(5), "y_px": y, "x_px": 5.0, "sublattice": "H",
                           "species": "Mo", "occupied": True})
    assert len(detect_events(tracks, hop_distance_px=10, move_threshold_px=2, min_persistence=2)) == 0
    assert len(detect_events(tracks, hop_distance_px=10, move_threshold_px=2, min_persistence=1)) == 2


def test_border_tracks(scenario):
    # A column entering the field of view at frame 3 beyond the lattice's right edge.
    p = site_pos("M", N_CELLS, 2)
    frames = [f if t < 3 else pd.concat([f, pd.DataFrame({"site_id": [999], "y_px": [p[0]], "x_px": [p[1]],
                                                          "sublattice": ["M"], "species": ["Mo"]})],
                                        ignore_index=True)
              for t, f in enumerate(scenario.frames)]
    tracks = track_columns(frames, max_displacement_px=MAX_DISP)
    entering = int(tracks.loc[tracks["source_site_id"] == 999, "track_id"].iloc[0])
    # Without a mask, only the box every frame covers counts: no event for it.
    assert entering not in set(events_of(tracks)["track_id"])
    # A mask that trusts everything makes it a filled site ...
    everywhere = np.ones((200, 200), bool)
    ev = events_of(tracks, valid=everywhere)
    assert ev.loc[ev["track_id"] == entering, ["kind", "frame"]].values.tolist() == [["filled", 3]]
    # ... and one (or a callable) that excludes the edge drops the track.
    mask = everywhere.copy()
    mask[:, int(p[1]) - 3:] = False
    for valid in (mask, lambda pts: is_valid(mask, pts)):
        ev = events_of(tracks, valid=valid)
        assert entering not in set(ev["track_id"])
        assert _found_keys(scenario, tracks[tracks["track_id"] != entering], ev) == scenario.expected


def test_detect_events_invalid_arguments(tracks):
    with pytest.raises(ValueError):
        events_of(tracks, min_persistence=0)
    with pytest.raises(ValueError):
        detect_events(tracks, hop_distance_px=0.0, move_threshold_px=1.0)


# --- evaluation ----------------------------------------------------------------------------------------

def test_match_events_perfect(scenario, tracks):
    scores = match_events(events_of(tracks), scenario.truth_events, tol_px=1.0).set_index("kind")
    assert list(scores.index) == ["emptied", "filled", "moved", "species_changed", "all"]
    assert (scores[["precision", "recall", "f1"]] == 1.0).all().all()
    assert scores.loc["all", "tp"] == len(scenario.truth_events) == 7


def test_match_events_corrupted(scenario, tracks):
    found = events_of(tracks)
    # Drop the species change, shift the hop's destination to a wrong site, add a spurious emptied site.
    found = found[found["kind"] != "species_changed"].copy()
    hop = found["kind"].eq("moved") & found["frame"].eq(5)
    found.loc[hop, "to_x_px"] += A
    spurious = found[found["kind"] == "emptied"].iloc[[0]].assign(frame=8, y_px=100.0)
    found = pd.concat([found, spurious], ignore_index=True)
    scores = match_events(found, scenario.truth_events, tol_px=1.0).set_index("kind")
    assert scores.loc["species_changed", ["n_found", "tp", "recall", "f1"]].tolist() == [0, 0, 0.0, 0.0]
    assert np.isnan(scores.loc["species_changed", "precision"])
    assert scores.loc["moved", ["tp", "precision", "recall"]].tolist() == [1, 0.5, 0.5]
    assert scores.loc["emptied", ["tp", "precision", "recall"]].tolist() == [2, 2 / 3, 1.0]
    assert scores.loc["all", ["n_found", "n_truth", "tp"]].tolist() == [7, 7, 5]
    assert scores.loc["all", "f1"] == pytest.approx(5 / 7)


def test_match_events_frame_tolerance(scenario, tracks):
    found = events_of(tracks)
    late = found.assign(frame=found["frame"] + 1)
    assert match_events(late, scenario.truth_events, tol_px=1.0).set_index("kind").loc["all", "tp"] == 0
    scores = match_events(late, scenario.truth_events, tol_px=1.0, frame_tol=1).set_index("kind")
    assert scores.loc["all", "f1"] == 1.0
    fi, ti = pair_events(late, scenario.truth_events, tol_px=1.0, frame_tol=1)
    assert (late["kind"].to_numpy()[fi] == scenario.truth_events["kind"].to_numpy()[ti]).all()


def test_tracking_accuracy_perfect(scenario, tracks):
    truth = scenario.truth_sites
    exact = truth[truth["occupied"] | (truth["sublattice"] != "H")].assign(track_id=lambda d: d["site_id"])
    acc = tracking_accuracy(exact, truth, tol_px=1.0)
    assert (acc["completeness"], acc["purity"], acc["switch_fraction"]) == (1.0, 1.0, 0.0)
    assert acc["n_truth_sites"] == 2 * N_CELLS**2 + 1
    # The tracked scenario: perfect but for the one missed detection (the gap).
    acc = tracking_accuracy(tracks, truth, tol_px=1.0)
    n_rows = acc["n_truth_rows"]
    assert n_rows == 2 * N_CELLS**2 * T + 6
    assert acc["completeness"] == pytest.approx((n_rows - 1) / n_rows)
    assert (acc["purity"], acc["switch_fraction"], acc["tracks_per_site"], acc["observation_precision"]) == (
        1.0, 0.0, 1.0, 1.0)


def test_tracking_accuracy_corrupted(scenario, tracks):
    truth = scenario.truth_sites
    a, b = scenario.track_of(tracks, ("M", 0, 0)), scenario.track_of(tracks, ("M", 0, 1))
    bad = tracks.copy()
    late = bad["frame"] >= 4  # frames 4-8: 5 of 9
    ia, ib = late & (bad["track_id"] == a), late & (bad["track_id"] == b)
    bad.loc[ia, "track_id"], bad.loc[ib, "track_id"] = b, a
    # And lose three sites in frame 0.
    lost = (bad["frame"] == 0) & bad["source_site_id"].isin([10, 11, 12])
    bad = bad[~lost]
    acc = tracking_accuracy(bad, truth, tol_px=1.0)
    n_rows, n_sites = acc["n_truth_rows"], acc["n_truth_sites"]
    assert acc["completeness"] == pytest.approx((n_rows - 4) / n_rows)
    assert acc["purity"] == pytest.approx((n_sites - 2 + 2 * 5 / 9) / n_sites)
    assert acc["switch_fraction"] == pytest.approx(2 / n_sites)
    assert acc["tracks_per_site"] == pytest.approx((n_sites + 2) / n_sites)


def test_simulated_stack_conventions():
    """Perfect detections of a simulated series: tracks and events agree with the simulator's truth."""
    stack_mod = pytest.importorskip("napari_stem_defects.simulate.stack")
    stack = stack_mod.simulate_stack("MoS2", n_frames=8, shape=(160, 160), events_per_frame=4, clustering=0.0,
                                     dose=None, seed=0)
    a_px = stack.material.a / stack.pixel_size
    nn = a_px / np.sqrt(3.0)
    sites = stack.sites
    rng = np.random.default_rng(0)
    seen = sites[sites["inside"] & ((sites["sublattice"] != "H") | sites["occupied"])].copy()
    seen["y_px"] = seen["y_ref"] + rng.uniform(-0.3, 0.3, len(seen))
    seen["x_px"] = seen["x_ref"] + rng.uniform(-0.3, 0.3, len(seen))
    frames = [seen[seen["frame"] == t].drop(columns=["occupied"]) for t in range(stack.n_frames)]
    tracks = track_columns(frames, max_displacement_px=0.45 * nn)
    acc = tracking_accuracy(tracks, sites, tol_px=1.0)
    assert acc["completeness"] == 1.0 and acc["observation_precision"] == 1.0
    assert acc["purity"] > 0.95  # sites that leave the view for longer than max_gap get a new track
    events = detect_events(tracks, hop_distance_px=1.25 * a_px, move_threshold_px=0.3 * nn)
    truth = stack.events
    assert len(truth) >= 10
    scores = match_events(events, truth, tol_px=1.0).set_index("kind")
    assert scores.loc["all", "f1"] >= 0.85  # an unrelated emptied + filled pair one hop apart reads as a move
    fi, ti = pair_events(events, truth, tol_px=1.0)
    for col in ("sublattice", "species_before", "species_after"):
        assert (events[col].to_numpy()[fi] == truth[col].to_numpy()[ti]).all()
