"""The composition the user states: foreign atoms become candidates and tip ambiguous cells their way."""

from __future__ import annotations


from napari_stem_defects.composition import composition_weights
from napari_stem_defects.cells.classify import classify_site_table
from napari_stem_defects.cells.physics import reference_classes
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.columns.species import candidates
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import ImagingParams, simulate_twin
from napari_stem_defects.vocabulary import CELL_CLASSES


def test_stated_foreign_atoms_are_candidates_of_their_sites():
    assert "Te" in [c[0] for c in candidates(parse_material("MoS2+Te"), "X")]
    assert "STe" in [c[0] for c in candidates(parse_material("MoS2+Te"), "X")]
    assert "V" in [c[0] for c in candidates(parse_material("MoS2+V"), "M")]
    assert "Te" not in [c[0] for c in candidates(parse_material("MoS2"), "X")]
    w = composition_weights("MoS2+W+Se")
    for cls, factor in (("sub_X", 3.0), ("M_X", 1 / 3), ("dopant_M", 3.0), ("X_M", 1 / 3), ("V_X1", 1.0)):
        assert w[CELL_CLASSES.index(cls)] == factor, cls


def test_se_implanted_mos2_favours_substitution_where_intensity_cannot_tell():
    # at a Z exponent of 1.4 a Mo atom (187) and an S + Se column (188) scatter alike: only the stated
    # implantation can decide, and it must turn the ambiguous columns into substitutions
    twin = simulate_twin("MoS2", (320, 320), 0.12, rotation_deg=9.0, seed=77,
                         imaging=ImagingParams(dose=1e6, gamma=1.4), defects={"sub_X": 0.08, "M_X": 0.01},
                         substituent="Se")
    result = detect_columns(twin.image, material="MoS2", pixel_size=0.12)
    found = {}
    for material in ("MoS2", "MoS2+Se"):
        cells = classify_site_table(twin.image, result.sites, material, "cnn", nn_px=result.nn_px)
        truth = reference_classes(cells, result.sites, twin.sites, result.nn_px, "MoS2")
        sub = truth == "sub_X"
        found[material] = (cells["class"].to_numpy()[sub] == "sub_X").mean()
    assert found["MoS2+Se"] >= 0.8 and found["MoS2+Se"] > found["MoS2"] + 0.3, found


def test_analyze_reads_the_material_once_and_every_stage_agrees(monkeypatch):
    # the formula is parsed at the edge (analyze) into a Material that every stage takes: the columns,
    # the image check, the cells, the heatmaps and the joint decision never read the text again
    import napari_stem_defects.materials as materials
    from napari_stem_defects.analyze import analyze_image
    from napari_stem_defects.io.stem_image import StemImage

    twin = simulate_twin("MoS2+Se", (192, 192), 0.12, seed=5, imaging=ImagingParams(dose=1e6),
                         defects={"sub_X": 0.05})
    image = StemImage(data=twin.image.astype("float32"), pixel_size=(0.12, 0.12), name="twin", metadata={})
    readings = []
    original = materials._formula_items
    monkeypatch.setattr(materials, "_formula_items", lambda text, name: readings.append(name) or original(text, name))
    analysis = analyze_image(image, material="MoS2+Se", heatmaps="sliding-window")
    assert readings == ["MoS2+Se"]
    assert analysis.settings["material"] == "MoS2+Se"
    assert len(analysis.cells[0]) > 50
