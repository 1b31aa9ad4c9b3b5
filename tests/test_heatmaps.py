"""The pure heatmap functions: seamless tiling, ground-truth maps, regions, scores, engines, layers.

No Qt. Tiling and structure tests use random-initialised networks
(``torch.manual_seed``) on small images (~150 px); the accuracy tests at the
end use the packaged weights on twins with known defects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from napari_stem_defects.heatmaps.classes import HEATMAP_CLASSES, defect_sites, site_families, target_maps
from napari_stem_defects.heatmaps.engines import (
    MAX_SIDE,
    PATCH_NN_RANGE,
    HeatmapResult,
    binary_entropy,
    check_image,
    compute_heatmaps,
    resolve_window,
)
from napari_stem_defects.heatmaps.evaluate import PIXEL_TARGET_NN, localisation_counts, scores
from napari_stem_defects.heatmaps.layers import REGION_COLOURS, heatmap_layers, region_shapes
from napari_stem_defects.heatmaps.regions import (
    MIN_AREA_NN2, REGION_COLUMNS, find_regions, min_region_px, region_boxes,
)
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.tiling import predict_dense, predict_windows

torch = pytest.importorskip("torch")

#: MoS2 at 0.12 Å per pixel: nn = a / sqrt(3) / 0.12 ~ 15.2 px.
PIXEL_SIZE = 0.12


@pytest.fixture(scope="module")
def twin():
    """A small noise-free MoS2 twin with defects of every family."""
    return simulate_twin(
        "MoS2", shape=(160, 150), pixel_size=PIXEL_SIZE, rotation_deg=10.0,
        defects={"V_M": 0.08, "V_X2": 0.08, "adatom": 0.05, "M_X": 0.05, "dopant_M": 0.05},
        imaging=ImagingParams(dose=None), seed=3,
    )


@pytest.fixture(scope="module")
def nn_px(twin):
    return twin.material.a / np.sqrt(3) / PIXEL_SIZE


@pytest.fixture(scope="module")
def noise_image():
    return np.random.default_rng(0).normal(size=(150, 141)).astype(np.float32)


@pytest.fixture(scope="module")
def context():
    return np.random.default_rng(1).normal(size=6).astype(np.float32)


class _Amplified(torch.nn.Module):
    """A random network whose logits are standardised with fixed per-channel constants.

    A freshly initialised network gives nearly constant outputs, so a tiling bug
    would hide under the 1e-5 tolerance; standardising the logits (with
    constants measured once on the whole image, so the network stays local and
    tile-independent) spreads the sigmoid over (0, 1).
    """

    def __init__(self, net, x, context, spread=0.5):
        super().__init__()
        self.net = net
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(x[None, None, : x.shape[0] // 8 * 8,
                                                                  : x.shape[1] // 8 * 8])),
                         torch.from_numpy(context[None]))
        self.mu = logits.mean(dim=(0, 2, 3), keepdim=True)
        self.scale = logits.std(dim=(0, 2, 3), keepdim=True) / spread

    def forward(self, x, context):
        return (self.net(x, context) - self.mu) / self.scale


@pytest.fixture(scope="module")
def patch_net(noise_image, context):
    from napari_stem_defects.heatmaps.networks import build_patch_net

    torch.manual_seed(0)
    return _Amplified(build_patch_net().eval(), noise_image, context).eval()


@pytest.fixture(scope="module")
def unet(noise_image, context):
    from napari_stem_defects.heatmaps.networks import build_attention_unet

    torch.manual_seed(1)
    return _Amplified(build_attention_unet().eval(), noise_image, context).eval()


# --------------------------------------------------------------------------- tiling


def test_predict_windows_is_the_patch_classifier_on_every_window_whatever_the_block(patch_net, noise_image, context):
    x = noise_image
    whole = predict_windows(patch_net, x, window=64, stride=8, context=context)
    assert whole.shape == (5, -(-x.shape[0] // 8), -(-x.shape[1] // 8)) and whole.dtype == np.float32
    assert whole.std(axis=(1, 2)).min() > 0.05  # the maps vary, so a mis-placed window would show
    for block in (3, 4, 7):
        tiled = predict_windows(patch_net, x, window=64, stride=8, block=block, context=context)
        assert np.abs(tiled - whole).max() < 1e-5, block
    # window (i, j) is the 64 x 64 crop centred on pixel (8 i, 8 j) of the image reflected by 32
    padded = np.pad(x, 32, mode="symmetric")
    last = (whole.shape[1] - 1, whole.shape[2] - 1)
    for i, j in [(0, 0), (7, 11), (3, last[1]), last]:
        crop = np.ascontiguousarray(padded[8 * i : 8 * i + 64, 8 * j : 8 * j + 64])
        assert crop.shape == (64, 64)
        with torch.no_grad():
            direct = torch.sigmoid(patch_net(torch.from_numpy(crop[None, None]), torch.from_numpy(context[None])))
        assert direct.shape == (1, 5, 1, 1)
        np.testing.assert_allclose(whole[:, i, j], direct.numpy()[0, :, 0, 0], atol=1e-5)


def test_predict_dense_does_not_depend_on_the_tile_size(unet, noise_image, context):
    x = noise_image
    one = predict_dense(unet, x, tile=512, context=context)
    assert one.shape == (5, *x.shape) and one.dtype == np.float32
    assert one.std(axis=(1, 2)).min() > 0.05
    many = predict_dense(unet, x, tile=192, context=context)  # 3 x 3 tiles of 64 px
    assert np.abs(many - one).max() < 1e-5
    # the comparison has teeth: a margin below the receptive field leaves seams
    seams = predict_dense(unet, x, tile=192, margin=8, context=context)
    assert np.abs(seams - one).max() > 1e-3


def test_tiling_reports_progress_and_honours_cancel(patch_net, noise_image, context):
    seen = []
    predict_windows(patch_net, noise_image, window=64, stride=8, block=4, context=context, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == 25
    with pytest.raises(InterruptedError):
        predict_windows(patch_net, noise_image, window=64, stride=8, context=context, cancel=lambda: True)
    with pytest.raises(InterruptedError):
        predict_dense(patch_net, noise_image, context=context, cancel=lambda: True)


# --------------------------------------------------------------------------- ground truth


def _sites(rows):
    return pd.DataFrame(rows, columns=["y_px", "x_px", "defect"])


def _disc(shape, y, x, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


@pytest.mark.parametrize("r", [1.0, 2.0, 2.5, 3.3, 7.6])
@pytest.mark.parametrize("centre", [(30.0, 40.0), (30.3, 40.7), (30.5, 40.5)])
def test_target_maps_draws_discs_of_the_radius(r, centre):
    shape = (64, 80)
    maps = target_maps(_sites([(*centre, "V_M")]), shape, r)
    assert maps.shape == (len(HEATMAP_CLASSES), *shape) and maps.dtype == bool
    expected = _disc(shape, *centre, r)
    np.testing.assert_array_equal(maps[HEATMAP_CLASSES.index("vacancy")], expected)
    np.testing.assert_array_equal(maps[0], expected)
    for name in ("antisite", "adatom", "substitution"):
        assert not maps[HEATMAP_CLASSES.index(name)].any()


def test_target_maps_families():
    labels = ["none", "V_X1", "V_X2", "V_M", "M_X", "X_M", "adatom", "dopant_M", "sub_X"]
    family = {"V_X1": "vacancy", "V_X2": "vacancy", "V_M": "vacancy", "M_X": "antisite", "X_M": "antisite",
              "adatom": "adatom", "dopant_M": "substitution", "sub_X": "substitution"}
    shape = (20, 20 * len(labels))
    sites = _sites([(10.0, 10.0 + 20 * k, lab) for k, lab in enumerate(labels)])
    maps = target_maps(sites, shape, 3.0)
    for k, lab in enumerate(labels):
        block = maps[:, :, 20 * k : 20 * (k + 1)]
        on = {HEATMAP_CLASSES[c] for c in range(len(HEATMAP_CLASSES)) if block[c].any()}
        assert on == (set() if lab == "none" else {"defect", family[lab]}), lab
    # the defect map is the union of the families
    np.testing.assert_array_equal(maps[0], maps[1:].any(axis=0))
    np.testing.assert_array_equal(site_families(np.array(labels))[:, 0], np.array(labels) != "none")


def test_target_maps_clips_discs_at_the_image_border():
    shape = (40, 50)
    sites = _sites([(0.0, 0.0, "adatom"), (-1.2, 25.0, "adatom"), (39.6, 49.4, "adatom"), (-30.0, 10.0, "adatom")])
    maps = target_maps(sites, shape, 4.0)
    expected = _disc(shape, 0.0, 0.0, 4.0) | _disc(shape, -1.2, 25.0, 4.0) | _disc(shape, 39.6, 49.4, 4.0)
    np.testing.assert_array_equal(maps[HEATMAP_CLASSES.index("adatom")], expected)
    assert int(maps[0, :2, :3].sum()) == 6  # a quarter disc in the corner


# --------------------------------------------------------------------------- regions


def _blobs(shape=(120, 130)):
    """Gaussian blobs per channel: isolated, merging, touching the border, tiny."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)

    def g(y, x, s, a=1.0):
        return a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))

    maps = np.zeros((5, *shape), np.float32)
    maps[0] = g(30, 30, 6) + g(30, 44, 5, 0.8) + g(90, 100, 8, 0.95) + g(2, 125, 5, 0.7)
    maps[1] = g(60, 60, 10, 0.9) + g(100, 20, 3, 0.6)
    maps[2] = g(10, 10, 1.0, 0.55)
    maps[4] = g(70, 110, 7, 0.45)  # never above 0.5
    return np.clip(maps, 0, 1)


