"""Sample data opens in a real viewer with its ground truth."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("key, material", [("mos2_vacancies", "MoS2"), ("wse2_low_dose", "WSe2"),
                                           ("mowsse_alloy", "MoWSSe")])
def test_samples_open_image_and_ground_truth(make_napari_viewer, key, material):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-stem-defects", key)
    image, points = viewer.layers[0], viewer.layers[1]
    assert image._type_string == "image" and points._type_string == "points"
    assert image.data.shape == (512, 512)
    assert image.metadata["material"] == material
    np.testing.assert_allclose(image.scale, points.scale)
    assert str(image.units[0]) == "angstrom"
    feats = points.features
    assert {"sublattice", "species", "defect", "cell_id", "n_atoms"} <= set(feats.columns)
    assert (feats["defect"] != "none").sum() > 0
    assert ((feats["n_atoms"] == 0) == (feats["species"] == "")).all()
    # the ground-truth positions sit on bright columns: occupied metal sites are brighter than the mean
    occ = points.data[(feats["sublattice"] == "M").to_numpy() & (feats["n_atoms"] > 0).to_numpy()]
    yx = np.round(occ).astype(int)
    assert image.data[yx[:, 0], yx[:, 1]].mean() > image.data.mean()


def test_composite_sample_opens_with_its_phase_and_domain_maps(make_napari_viewer):
    from napari_stem_defects.vocabulary import PHASE_CODES

    viewer = make_napari_viewer()
    viewer.open_sample("napari-stem-defects", "mos2_real_sample")
    image, points, phases, domains = viewer.layers
    assert image._type_string == "image" and points._type_string == "points"
    assert phases._type_string == "labels" and domains._type_string == "labels"
    assert np.isnan(image.data).any() and np.isfinite(image.contrast_limits).all()
    assert image.contrast_limits[1] > image.contrast_limits[0]
    np.testing.assert_allclose(phases.scale, image.scale)
    # the masked pixels of the image are 'masked' in the phase map; the points carry domain and phase
    np.testing.assert_array_equal(np.isnan(image.data), phases.data == PHASE_CODES["masked"])
    feats = points.features
    assert {"domain", "phase"} <= set(feats.columns) and set(feats["phase"]) == {"2H", "1T"}
    yx = np.rint(points.data).astype(int)
    np.testing.assert_array_equal(domains.data[yx[:, 0], yx[:, 1]], feats["domain"] + 1)
    assert set(phases.features["phase"]) == set(PHASE_CODES)
    assert len(domains.features) == feats["domain"].nunique() + 1


def test_a_calibrated_sample_switches_the_scale_bar_on(make_napari_viewer):
    from napari_stem_defects._widgets._dock import scale_bar_of

    viewer = make_napari_viewer(show=True)  # napari's current viewer is a shown window
    assert not scale_bar_of(viewer).visible
    viewer.open_sample("napari-stem-defects", "mos2_vacancies")
    assert scale_bar_of(viewer).visible
