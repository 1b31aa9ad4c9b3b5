"""Self-calibration on the image's perfect majority: a broad single population is not a defect population."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_stem_defects.analyze import analyze_image
from napari_stem_defects.cells.classify import LARGE_SHARE
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.io.stem_image import StemImage
from napari_stem_defects.simulate import ImagingParams, simulate_twin

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _classes(image: StemImage, material: str) -> dict[str, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = analyze_image(image, material=material, classifier="cnn", force=True)
    return analysis.cells[0]["class"].value_counts().to_dict()


def test_real_wse2_is_not_a_quarter_substituted():
    """The WSe2 SuperScan image: its X2 columns' intensities are broad but one population (the species fit,
    held to the perfect majority, puts them all at Se2), so the network's substitutions there are not
    counted (it called 189 of 750 cells sub_X before)."""
    path = REAL / "WSe2_full_SuperScan_HAADF_14_corrected.tif"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path.parent}")
    counts = _classes(read_stem_file(path)[0], "WSe2")
    complete = sum(v for k, v in counts.items() if k != "incomplete")
    assert counts.get("sub_X", 0) < 0.05 * complete
    assert counts.get("perfect", 0) > 0.85 * complete


def test_a_large_real_substituted_population_is_kept():
    """A WSe2 twin with S on 15 % of its X2 columns: the network's large claim is what the columns show,
    so the count stays near the truth."""
    twin = simulate_twin("WSe2", (384, 384), 0.12, rotation_deg=None, seed=21, defects={"sub_X": 0.15},
                         imaging=ImagingParams(dose=1e5))
    truth = int((twin.cells["class"] == "sub_X").sum())
    assert truth > LARGE_SHARE * len(twin.cells)
    counts = _classes(StemImage(twin.image, (0.12, 0.12), "twin", {}), "WSe2")
    assert abs(counts.get("sub_X", 0) - truth) <= 0.2 * truth