def _region_masks(regions, name):
    """Label image and ids of one family's regions."""
    c = HEATMAP_CLASSES.index(name)
    ids = regions.table.loc[regions.table["class"] == name, "region_id"].tolist()
    return regions.labels[c], ids


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_regions_are_the_connected_parts_above_the_threshold(threshold):
    maps = _blobs()
    regions = find_regions(maps, threshold, pixel_size=0.2)
    table = regions.table
    assert list(table.columns) == list(REGION_COLUMNS)
    assert table["region_id"].tolist() == list(range(1, len(table) + 1))
    assert len(regions.contours) == len(table)
    assert regions.labels.shape == maps.shape and regions.labels.dtype == np.int32
    for c, name in enumerate(HEATMAP_CLASSES):
        above = maps[c] >= threshold
        lab, ids = _region_masks(regions, name)
        np.testing.assert_array_equal(lab > 0, above)
        assert set(np.unique(lab[lab > 0]).tolist()) == set(ids)
        assert len(ids) == ndimage.label(above)[1]
    assert ((table["class"] == "substitution").sum() == 0) == (threshold > 0.45)


def test_region_features_contours_and_boxes():
    maps = _blobs()
    regions = find_regions(maps, 0.5, pixel_size=(0.1, 0.2))
    shape = maps.shape[1:]
    assert len(regions.table) >= 5
    for row, contour in zip(regions.table.itertuples(index=False), regions.contours):
        c = HEATMAP_CLASSES.index(row[1])
        mask = regions.labels[c] == row.region_id
        assert ndimage.label(mask)[1] == 1
        values = maps[c][mask]
        assert row.area_px == mask.sum()
        assert row.area_nm2 == pytest.approx(row.area_px * 0.1 * 0.2 / 100)
        assert row.max_probability == pytest.approx(values.max())
        assert row.mean_probability == pytest.approx(values.mean(), rel=1e-5)
        ys, xs = np.nonzero(mask)
        # half-open box, tight around the region
        assert (row.bbox_y0_px, row.bbox_x0_px, row.bbox_y1_px, row.bbox_x1_px) == (
            ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        assert row.bbox_y0_px <= row.y_px < row.bbox_y1_px and row.bbox_x0_px <= row.x_px < row.bbox_x1_px
        # the outline, rasterised, covers exactly the region's pixels (within 1 px of its edge)
        assert contour.ndim == 2 and contour.shape[1] == 2
        assert np.allclose(contour[0], contour[-1])  # closed
        inside = np.zeros(shape, bool)
        inside[draw_polygon(contour[:, 0], contour[:, 1], shape)] = True
        differ = inside ^ mask
        edge = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        assert not (differ & ~edge).any()
        assert differ.sum() <= 0.1 * mask.sum()
        # the outline runs between the region's pixel centres and its neighbours'
        assert contour[:, 0].min() >= row.bbox_y0_px - 0.5 and contour[:, 0].max() <= row.bbox_y1_px - 0.5
        assert contour[:, 1].min() >= row.bbox_x0_px - 0.5 and contour[:, 1].max() <= row.bbox_x1_px - 0.5
    for box, row in zip(region_boxes(regions.table), regions.table.itertuples(index=False)):
        assert box.shape == (4, 2)
        assert box[:, 0].min() == row.bbox_y0_px - 0.5 and box[:, 1].max() == row.bbox_x1_px - 0.5


def test_raising_the_threshold_never_adds_region_pixels():
    maps = _blobs()
    previous = None
    for threshold in np.linspace(0.05, 1.0, 12):
        regions = find_regions(maps, float(threshold))
        covered = regions.labels > 0
        if previous is not None:
            assert not (covered & ~previous).any()
            assert covered.sum() <= previous.sum()
        assert regions.table["area_px"].sum() == covered.sum()
        previous = covered


def test_region_areas_pixel_size_min_area_and_bad_input():
    maps = _blobs()
    plain = find_regions(maps, 0.5)
    assert plain.table["area_nm2"].isna().all() and len(plain.table)
    scalar = find_regions(maps, 0.5, pixel_size=0.25)
    np.testing.assert_allclose(scalar.table["area_nm2"], scalar.table["area_px"] * 0.25**2 / 100)
    tiny = plain.table["area_px"].min()
    bigger = find_regions(maps, 0.5, min_area_px=tiny + 1)
    assert len(bigger.table) < len(plain.table) and bigger.table["area_px"].min() > tiny
    assert set(np.unique(bigger.labels[bigger.labels > 0])) == set(bigger.table["region_id"])
    empty = find_regions(np.zeros((5, 10, 12), np.float32), 0.5, pixel_size=0.1)
    assert list(empty.table.columns) == list(REGION_COLUMNS) and len(empty.table) == 0 and not empty.contours
    assert all(empty.table[c].dtype == float for c in ("y_px", "area_nm2", "max_probability", "mean_probability"))
    with pytest.raises(ValueError, match="shape"):
        find_regions(maps[:3], 0.5)
    with pytest.raises(ValueError, match="threshold"):
        find_regions(maps, 0.0)


# --------------------------------------------------------------------------- scores


def test_maps_on_every_true_defect_score_perfectly(twin, nn_px):
    truth = target_maps(twin.sites, twin.image.shape, PIXEL_TARGET_NN * nn_px)
    counts = localisation_counts(truth.astype(np.float32), twin.sites, nn_px)
    table = scores(counts)
    present = [name for name in HEATMAP_CLASSES if counts[name]["sites"] > 0]
    assert set(present) == set(HEATMAP_CLASSES)  # the twin has every family
    for name in present:
        assert table.loc[name, "region_precision"] == 1.0
        assert table.loc[name, "region_recall"] == 1.0
        assert table.loc[name, "pixel_iou"] == 1.0 and table.loc[name, "pixel_f1"] == 1.0
        assert counts[name]["fp_px"] == counts[name]["fn_px"] == 0


def test_a_blob_in_the_wrong_place_scores_zero_precision(twin, nn_px):
    sites = twin.sites
    defective = sites.loc[sites["defect"] != "none", ["y_px", "x_px"]].to_numpy()
    h, w = twin.image.shape
    candidates = sites.loc[(sites["defect"] == "none") & sites["y_px"].between(10, h - 10)
                           & sites["x_px"].between(10, w - 10), ["y_px", "x_px"]].to_numpy()
    far = np.linalg.norm(candidates[:, None] - defective[None], axis=2).min(axis=1)
    y, x = candidates[np.argmax(far)]
    assert far.max() > 1.5 * nn_px
    yy, xx = np.mgrid[:h, :w]
    maps = np.zeros((5, h, w), np.float32)
    maps[0] = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * (0.45 * nn_px) ** 2))  # a defect-sized blob
    counts = localisation_counts(maps, sites, nn_px)
    table = scores(counts)
    assert counts["defect"]["regions"] == 1 and counts["defect"]["regions_correct"] == 0
    assert table.loc["defect", "region_precision"] == 0.0 and table.loc["defect", "region_recall"] == 0.0
    assert table.loc["defect", "pixel_iou"] == 0.0
    assert np.isnan(table.loc["vacancy", "region_precision"])  # no regions at all


