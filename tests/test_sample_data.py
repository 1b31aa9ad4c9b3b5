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


def test_a_calibrated_sample_switches_the_scale_bar_on(make_napari_viewer):
    from napari_stem_defects._widgets._dock import scale_bar_of

    viewer = make_napari_viewer(show=True)  # napari's current viewer is a shown window
    assert not scale_bar_of(viewer).visible
    viewer.open_sample("napari-stem-defects", "mos2_vacancies")
    assert scale_bar_of(viewer).visible
