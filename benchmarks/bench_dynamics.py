"""Benchmark of the image-series analysis (issue "Image stacks") on simulated stacks with known events.

Sections
--------
drift
    Rigid shift and total (rigid + non-rigid) displacement error at the columns, for our
    registration and for the peer: frame-to-frame-0 phase correlation
    (``skimage.registration.phase_cross_correlation`` on Hann-windowed frames, plain
    cross-correlation, upsample 20, rigid only).
events
    The whole pipeline (``analyze_stack``) at several doses: tracking completeness and
    identity purity, event precision/recall/F1 per kind, and how well the instability
    ranks the sites that really changed (ROC AUC) with each encoder's training time: the
    default map (the intensity change corrected for the change the neighbours share, no
    network), our autoencoder's and atomai's rVAE's code change (``--encoders``), each fused
    with the corrected change and alone, and the plain intensity-change baseline, all on the
    same registered stacks and sites.
speed
    Seconds per stage for a 50-frame 1024 x 1024 stack (``--big-frames``, ``--big-size``).

Run ``python benchmarks/bench_dynamics.py [--section drift events speed] [--seeds N]``.
Figures depend on the machine: the table header names it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from napari_stem_defects.dynamics.evaluate import match_events, tracking_accuracy
from napari_stem_defects.dynamics.instability import compute_instability, roc_auc
from napari_stem_defects.dynamics.pipeline import analyze_stack
from napari_stem_defects.dynamics.registration import register_stack
from napari_stem_defects.simulate.stack import simulate_stack

DOSES = (1e4, 1e5, 1e6)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}"


def peer_shifts(frames: np.ndarray) -> np.ndarray:
    """Rigid shifts of every frame against frame 0 by phase correlation (the peer).

    ``skimage.registration.phase_cross_correlation`` on Hann-windowed, mean-subtracted frames
    with plain cross-correlation (``normalization=None``; the default phase normalisation and an
    unwindowed border both lock onto noise or the frame edge), upsample 20.
    """
    from skimage.filters import window
    from skimage.registration import phase_cross_correlation

    taper = window("hann", frames.shape[1:])
    ref = (frames[0] - frames[0].mean()) * taper
    out = np.zeros((len(frames), 2))
    for t in range(1, len(frames)):
        # the returned shift registers frame t onto frame 0: the drift is its negative
        shift, _, _ = phase_cross_correlation(ref, (frames[t] - frames[t].mean()) * taper, upsample_factor=20,
                                              normalization=None)
        out[t] = -np.asarray(shift)
    return out


def drift_section(seeds: int, frames: int, size: int) -> pd.DataFrame:
    rows = []
    for dose in DOSES:
        for seed in range(seeds):
            twin = simulate_stack("MoS2", n_frames=frames, shape=(size, size), dose=dose, drift_step_px=1.5,
                                  warp_px=0.3, seed=100 + seed)
            first = twin.sites[(twin.sites["frame"] == 0) & twin.sites["inside"]]
            ref = first[["y_ref", "x_ref"]].to_numpy(float)
            truth = np.stack([twin.displacement(t, ref) for t in range(frames)])
            for name, shifts, reg in (("ours (rigid + non-rigid)", None, register_stack(twin.frames)),
                                      ("ours (rigid only)", None, register_stack(twin.frames, nonrigid=False)),
                                      ("peer: skimage phase correlation vs frame 0", peer_shifts(twin.frames), None)):
                if reg is not None:
                    shifts = reg.shifts
                    found = np.stack([reg.displacement(t, ref) for t in range(frames)])
                else:
                    found = shifts[:, None, :] + 0 * truth
                rigid_err = np.abs(shifts - twin.shifts).max()
                total = np.linalg.norm(found - truth, axis=2)
                rows.append({"dose": dose, "seed": seed, "method": name, "max rigid error px": rigid_err,
                             "RMS displacement error px": float(np.sqrt((total ** 2).mean())),
                             "max displacement error px": float(total.max())})
    table = pd.DataFrame(rows)
    return table.groupby(["dose", "method"], sort=False)[
        ["max rigid error px", "RMS displacement error px", "max displacement error px"]].max().reset_index()


def changed_labels(twin, site_table: pd.DataFrame, tol: float) -> np.ndarray:
    """True for the analysed sites whose truth site took part in an event."""
    truth = twin.sites[twin.sites["frame"] == 0]
    dist, idx = cKDTree(truth[["y_ref", "x_ref"]].to_numpy(float)).query(site_table[["y_px", "x_px"]].to_numpy(float))
    ids = truth["site_id"].to_numpy()[idx]
    return np.isin(ids, list(twin.changed_sites)) & (dist < tol)


def encoder_aucs(result, labels: np.ndarray, encoders: list[str], seed: int) -> dict[str, float]:
    """AUC of every instability score, and training seconds, on the analysed stack's registered frames and sites.

    ``result`` is the default analysis (no network: the instability is the
    neighbour-corrected intensity change); each encoder is then trained on
    the same registered frames and sites, as ``--encoder`` would.
    """
    table = result.site_table
    out = {"AUC default map (corrected change)": roc_auc(table["instability"].to_numpy(), labels)}
    for enc in (e for e in encoders if e != "intensity"):  # intensity: the default map and the baseline
        t0 = time.perf_counter()
        r = compute_instability(result.registration.registered, table[["y_px", "x_px"]].to_numpy(float),
                                patch_px=2.5 * result.nn_px, valid=result.registration.valid,
                                groups=table["sublattice"].to_numpy(), encoder=enc, seed=seed)
        out[f"AUC {enc} fused"] = roc_auc(r.per_site, labels)
        out[f"AUC {enc} alone"] = roc_auc(r.latent_per_site, labels)
        out[f"s {enc}"] = r.history.get("seconds", time.perf_counter() - t0)
    out["AUC intensity change (baseline)"] = roc_auc(table["intensity_change"].to_numpy(), labels)
    return out


def events_section(seeds: int, frames: int, size: int,
                   encoders: list[str] = ("autoencoder",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    event_rows, rank_rows = [], []
    for dose in DOSES:
        for seed in range(seeds):
            twin = simulate_stack("MoS2", n_frames=frames, shape=(size, size), dose=dose, seed=200 + seed)
            result = analyze_stack(twin.frames, "MoS2", twin.pixel_size, classifier=None, seed=seed)
            tol = 0.4 * result.nn_px
            scores = match_events(result.events, twin.events, tol_px=tol)
            acc = tracking_accuracy(result.tracks, twin.sites, tol_px=tol)
            for _, row in scores.iterrows():
                event_rows.append({"dose": dose, "seed": seed, **row.to_dict(),
                                   "track completeness": acc["completeness"], "track purity": acc["purity"]})
            labels = changed_labels(twin, result.site_table, tol)
            rank_rows.append({"dose": dose, "seed": seed, "changed sites": int(labels.sum()),
                              "sites": int(len(labels)), **encoder_aucs(result, labels, list(encoders), seed)})
    events = pd.DataFrame(event_rows)
    summed = events.groupby(["dose", "kind"], sort=False)[["n_found", "n_truth", "tp"]].sum()
    summed["precision"] = summed["tp"] / summed["n_found"].replace(0, np.nan)
    summed["recall"] = summed["tp"] / summed["n_truth"].replace(0, np.nan)
    summed["f1"] = 2 * summed["tp"] / (summed["n_found"] + summed["n_truth"]).replace(0, np.nan)
    tracks = events.groupby("dose")[["track completeness", "track purity"]].mean()
    summed = summed.reset_index().merge(tracks.reset_index(), on="dose")
    ranks = pd.DataFrame(rank_rows).drop(columns="seed").groupby("dose").agg(
        {c: ("sum" if c in ("changed sites", "sites") else "mean")
         for c in rank_rows[0] if c not in ("dose", "seed")}).reset_index()
    return summed, ranks


def speed_section(frames: int, size: int) -> pd.DataFrame:
    twin = simulate_stack("MoS2", n_frames=frames, shape=(size, size), dose=1e5, seed=7)
    start = time.perf_counter()
    result = analyze_stack(twin.frames, "MoS2", twin.pixel_size, classifier="physics")
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows = [{"stage": k, "seconds": v} for k, v in result.timings.items()]
    rows.append({"stage": "total", "seconds": total})
    print(f"stack {frames} x {size} x {size}: {len(result.track_features)} tracks, "
          f"{len(result.events)} events; peak RSS {peak:.1f} GB")
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", nargs="+", default=["drift", "events", "speed"],
                        choices=["drift", "events", "speed"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--encoders", nargs="+", default=["autoencoder", "rvae", "intensity"],
                        choices=["autoencoder", "rvae", "intensity"],
                        help="instability encoders compared in the events section (rvae needs atomai)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--big-frames", type=int, default=50)
    parser.add_argument("--big-size", type=int, default=1024)
    args = parser.parse_args()
    pd.set_option("display.width", 200, "display.max_columns", 20, "display.precision", 3)
    print(f"# bench_dynamics on {machine()}")
    print(f"# simulated MoS2 stacks, {args.frames} frames of {args.size}^2 px at 0.12 Å/px, "
          f"{args.seeds} seeds per dose (seeds never used in tests)\n")
    if "drift" in args.section:
        print("## Drift recovery (target: within 0.2 px)")
        print(drift_section(args.seeds, args.frames, args.size).to_string(index=False), "\n")
    if "events" in args.section:
        events, ranks = events_section(args.seeds, args.frames, args.size, args.encoders)
        print("## Tracking and events (tolerance 0.4 nn, same frame)")
        print(events.to_string(index=False), "\n")
        print("## Instability ranking of the sites that changed (ROC AUC; s: encoder training seconds)")
        print(ranks.to_string(index=False), "\n")
    if "speed" in args.section:
        print(f"## Speed, {args.big_frames} x {args.big_size}^2 stack")
        print(speed_section(args.big_frames, args.big_size).to_string(index=False))


if __name__ == "__main__":
    main()