def test_smallest_region_drops_specks_and_keeps_every_defect(twin, nn_px):
    """Specks of a few pixels away from the defects are false regions; the default smallest
    region (0.6 nn^2) drops them and keeps every point defect's disc."""
    truth = target_maps(twin.sites, twin.image.shape, PIXEL_TARGET_NN * nn_px).astype(np.float32)
    yx, _ = defect_sites(twin.sites)
    h, w = twin.image.shape
    rng = np.random.default_rng(3)
    maps, specks = truth.copy(), 0
    for y, x in rng.uniform([2, 2], [h - 4, w - 4], (200, 2)).astype(int):
        if np.hypot(*(yx - (y, x)).T).min() > 1.5 * nn_px and specks < 20:
            maps[:, y : y + 2, x : x + 2] = 0.9  # 4 px, far below 0.6 nn^2
            specks += 1
    assert specks == 20 and min_region_px(nn_px) > 4
    everything = scores(localisation_counts(maps, twin.sites, nn_px, min_area_nn2=0.0))
    default = scores(localisation_counts(maps, twin.sites, nn_px))
    assert everything.loc["defect", "region_precision"] < 0.9
    assert default.loc["defect", "region_precision"] == 1.0 and default.loc["defect", "region_recall"] == 1.0
    assert (default["region_f1"].dropna() == 1.0).all()
    assert min_region_px(nn_px) == int(np.ceil(MIN_AREA_NN2 * nn_px**2))
    with pytest.raises(ValueError, match="non-negative"):
        min_region_px(nn_px, -1.0)


