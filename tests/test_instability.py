"""Instability of an image series: patches, autoencoder codes, intensity baseline, map and clusters.

Ground truth: a registered stack of Gaussian columns on a 2H honeycomb with
Poisson noise, in which known sites change (columns vanish, one dims to half,
columns appear); a planted group of five changed sites near one spot and three
isolated changed sites elsewhere.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.path import Path

from napari_stem_defects.dynamics.autoencoder import (
    build_autoencoder,
    encode,
    train_autoencoder,
)
from napari_stem_defects.dynamics.clusters import (
    CLUSTER_COLUMNS,
    cluster_outline,
    dbscan,
    outlier_threshold,
    polygon_area,
    unstable_clusters,
)
from napari_stem_defects.dynamics.corrected_change import (
    TREND_NN,
    neighbour_corrected_change,
)
from napari_stem_defects.dynamics.instability import (
    BASELINE_RADIUS_PATCH,
    INSTABILITY_COLUMNS,
    compute_instability,
    instability_map,
    intensity_change,
    roc_auc,
    site_patches,
    summarize_steps,
)
from napari_stem_defects.dynamics.rvae_encoder import RVAE_LATENT_DIM
from napari_stem_defects.dynamics.site_scores import fuse_steps

NN = 10.0  # metal to chalcogen distance, px
PATCH = 2.5 * NN
EPOCHS = 20  # ~140 optimiser steps on this stack: a couple of seconds


def honeycomb_stack(shape=(192, 192), n_frames=8, sigma=1.8, peak=40.0, bg=4.0, jitter=0.15, seed=0,
                    group_centre=(70.0, 80.0), isolated=((140.0, 50.0), (130.0, 150.0), (40.0, 160.0))):
    """Frames in counts (Poisson), every honeycomb site in view, and which sites change when.

    Returns the stack, positions (n, 2), ``changed`` (n,) bool, the planted
    group's site indices, the isolated ones, and ``event_step`` (n,): the row
    of ``per_step`` holding each changed site's change (-1 for unchanged).
    """
    rng = np.random.default_rng(seed)
    a = NN * np.sqrt(3.0)
    a1 = np.array([0.0, a])
    a2 = np.array([-a * np.sin(np.pi / 3), a * np.cos(np.pi / 3)])
    pts, metal = [], []
    for i in range(-20, 21):
        for j in range(-20, 21):
            m = np.array([5.0, 3.0]) + i * a1 + j * a2
            for p, is_m in ((m, True), (m + (a1 + a2) / 3, False)):
                if -0.5 <= p[0] <= shape[0] - 0.5 and -0.5 <= p[1] <= shape[1] - 0.5:
                    pts.append(p)
                    metal.append(is_m)
    pos = np.array(pts)
    n = len(pos)
    amp = np.where(metal, 1.0, 0.45)[None].repeat(n_frames, 0)  # (T, n)
    event = np.full(n, -1)
    inner = np.flatnonzero((pos.min(axis=1) > 16) & (pos[:, 0] < shape[0] - 16) & (pos[:, 1] < shape[1] - 16))
    group = inner[np.argsort(np.linalg.norm(pos[inner] - group_centre, axis=1))[:5]]
    for site, frame, kind in zip(group, (3, 3, 4, 4, 5), ("vanish", "vanish", "vanish", "dim", "appear")):
        if kind == "vanish":
            amp[frame:, site] = 0.0
        elif kind == "dim":
            amp[frame:, site] *= 0.5
        else:
            amp[:frame, site] = 0.0
        event[site] = frame - 1
    iso = np.array([inner[np.argmin(np.linalg.norm(pos[inner] - c, axis=1))] for c in isolated])
    amp[2:, iso[0]] = 0.0
    amp[5:, iso[1]] *= 0.5
    amp[:4, iso[2]] = 0.0
    event[iso] = (1, 4, 3)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    frames = []
    for t in range(n_frames):
        img = np.full(shape, bg)
        p = pos + rng.normal(0, jitter, pos.shape)
        for (y, x), amplitude in zip(p, amp[t]):
            if amplitude == 0:
                continue
            y0, y1 = max(0, int(y) - 8), min(shape[0], int(y) + 9)
            x0, x1 = max(0, int(x) - 8), min(shape[1], int(x) + 9)
            img[y0:y1, x0:x1] += peak * amplitude * np.exp(
                -((yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2) / (2 * sigma ** 2))
        frames.append(rng.poisson(img).astype(np.float32))
    return np.stack(frames), pos, event >= 0, group, iso, event


@pytest.fixture(scope="module")
def series():
    stack, pos, changed, group, iso, event = honeycomb_stack()
    result = compute_instability(stack, pos, encoder="autoencoder", patch_px=PATCH, epochs=EPOCHS, seed=0)
    return {"stack": stack, "pos": pos, "changed": changed, "group": group, "iso": iso, "event": event,
            "result": result}


def _brute_auc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return wins / (len(pos) * len(neg))


def test_roc_auc_against_hand_and_pairwise_counts():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered right
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.random(200) < 0.3
    assert roc_auc(s, y) == pytest.approx(_brute_auc(s, y))
    assert np.isnan(roc_auc([1.0, 2.0], [1, 1]))
    # NaN scores rank below every finite score
    assert roc_auc([np.nan, 0.0], [1, 0]) == 0.0


def test_site_patches_subpixel_centred_and_invalid_where_outside_or_nan():
    yy, xx = np.mgrid[:64, :64]
    centre = (30.37, 25.81)
    frame = 10 + 100 * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 2.0 ** 2))
    stack = np.stack([frame, frame, 10 + 0.5 * (frame - 10)]).astype(np.float32)
    stack[1, 50:54, 50:54] = np.nan
    pos = np.array([centre, [52.0, 52.0], [3.0, 30.0], [np.nan, 5.0]])
    patches, ok = site_patches(stack, pos, 16, side=16)
    assert patches.shape == (3, 4, 16, 16)
    assert ok.tolist() == [[True, True, False, False], [True, False, False, False], [True, True, False, False]]
    assert np.isnan(patches[~ok]).all() and np.isfinite(patches[ok]).all()
    # the blob sits at the patch centre to sub-pixel precision
    p = patches[0, 0] - patches[0, 0].min()
    g = np.arange(16) - 7.5
    assert abs((p.sum(1) * g).sum() / p.sum()) < 0.05 and abs((p.sum(0) * g).sum() / p.sum()) < 0.05
    # one normalisation for the whole stack: the dimmed frame stays dimmer
    contrast = patches[:, 0].max(axis=(1, 2)) - patches[:, 0].min(axis=(1, 2))
    assert contrast[2] / contrast[0] == pytest.approx(0.5, abs=0.02)
    # an untrusted-pixel mask counts like NaN
    mask = np.ones((64, 64), bool)
    mask[28:33, 24:28] = False
    _, ok2 = site_patches(stack, pos, 16, side=16, valid=mask)
    assert not ok2[:, 0].any()


def test_autoencoder_ranks_changed_sites_and_finds_the_event_frame(series):
    r, changed, event = series["result"], series["changed"], series["event"]
    n_t = series["stack"].shape[0]
    assert r.per_step.shape == (n_t - 1, len(series["pos"])) and r.latents.shape[:2] == (n_t, len(series["pos"]))
    assert r.latents.shape[2] == 6 and r.per_site.shape == (len(series["pos"]),)
    ok = np.isfinite(r.per_site)
    assert ok[changed].all() and ok.sum() > 150
    # every column whose full patch stays in view has a finite score; those at the border do not
    assert np.array_equal(ok, r.valid.all(axis=0))
    auc = roc_auc(r.per_site[ok], changed[ok])
    auc_base = roc_auc(r.baseline_per_site[ok], changed[ok])
    assert auc > 0.9, auc
    assert auc_base > 0.9, auc_base
    # normalised: the typical step is 1
    assert np.nanmedian(r.per_step) == pytest.approx(1.0)
    # the largest step of a changed site is the step of its event
    hit = [np.nanargmax(r.per_step[:, i]) == event[i] for i in np.flatnonzero(changed)]
    assert sum(hit) >= len(hit) - 1, hit
    hit_base = [np.nanargmax(r.baseline_per_step[:, i]) == event[i] for i in np.flatnonzero(changed)]
    assert all(hit_base), hit_base
    assert set(r.table().columns) >= {"y_px", "x_px", "instability", "intensity_change"}


def test_intensity_baseline_sees_the_same_changes(series):
    per_step, per_site = intensity_change(series["stack"], series["pos"], 3.0)
    ok = np.isfinite(per_site)
    assert roc_auc(per_site[ok], series["changed"][ok]) > 0.9
    assert np.allclose(per_site, summarize_steps(per_step), equal_nan=True)


def test_instability_map_peaks_where_the_changes_are(series):
    r, pos, changed = series["result"], series["pos"], series["changed"]
    shape = series["stack"].shape[1:]
    m = instability_map(shape, pos, r.per_site, sigma_px=0.5 * NN)
    assert m.shape == shape and m.dtype == np.float32
    peak = np.array(np.unravel_index(np.argmax(m), shape))
    assert np.linalg.norm(pos[changed] - peak, axis=1).min() < NN
    # far from every change (> 3 nn) the map stays well below its peak
    far = np.linalg.norm(pos[:, None] - pos[changed][None], axis=2).min(axis=1) > 3 * NN
    yx = np.rint(pos[far & np.isfinite(r.per_site)]).astype(int)
    assert m[yx[:, 0], yx[:, 1]].max() < 0.5 * m.max()


def test_instability_map_lone_site_peaks_at_its_value():
    m = instability_map((40, 50), [[10, 10], [30, 40], [20, 25]], [3.0, 0.25, np.nan], 2.0)
    assert m[10, 10] == pytest.approx(3.0) and m[30, 40] == pytest.approx(0.25)
    assert m[20, 25] == pytest.approx(0.0, abs=1e-6) and m.min() >= 0


def test_clusters_around_the_planted_group_and_nowhere_else(series):
    r, pos, changed, group = series["result"], series["pos"], series["changed"], series["group"]
    c = unstable_clusters(pos, r.per_site, eps_px=2.0 * NN, min_samples=3, pixel_size_A=0.18)
    assert list(c.table.columns) == list(CLUSTER_COLUMNS) and len(c.polygons) == len(c.table)
    assert c.threshold == pytest.approx(outlier_threshold(r.per_site))
    labels = c.labels[group]
    assert (labels >= 0).all() and len(set(labels)) == 1, labels
    k = int(labels[0])
    assert Path(c.polygons[k]).contains_points(pos[group]).all()
    assert c.table.n_sites[k] == (c.labels == k).sum() >= 5
    # no cluster without a real change in it, and each centred on the changes (a noisy site at the
    # threshold may join a cluster as a border site, so single members are not checked)
    for cid in c.table.cluster_id:
        members = c.labels == cid
        assert (members & changed).any()
        centroid = c.table.loc[cid, ["centroid_y_px", "centroid_x_px"]].to_numpy(float)
        assert np.linalg.norm(pos[changed] - centroid, axis=1).min() < 2 * NN
    clustered = np.flatnonzero(c.labels >= 0)
    dist = np.linalg.norm(pos[clustered][:, None] - pos[changed][None], axis=2).min(axis=1)
    assert np.mean(dist <= NN + 0.5) >= 0.8, dist  # the changed sites and their first neighbours
    row = c.table.iloc[k]
    assert row.area_nm2 == pytest.approx(row.area_px2 * 0.018 ** 2)
    assert row.max_instability == pytest.approx(np.nanmax(r.per_site[c.labels == k]))


def test_cluster_area_of_a_square_and_degenerate_clusters():
    # 2 x 2 sites on a 10 px square, plus three collinear sites and one lone site
    pos = np.array([[0, 0], [0, 10], [10, 0], [10, 10], [60, 0], [60, 8], [60, 16], [100, 100]], float)
    inst = np.array([4, 5, 6, 7, 3, 3, 3, 9], float)
    c = unstable_clusters(pos, inst, threshold=2.0, eps_px=12.0, pixel_size_A=(0.2, 0.25))
    assert c.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, -1]
    r = 6.0  # eps / 2
    disc = 16 * r ** 2 * np.sin(2 * np.pi / 32)  # regular 32-gon of circumradius r
    square = 10 * 10 + 4 * 10 * r + disc  # Minkowski sum: area + perimeter * r + disc (vertices on the axes)
    segment = 16 * 2 * r + disc
    assert c.table.area_px2.tolist() == pytest.approx([square, segment])
    assert c.table.area_nm2.tolist() == pytest.approx([square * 0.05 / 100, segment * 0.05 / 100])
    assert c.table.centroid_y_px.tolist() == pytest.approx([5.0, 60.0])
    assert c.table.mean_instability.tolist() == pytest.approx([5.5, 3.0])
    assert Path(c.polygons[1]).contains_points(pos[4:7]).all()
    # min_samples=1: the lone site is a cluster of its own with the disc's area; no pixel size -> NaN
    c1 = unstable_clusters(pos, inst, threshold=2.0, eps_px=12.0, min_samples=1)
    lone = c1.labels[7]
    assert c1.table.area_px2[lone] == pytest.approx(disc) and np.isnan(c1.table.area_nm2).all()
    # nothing unstable: an empty table with the right columns
    none = unstable_clusters(pos, np.ones(len(pos)), eps_px=12.0)
    assert none.table.empty and list(none.table.columns) == list(CLUSTER_COLUMNS)
    assert (none.labels == -1).all() and none.polygons == []


def test_outline_contains_its_points_and_default_threshold():
    pts = np.random.default_rng(0).normal(0, 5, (30, 2))
    poly = cluster_outline(pts, 2.0)
    assert Path(poly).contains_points(pts).all() and polygon_area(poly) > 0
    vals = np.r_[np.random.default_rng(1).normal(1.0, 0.1, 500), 5.0, 6.0]
    thr = outlier_threshold(vals)
    assert 1.2 < thr < 1.5  # about median + 3 sigma, not pulled up by the outliers
    assert outlier_threshold([np.nan]) == np.inf


def test_dbscan_core_components_match_brute_force():
    rng = np.random.default_rng(5)
    pts = np.r_[rng.normal(0, 3, (20, 2)), rng.normal(40, 3, (20, 2)), rng.uniform(-20, 60, (15, 2))]
    eps, k = 4.0, 4
    labels = dbscan(pts, eps, k)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    core = (d <= eps).sum(1) >= k
    for i in range(len(pts)):
        for j in range(len(pts)):
            if core[i] and core[j] and d[i, j] <= eps:
                assert labels[i] == labels[j] >= 0
    border = ~core & ((d <= eps) & core[None]).any(1)
    assert (labels[core | border] >= 0).all() and (labels[~(core | border)] == -1).all()


def test_same_seed_same_result_and_nan_frames_handled():
    stack, pos, *_ = honeycomb_stack(shape=(128, 128), n_frames=4, seed=1, group_centre=(60.0, 60.0),
                                     isolated=((100.0, 30.0), (30.0, 100.0), (100.0, 100.0)))
    stack[2, 40:80, 40:80] = np.nan  # a hole in frame 2
    a = compute_instability(stack, pos, encoder="autoencoder", patch_px=PATCH, epochs=3, seed=4)
    b = compute_instability(stack, pos, encoder="autoencoder", patch_px=PATCH, epochs=3, seed=4)
    c = compute_instability(stack, pos, encoder="autoencoder", patch_px=PATCH, epochs=3, seed=5)
    assert np.array_equal(a.per_site, b.per_site, equal_nan=True)
    assert np.array_equal(a.latents, b.latents, equal_nan=True)
    assert not np.allclose(a.latents[a.valid], c.latents[c.valid])
    in_hole = np.flatnonzero((np.abs(pos - 60) < 10).all(axis=1))
    assert len(in_hole) and not a.valid[2, in_hole].any() and a.valid[[0, 1, 3]][:, in_hole].all()
    # steps 1 (1->2) and 2 (2->3) are undefined there; step 0 still counts
    assert np.isnan(a.per_step[1:3, in_hole]).all() and np.isfinite(a.per_site[in_hole]).all()
    assert np.isnan(a.baseline_per_step[1:3, in_hole]).all()
    assert np.isnan(a.latents[2, in_hole]).all()


def test_cancel_raises_interrupted_error():
    stack, pos, *_ = honeycomb_stack(shape=(96, 96), n_frames=3, group_centre=(48.0, 48.0),
                                     isolated=((30.0, 30.0), (30.0, 70.0), (70.0, 30.0)))
    calls = []

    def cancel_later():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(InterruptedError):
        compute_instability(stack, pos, encoder="autoencoder", patch_px=PATCH, epochs=50, cancel=cancel_later)
    with pytest.raises(InterruptedError):
        train_autoencoder(np.zeros((10, 8, 8), np.float32), epochs=2, cancel=lambda: True)


def test_train_and_encode_shapes_progress_and_checks():
    rng = np.random.default_rng(0)
    patches = rng.normal(0, 1, (64, 16, 16)).astype(np.float32)
    seen = []
    model = train_autoencoder(patches, latent_dim=3, epochs=2, batch_size=32, seed=0,
                              progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (4, 4) and model.history["steps"] == 4
    z = encode(model, patches)
    assert z.shape == (64, 3) and z.dtype == np.float32 and np.isfinite(z).all()
    import torch

    assert build_autoencoder(24, 5)(torch.zeros(2, 1, 24, 24)).shape == (2, 1, 24, 24)
    with pytest.raises(ValueError):
        train_autoencoder(np.full((4, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError):
        encode(model, np.zeros((2, 24, 24), np.float32))


def test_modules_import_without_torch():
    code = ("import sys; import napari_stem_defects.dynamics.instability, napari_stem_defects.dynamics.clusters, "
            "napari_stem_defects.dynamics.autoencoder; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fused_score_ranks_at_least_as_well_as_each_measure_and_keeps_both(series):
    r, changed = series["result"], series["changed"]
    ok = np.isfinite(r.per_site)
    assert r.encoder == "autoencoder" and r.score == "fused"
    # the fused steps are the normalised geometric mean of the code's and the corrected change's step tables
    assert np.allclose(r.per_step, fuse_steps(r.latent_per_step, r.corrected_per_step), equal_nan=True)
    assert np.nanmedian(r.per_step) == pytest.approx(1.0) and np.nanmedian(r.latent_per_step) == pytest.approx(1.0)
    fused, latent, base = (roc_auc(v[ok], changed[ok]) for v in (r.per_site, r.latent_per_site, r.baseline_per_site))
    assert fused >= max(latent, base) - 0.01, (fused, latent, base)
    table = r.table()
    assert list(table.columns) == list(INSTABILITY_COLUMNS)
    assert np.allclose(table["latent_change"], r.latent_per_site, equal_nan=True)


def test_default_is_the_corrected_change_without_a_network_and_bad_choices_are_value_errors(series):
    stack, pos = series["stack"], series["pos"]
    r = compute_instability(stack, pos, patch_px=PATCH)
    assert r.encoder == "intensity" and r.score == "corrected"
    radius = BASELINE_RADIUS_PATCH * PATCH
    corrected = neighbour_corrected_change(stack, pos, radius, TREND_NN * NN)
    assert np.allclose(r.per_step, corrected, equal_nan=True)
    assert np.allclose(r.per_site, np.nanmax(corrected, axis=0), equal_nan=True)
    _, base = intensity_change(stack, pos, radius)
    assert np.allclose(r.baseline_per_site, base, equal_nan=True) and r.latents.shape == (stack.shape[0], len(pos), 0)
    assert np.isnan(r.latent_per_site).all()
    assert np.allclose(r.table()["corrected_change"], r.per_site, equal_nan=True)
    with pytest.raises(ValueError, match="encoder"):
        compute_instability(stack, pos, patch_px=PATCH, encoder="pca")
    with pytest.raises(ValueError, match="score"):
        compute_instability(stack, pos, patch_px=PATCH, score="best")
    with pytest.raises(ValueError, match="needs the code of an encoder"):
        compute_instability(stack, pos, patch_px=PATCH, score="fused")


def test_rvae_encoder_codes_the_patches_and_its_fused_score_ranks_the_changes():
    pytest.importorskip("atomai")
    stack, pos, changed, *_ = honeycomb_stack(shape=(128, 128), n_frames=5, seed=2, group_centre=(60.0, 60.0),
                                              isolated=((100.0, 30.0), (30.0, 100.0), (100.0, 100.0)))
    r = compute_instability(stack, pos, patch_px=PATCH, encoder="rvae", epochs=3, seed=0)
    assert r.encoder == "rvae" and r.latents.shape == (5, len(pos), RVAE_LATENT_DIM)
    assert np.isfinite(r.latents[r.valid]).all() and np.isnan(r.latents[~r.valid]).all()
    assert r.history["encoder"] == "rvae" and r.history["epochs"] == 3
    ok = np.isfinite(r.per_site)
    assert ok[changed].all()
    assert roc_auc(r.per_site[ok], changed[ok]) > 0.9
