"""The context-encoder column classifier: its context vector, features, posteriors, training and the analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.columns.context_classifier import (
    CONTRAST_LENGTH,
    INTENSITY_EVIDENCE,
    SUPPORT_SHARE,
    context_posteriors,
    contrast_features,
    image_supported_types,
    type_mask,
)
from napari_stem_defects.columns.context_vector import (
    COLUMN_TYPES,
    CONTEXT_LENGTH,
    SUBSHELLS,
    composition_vector,
    context_vector,
    energy_one_hot,
    shell_occupancy,
)
from napari_stem_defects.materials import ATOMIC_NUMBER, parse_material
from napari_stem_defects.simulate import MicroscopeSettings, calibrated_imaging, simulate_twin
from napari_stem_defects.training import context_classifier as tc
from napari_stem_defects.vocabulary import CELL_CLASSES

CAPACITY = np.array([cap for _, cap in SUBSHELLS])


@pytest.mark.parametrize("element", sorted(ATOMIC_NUMBER))
def test_shell_occupancy_holds_every_electron_within_capacity(element):
    occ = shell_occupancy(element)
    assert np.all((occ >= 0) & (occ <= 1))
    assert (occ * CAPACITY).sum() == pytest.approx(ATOMIC_NUMBER[element])


def test_known_ground_states():
    def config(el):
        return {name: round(v * cap) for (name, cap), v in zip(SUBSHELLS, shell_occupancy(el)) if v > 0}

    assert config("Cr")["3d"] == 5 and config("Cr")["4s"] == 1  # half-filled d shell
    assert config("W")["5d"] == 4 and config("W")["6s"] == 2 and config("W")["4f"] == 14
    assert config("Pt")["5d"] == 9 and config("Pt")["6s"] == 1
    assert config("Se")["4p"] == 4 and "3d" in config("Se") and "4d" not in config("Se")


def test_composition_vector_tells_materials_apart_and_averages_alloys():
    n = len(SUBSHELLS)
    mos2, ws2, mose2 = (composition_vector(parse_material(m)) for m in ("MoS2", "WS2", "MoSe2"))
    assert not np.allclose(mos2[:n], ws2[:n]) and np.allclose(mos2[n:], ws2[n:])  # metal part differs only
    assert np.allclose(mos2[:n], mose2[:n]) and not np.allclose(mos2[n:2 * n], mose2[n:2 * n])
    janus = composition_vector(parse_material("Janus-MoSSe"))
    assert np.allclose(janus[n:2 * n], (mos2[n:2 * n] + mose2[n:2 * n]) / 2)
    assert np.all(mos2[2 * n:] == 0)
    doped = composition_vector(parse_material("WSe2+V"))
    assert np.allclose(doped[2 * n:], shell_occupancy("V"))


def test_context_vector_flags_an_unknown_microscope_and_picks_the_nearest_energy():
    mat = parse_material("MoS2")
    known = context_vector(mat, MicroscopeSettings(energy_kV=90), "M")
    unknown = context_vector(mat, None, "X")
    assert known.shape == unknown.shape == (CONTEXT_LENGTH,)
    assert list(energy_one_hot(85)) == [0, 1, 0, 0, 0, 0, 0]  # 85 kV is nearer 80 than 100 on a log scale
    assert list(energy_one_hot(92)) == [0, 0, 1, 0, 0, 0, 0]
    assert energy_one_hot(None)[-1] == 1 and energy_one_hot(300)[5] == 1
    assert list(known[-2:]) == [1, 0] and list(unknown[-2:]) == [0, 1]
    with pytest.raises(ValueError, match="sublattice"):
        context_vector(mat, None, "H")
    # a file that records its beam energy but not its detector: the energy is given, the detector unknown
    n_energy = len(energy_one_hot(None))
    start = len(composition_vector(mat)) + 1
    energy_only = context_vector(mat, None, "X", energy_kV=60.0)
    assert list(energy_only[start:start + n_energy]) == list(energy_one_hot(60))
    detector = slice(start + n_energy, start + n_energy + 4)
    assert list(energy_only[detector]) == list(unknown[detector])
    assert energy_only[start + n_energy + 4] == pytest.approx(np.log(0.5))
    assert np.array_equal(context_vector(mat, None, "X", energy_kV=float("nan")), unknown)


def test_true_types_follow_the_twins_defect_labels():
    twin = simulate_twin("MoS2", (160, 160), 0.2, seed=3, defects={k: 0.05 for k in (
        "V_X1", "V_X2", "V_M", "M_X", "X_M", "dopant_M", "sub_X")}, imaging=calibrated_imaging(dose=None))
    yx, sub, labels = tc.site_type_labels(twin.sites, "MoS2")
    sites = twin.sites[twin.sites["sublattice"].isin(["M", "X"])]
    expected = {"none": "host", "V_X1": "single", "V_X2": "empty", "V_M": "empty", "M_X": "antisite",
                "X_M": "antisite", "dopant_M": "dopant", "sub_X": "dopant"}
    for defect, kind in expected.items():
        rows = (sites["defect"] == defect).to_numpy()
        assert rows.any(), defect
        assert set(np.asarray(COLUMN_TYPES)[labels[rows]]) == {kind}, defect
    assert not type_mask(sub)[sub == "M"][:, COLUMN_TYPES.index("single")].any()


@pytest.mark.parametrize(("material", "common", "rare", "atom"), [("MoS2+Se", "sub_X", "M_X", "Se"),
                                                                  ("MoSe2+W", "dopant_M", "X_M", "W")])
def test_a_stated_atom_makes_its_substitutions_common_and_its_alike_antisite_rare(material, common, rare, atom):
    """Where intensity cannot tell a stated atom's substitution from an antisite (Se+S against Mo on an X2
    site at 80 kV, W against an Se2 pair on a Mo site at 60 kV), the training twins of the stated
    material hold many of the first and few of the second, so the stated composition decides."""
    counts, atoms = np.zeros(3), []
    for seed in range(6):
        twin = tc.random_context_twin(seed, material)
        classes = twin.cells["class"].value_counts()
        counts += [len(twin.cells), classes.get(common, 0), classes.get(rare, 0)]
        sub = "X" if common == "sub_X" else "M"
        held = twin.sites[(twin.sites["defect"] == common) & (twin.sites["sublattice"] == sub)]
        atoms += [atom in str(sp) for sp in held["species"]]
    n, n_common, n_rare = counts
    assert n_common >= 0.04 * n and n_rare <= n_common / 4
    assert np.mean(atoms) >= 0.5


def test_contrast_features_do_not_depend_on_gain_and_offset():
    twin = simulate_twin("WSe2", (128, 128), 0.18, seed=4, defects={"V_X1": 0.05, "V_M": 0.03},
                         imaging=calibrated_imaging(dose=1e6))
    yx, sub, _ = tc.site_type_labels(twin.sites, "WSe2")
    a = contrast_features(twin.image, yx, sub, twin.nn_px)
    b = contrast_features(twin.image * 7.5 + 300.0, yx, sub, twin.nn_px)
    assert a.shape == (len(yx), CONTRAST_LENGTH)
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6)  # (the background map is float32)


def test_posteriors_take_the_classifiers_type_shares_and_keep_intensity_within_a_type():
    mat = parse_material("MoS2")
    post = {"M": pd.DataFrame({"empty": [0.1, 0.0], "Mo": [0.8, 0.5], "W": [0.1, 0.5], "S2": [0.0, 0.0]},
                              index=[1, 2]),
            "X": pd.DataFrame({"empty": [0.0], "S": [0.3], "S2": [0.7], "SSe": [0.0], "Mo": [0.0]}, index=[3])}
    types = pd.DataFrame([[0.9, 0.1, 0.0, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0, 0.0], [0.1, 0.0, 0.1, 0.0, 0.8]],
                         index=[1, 2, 3], columns=list(COLUMN_TYPES))
    out = context_posteriors(post, types, mat)
    assert out["M"].loc[1].to_dict() == pytest.approx({"empty": 0.0, "Mo": 0.9, "W": 0.1, "S2": 0.0})
    assert out["M"].loc[2, "W"] == pytest.approx(0.8)
    assert out["X"].loc[3, "Mo"] == pytest.approx(0.8)  # the antisite the intensity did not see
    for table in out.values():
        assert np.allclose(table.sum(axis=1), 1.0)


def test_the_image_fits_likelihood_counts_in_part_and_its_mixture_weights_not_at_all():
    """The fit's evidence between types joins the classifier's at INTENSITY_EVIDENCE: a column whose intensity
    sits on a lone S is read as one though the classifier leans to the host's pair; how common the fit found
    a content does not enter (the classifier is class-balanced); between alike contents the classifier decides."""
    mat = parse_material("MoS2")
    columns = ["empty", "S", "S2", "SSe", "Mo"]
    weights = {"X": np.array([0.01, 0.02, 0.95, 0.01, 0.01])}
    post = pd.DataFrame([[0.0, 0.99, 0.01, 0.0, 0.0],     # 1: intensity on a lone S
                         [0.01, 0.0, 0.99, 0.0, 0.0],     # 2: as likely empty as S2; the weights say S2
                         [0.0, 0.0, 0.0, 1 / 3, 2 / 3]],  # 3: SSe or Mo (alike), Mo twice as likely
                        index=[1, 2, 3], columns=columns)
    post.loc[2] = np.array([1.0, 0.0, 1.0, 0.0, 0.0]) * weights["X"] / (weights["X"][0] + weights["X"][2])
    types = pd.DataFrame([[0.7, 0.0, 0.3, 0.0, 0.0], [0.4, 0.0, 0.0, 0.6, 0.0], [0.0, 0.8, 0.0, 0.0, 0.2]],
                         index=[1, 2, 3], columns=list(COLUMN_TYPES))
    out = context_posteriors({"X": post}, types, mat, weights)["X"]
    assert 0 < INTENSITY_EVIDENCE < 0.5
    assert out.loc[1].idxmax() == "S"
    assert out.loc[1, "S"] == pytest.approx(0.3 / (0.3 + 0.7 * ((0.01 / 0.95) / (0.99 / 0.02)) ** INTENSITY_EVIDENCE))
    assert out.loc[2].to_dict() == pytest.approx({"empty": 0.6, "S": 0.0, "S2": 0.4, "SSe": 0.0, "Mo": 0.0})
    assert out.loc[3].idxmax() == "SSe" and out.loc[3, "SSe"] > 0.7
    assert np.allclose(out.sum(axis=1), 1.0)
    # without the fit's weights, the classifier's type shares as they are
    plain = context_posteriors({"X": post}, types, mat)["X"]
    assert plain.loc[1, "S2"] == pytest.approx(0.7) and plain.loc[3, "SSe"] == pytest.approx(0.8)
    # a stated atom's type is not weighed by a fit that may not place it: Se stated, the column that the fit
    # puts on Mo 100 to 1 keeps the classifier's 0.6 for S+Se
    post.loc[3, ["SSe", "Mo"]] = [0.01, 0.99]
    types.loc[3, ["dopant", "antisite"]] = [0.6, 0.4]
    assert context_posteriors({"X": post}, types, mat, weights)["X"].loc[3, "SSe"] < 0.5
    stated = context_posteriors({"X": post}, types, parse_material("MoS2+Se"), weights)["X"]
    assert stated.loc[3, "SSe"] == pytest.approx(0.6)


def test_large_claims_the_image_fit_does_not_hold_are_scaled_down_and_held_claims_kept():
    mat = parse_material("WSe2")
    n = 200
    ids = np.arange(n)
    m_ids, x_ids = ids[:100], ids[100:]
    # the fit: one Se2 population on X except 10 columns at Se (a real lost-atom population), W on M
    x_post = pd.DataFrame({"empty": 0.0, "Se": 0.0, "Se2": 1.0, "SSe": 0.0, "W": 0.0}, index=x_ids)
    x_post.loc[x_ids[:10], ["Se", "Se2"]] = [0.95, 0.05]
    post = {"M": pd.DataFrame({"empty": 0.0, "W": 1.0, "Mo": 0.0, "Se2": 0.0}, index=m_ids), "X": x_post}
    types = pd.DataFrame(0.0, index=ids, columns=list(COLUMN_TYPES))
    types["host"] = 1.0
    # the classifier: the 10 real 'single' columns and 30 more it imagines; 20 metal dopants the fit has none of;
    # 2 antisites (below the checked share)
    types.loc[x_ids[:40], ["host", "single"]] = [0.1, 0.9]
    types.loc[m_ids[:20], ["host", "dopant"]] = [0.2, 0.8]
    types.loc[x_ids[50:52], ["host", "antisite"]] = [0.3, 0.7]
    assert 2 < SUPPORT_SHARE * 100 < 10
    held = image_supported_types(types, post, mat)
    assert np.allclose(held.sum(axis=1), 1.0)
    # 36 claimed 'single' against 9.5 held: scaled by 9.5 / 36, so the imagined ones fall back to host ...
    assert held.loc[x_ids[:40], "single"].sum() == pytest.approx(
        (0.9 * 9.5 / 36 / (0.1 + 0.9 * 9.5 / 36)) * 40)
    # ... while the rank order within the type stays the classifier's, and a host column is unchanged
    assert held.loc[x_ids[60]].to_dict() == types.loc[x_ids[60]].to_dict()
    assert held.loc[m_ids[:20], "dopant"].max() < 0.01  # the fit holds no dopant at all
    assert held.loc[x_ids[50:52], "antisite"].tolist() == pytest.approx([0.7, 0.7])  # rare: left alone
    # claims the fit holds are kept whole
    post["X"].loc[x_ids[:40], ["Se", "Se2"]] = [0.95, 0.05]
    kept = image_supported_types(types, post, mat)
    assert kept.loc[x_ids[:40], "single"].tolist() == pytest.approx([0.9] * 40)
    # a metal the user states is expected in numbers: its dopants are not held to a fit that has none
    stated = image_supported_types(types, post, parse_material("WSe2+Mo"))
    assert stated.loc[m_ids[:20], "dopant"].tolist() == pytest.approx([0.8] * 20)
    assert stated.loc[x_ids[:40], "single"].sum() == pytest.approx(kept.loc[x_ids[:40], "single"].sum())


@pytest.fixture(scope="module")
def small_model():
    """A classifier trained on 60 fast twins of the known materials and two doped layers, none with Te
    (the held-out host below), taken in turn."""
    import torch

    from napari_stem_defects.materials import KNOWN_MATERIALS

    torch.set_num_threads(1)
    materials = [m for m in (*KNOWN_MATERIALS, "WSe2+V", "MoS2+Cr") if "Te" not in m]
    return tc.train(tc.build_dataset(60, seed=500, materials=materials), epochs=12, seed=0)


def test_training_beats_guessing_host_on_held_out_twins(small_model):
    val = tc.build_dataset(12, seed=777_000)
    pred = tc.predict(small_model, val).argmax(1)
    r = tc.type_metrics(val["labels"], pred)
    host_share = float(np.mean(val["labels"] == 0))
    assert r["accuracy"] > host_share
    assert r["recall"]["empty"] > 0.8 and r["recall"]["single"] > 0.5


def test_the_analysis_takes_the_column_classifiers_answer(small_model, monkeypatch):
    from napari_stem_defects.analyze import analyze_image
    from napari_stem_defects.cells.joint import contradictions
    from napari_stem_defects.columns import context_classifier as cc
    from napari_stem_defects.io.stem_image import StemImage

    monkeypatch.setattr(cc, "load_context_classifier", lambda path=None: small_model)
    micro = MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70, detector_outer_mrad=200)
    twin = simulate_twin("MoTe2", (192, 192), 0.16, seed=8, defects={"V_X1": 0.05, "V_X2": 0.03, "V_M": 0.03},
                         imaging=calibrated_imaging(micro, dose=1e6))
    image = StemImage(twin.image, (0.16, 0.16), "twin", {})
    a = analyze_image(image, material="MoTe2", microscope=micro, column_classifier="context")
    assert any("context-encoder" in m for m in a.columns[0].messages)
    # a file with its beam energy and no detector angles: the classifier is given the energy
    recorded = StemImage(twin.image, (0.16, 0.16), "twin", {"beam_energy_keV": 80.0})
    told = analyze_image(recorded, material="MoTe2", column_classifier="context")
    assert any("80 kV beam, detector unknown" in m for m in told.columns[0].messages)
    assert a.settings["column_classifier"] == "context"
    assert contradictions(a.columns[0].sites, a.cells[0], "MoTe2") == 0
    with pytest.raises(ValueError, match="needs the material"):
        analyze_image(image, column_classifier="context")
    with pytest.raises(ValueError, match="column classifier must be one of"):
        analyze_image(image, material="MoTe2", column_classifier="zernike")


def test_a_held_out_material_on_a_multislice_twin(small_model, coarse_potential_grid):
    # MoTe2: no Te material was in the small model's training; the image is abTEM's, not the fast twins'
    pytest.importorskip("abtem")
    from napari_stem_defects.simulate import ImagingParams, simulate_multislice_twin, with_dose

    coarse = MicroscopeSettings(energy_kV=60, convergence_mrad=20, detector_inner_mrad=45, detector_outer_mrad=120)
    imaging = ImagingParams(gamma=None, dose=None, microscope=coarse, background=0.0, texture=0.0)
    twin = simulate_multislice_twin(material="MoTe2", shape=(80, 80), pixel_size=0.22, rotation_deg=None, seed=6,
                                    defects={"V_X1": 0.12, "V_X2": 0.08, "V_M": 0.08}, imaging=imaging)
    twin = with_dose(twin, 1e6, seed=1)
    mat = parse_material("MoTe2")
    yx, sub, truth = tc.site_type_labels(twin.sites, mat)
    inside = (yx.min(axis=1) > twin.nn_px) & (yx.max(axis=1) < 80 - twin.nn_px)
    yx, sub, truth = yx[inside], sub[inside], truth[inside]
    from napari_stem_defects.columns.context_classifier import site_contexts, type_probabilities

    probs = type_probabilities(small_model, contrast_features(twin.image, yx, sub, twin.nn_px),
                               site_contexts(mat, coarse, sub), type_mask(sub))
    r = tc.type_metrics(truth, probs.argmax(1))
    assert {"single", "empty"} <= set(r["recall"])
    assert r["accuracy"] > max(0.9, float(np.mean(truth == 0)))
    assert r["recall"]["empty"] >= 0.8 and r["recall"]["single"] >= 0.6


def test_cnn_times_columns_keeps_one_answer_and_finds_the_twins_classes():
    from napari_stem_defects.analyze import analyze_image
    from napari_stem_defects.cells.joint import contradictions
    from napari_stem_defects.cells.physics import PROBABILITY_COLUMNS, reference_classes
    from napari_stem_defects.io.stem_image import StemImage

    micro = MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70, detector_outer_mrad=200)
    twin = simulate_twin("WSe2", (224, 224), 0.15, seed=12, defects={"V_X1": 0.04, "V_X2": 0.03, "V_M": 0.03,
                                                                      "dopant_M": 0.03},
                         imaging=calibrated_imaging(micro, dose=1e6))
    a = analyze_image(StemImage(twin.image, (0.15, 0.15), "twin", {}), material="WSe2", microscope=micro,
                      column_classifier="context", classifier="cnn+columns")
    sites, cells = a.columns[0].sites, a.cells[0]
    assert contradictions(sites, cells, "WSe2") == 0
    fused = cells["classifier"] == "cnn+columns"
    assert fused.mean() > 0.9
    probs = cells.loc[fused, list(PROBABILITY_COLUMNS)].to_numpy(float)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert list(cells.loc[fused, "class"]) == [CELL_CLASSES[k] for k in probs.argmax(axis=1)]
    ref = reference_classes(cells, sites, twin.sites, twin.nn_px, "WSe2")
    scored = (ref != "") & cells["complete"].to_numpy(bool)
    truth, found = ref[scored], cells["class"].to_numpy()[scored]
    assert np.mean(truth == found) > 0.97
    for cls in ("V_X1", "V_X2", "V_M", "dopant_M"):
        assert np.mean(found[truth == cls] == cls) >= 0.8, cls