# --------------------------------------------------------------------------- engines


def test_check_image_says_what_is_wrong():
    with pytest.raises(ValueError, match="single 2D image"):
        check_image(np.zeros((2, 100, 100)), 10.0)
    with pytest.raises(ValueError, match="no finite values"):
        check_image(np.full((100, 100), np.nan), 10.0)
    with pytest.raises(ValueError, match="fewer than 6 atom spacings"):
        check_image(np.zeros((50, 200)), 10.0)
    with pytest.raises(ValueError, match=f"larger than {MAX_SIDE}"):
        check_image(np.broadcast_to(np.float32(0), (64, MAX_SIDE + 1)), 10.0)
    with pytest.raises(ValueError, match="lattice spacing"):
        check_image(np.zeros((100, 100)), float("nan"))
    img = np.arange(100.0 * 100).reshape(100, 100)
    img[3, 4] = np.nan
    out = check_image(img, 10.0)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out[3, 4] == np.float32(np.median(img[np.isfinite(img)]))  # NaN becomes the median


def test_resolve_window():
    lo, hi = PATCH_NN_RANGE
    assert resolve_window(10.0, None) == 64.0
    assert resolve_window(15.2, None) == 64.0
    assert resolve_window(10.0, 50.0) == 50.0
    # a lattice too coarse for 64 px: the window that shows nn at 11 network pixels
    assert resolve_window(30.0, None) == pytest.approx(64 * 30.0 / 11.0)
    for window in (64.0 * 10.0 / hi * 0.9, 64.0 * 10.0 / lo * 1.1):
        with pytest.raises(ValueError, match="trained on"):
            resolve_window(10.0, window)


def test_binary_entropy():
    p = np.array([0.0, 1e-9, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    h = binary_entropy(p)
    assert h.dtype == np.float32
    np.testing.assert_allclose(h[[0, -1]], 0.0)
    assert h[4] == pytest.approx(1.0)
    assert h[3] == pytest.approx(-(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75)), rel=1e-6)
    np.testing.assert_allclose(h, binary_entropy(1.0 - p), atol=1e-5)  # symmetric in p and 1 - p
    assert (h >= 0).all() and (h <= 1).all() and h[1] < 1e-5


@pytest.mark.parametrize("engine", ["sliding-window", "attention-unet"])
def test_compute_heatmaps_gives_maps_on_the_image_grid(engine, twin, nn_px):
    image = twin.image
    seen = []
    res = compute_heatmaps(image, "MoS2", engine, nn_px=nn_px, progress=seen.append)
    assert isinstance(res, HeatmapResult) and res.engine == engine and res.classes == HEATMAP_CLASSES
    assert res.maps.shape == (5, *image.shape) and res.maps.dtype == np.float32
    assert np.isfinite(res.maps).all() and res.maps.min() >= 0 and res.maps.max() <= 1
    assert res.uncertainty.shape == image.shape
    np.testing.assert_allclose(res.uncertainty, binary_entropy(res.maps[0]), atol=1e-6)
    assert seen and seen[-1] == pytest.approx(1.0)
    if engine == "sliding-window":
        assert res.window_px == 64.0 and res.stride_px == 8.0
        coarse = compute_heatmaps(image, "MoS2", engine, nn_px=nn_px, stride_px=24)
        assert coarse.maps.shape == res.maps.shape and coarse.stride_px == 24.0 and coarse.window_px == 64.0
        assert 0 <= coarse.maps.min() and coarse.maps.max() <= 1
        wide = compute_heatmaps(image, "MoS2", engine, nn_px=nn_px, window_px=80)
        assert wide.maps.shape == res.maps.shape and wide.window_px == 80.0 and wide.stride_px == 10.0
    else:
        assert res.window_px is None and res.stride_px is None
    with pytest.raises(InterruptedError):
        compute_heatmaps(image, "MoS2", engine, nn_px=nn_px, cancel=lambda: True)


def test_compute_heatmaps_rejects_bad_settings(twin, nn_px):
    with pytest.raises(ValueError, match="trained on"):
        compute_heatmaps(twin.image, "MoS2", "sliding-window", nn_px=nn_px, window_px=300)
    with pytest.raises(ValueError, match="engine"):
        compute_heatmaps(twin.image, "MoS2", "random-forest", nn_px=nn_px)
    with pytest.raises(ValueError, match="fewer than"):
        compute_heatmaps(twin.image[:60, :60], "MoS2", "sliding-window", nn_px=nn_px)


# --------------------------------------------------------------------------- layers


def _result(shape=(40, 50)):
    rng = np.random.default_rng(2)
    maps = rng.random((5, *shape)).astype(np.float32)
    return HeatmapResult(maps, binary_entropy(maps[0]), "sliding-window", 64.0, 8.0)


def test_heatmap_layers():
    res = _result()
    scale, units = (0.12, 0.12), ("angstrom", "angstrom")
    layers = heatmap_layers(res, "img", scale=scale, units=units)
    assert len(layers) == 6 and all(kind == "image" for _, _, kind in layers)
    for k, (data, kw, _) in enumerate(layers[:5]):
        assert data is res.maps[k] or np.array_equal(data, res.maps[k])
        assert kw["name"] == f"img {HEATMAP_CLASSES[k]} probability"
        assert tuple(kw["contrast_limits"]) == (0.0, 1.0) and kw["blending"] == "additive"
        assert kw["scale"] == scale and kw["units"] == units
        assert kw["visible"] == (k == 0) and kw["metadata"]["class"] == HEATMAP_CLASSES[k]
    data, kw, _ = layers[5]
    np.testing.assert_array_equal(data, res.uncertainty)
    assert kw["name"] == "img uncertainty" and tuple(kw["contrast_limits"]) == (0.0, 1.0)
    assert kw["blending"] == "additive" and kw["scale"] == scale

    stacked = heatmap_layers(res, "img", scale=scale, stacked=True)
    assert len(stacked) == 2
    data, kw, _ = stacked[0]
    assert data.shape == (5, 40, 50) and kw["channel_axis"] == 0
    assert kw["name"] == [f"img {c} probability" for c in HEATMAP_CLASSES]
    assert [tuple(c) for c in kw["contrast_limits"]] == [(0.0, 1.0)] * 5
    assert kw["blending"] == "additive" and kw["scale"] == scale and "units" not in kw
    assert len(kw["colormap"]) == 5 and kw["metadata"]["engine"] == "sliding-window"
    assert stacked[1][1]["name"] == "img uncertainty"


def test_region_shapes_features_are_the_region_table():
    regions = find_regions(_blobs(), 0.5, pixel_size=0.1)
    data, kw = region_shapes(regions, "img", scale=(0.1, 0.1))
    pd.testing.assert_frame_equal(kw["features"], regions.table.reset_index(drop=True))
    assert kw["shape_type"] == "polygon" and len(data) == len(regions.table)
    for poly, contour in zip(data, regions.contours):
        np.testing.assert_array_equal(poly, contour)
    assert kw["edge_color"] == [REGION_COLOURS[c] for c in regions.table["class"]]
    assert kw["scale"] == (0.1, 0.1) and kw["metadata"]["threshold"] == 0.5
    boxes, kwb = region_shapes(regions, "img", boxes=True)
    assert kwb["shape_type"] == "rectangle" and len(boxes) == len(regions.table)
    pd.testing.assert_frame_equal(kwb["features"], regions.table.reset_index(drop=True))
    empty = find_regions(np.zeros((5, 10, 10), np.float32), 0.5)
    data, kw = region_shapes(empty, "img")
    assert data == [] and len(kw["features"]) == 0 and list(kw["features"].columns) == list(REGION_COLUMNS)


# --------------------------------------------------------------------------- accuracy of the shipped networks


@pytest.fixture(scope="module")
def vacancy_twin():
    """A MoS2 twin with known vacancies (V_X2, V_M) at a high dose, never a training seed."""
    t = simulate_twin("MoS2", (256, 256), 0.16, rotation_deg=11.0, defects={"V_X2": 0.03, "V_M": 0.03},
                      imaging=ImagingParams(dose=1e6), seed=7)
    return t, 3.16 / np.sqrt(3.0) / 0.16


def _at(m: np.ndarray, yx: np.ndarray) -> np.ndarray:
    iy = np.clip(np.round(yx[:, 0]).astype(int), 0, m.shape[0] - 1)
    ix = np.clip(np.round(yx[:, 1]).astype(int), 0, m.shape[1] - 1)
    return m[iy, ix]


@pytest.mark.parametrize("engine", ["sliding-window", "attention-unet"])
def test_maps_are_high_on_defects_and_low_on_perfect_lattice(vacancy_twin, engine):
    twin, nn = vacancy_twin
    result = compute_heatmaps(twin.image, "MoS2", engine, nn_px=nn)
    yx, fam = defect_sites(twin.sites)
    assert len(yx) >= 5 and fam[:, 1].all()  # all vacancies
    sites = twin.sites[["y_px", "x_px"]].to_numpy(float)
    dist = np.hypot(*(sites[:, None, :] - yx[None]).transpose(2, 0, 1)).min(axis=1)
    edge = np.minimum(sites, np.array(twin.image.shape) - 1 - sites).min(axis=1)
    far = sites[(dist > 2.5 * nn) & (edge > nn)]
    assert len(far) > 100
    on_defect, on_vacancy = _at(result.maps[0], yx), _at(result.maps[1], yx)
    assert np.median(on_defect) > 0.7 and np.median(on_vacancy) > 0.7
    assert _at(result.maps[0], far).mean() < 0.15
    counts = localisation_counts(result.maps, twin.sites, nn)
    assert counts["vacancy"]["sites_found"] >= 0.9 * counts["vacancy"]["sites"]


@pytest.mark.parametrize("engine", ["sliding-window", "attention-unet"])
@pytest.mark.parametrize("material", ["MoS2", "WSe2"])
def test_image_edges_of_a_perfect_lattice_are_not_defects(engine, material):
    """The tiler mirrors the image beyond its edges; a mirror line must not light up as a defect."""
    pixel_size = 0.15
    twin = simulate_twin(material, (224, 240), pixel_size, rotation_deg=17.0, defects={},
                         imaging=ImagingParams(dose=1e5), seed=11)
    nn = twin.material.a / np.sqrt(3.0) / pixel_size
    assert (twin.sites["defect"] == "none").all()
    result = compute_heatmaps(twin.image, material, engine, nn_px=nn)
    band = np.zeros(twin.image.shape, bool)
    b = int(np.ceil(nn))
    band[:b] = band[-b:] = True
    band[:, :b] = band[:, -b:] = True
    assert (result.maps[0][band] >= 0.5).mean() < 0.01
    assert (result.maps[0][~band] >= 0.5).mean() < 0.01
    assert len(find_regions(result.maps, 0.5, min_area_px=min_region_px(nn)).table) == 0
