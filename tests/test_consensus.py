"""Consensus labels: three synthetic annotators of one digital twin with known disagreements.

The twin's sites and cells (detected and classified) are the model's draft; three annotators
edit copies of it in known ways (relabel, delete, add, move, reorder), and the votes, the
majority labels, Fleiss' kappa and the training set built from agreements are checked against
that design.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from twin_layers import PIXEL, classified_twin

from napari_stem_defects.annotations import (
    annotations_from_layers,
    load_annotations,
    save_annotations,
    set_cell_class,
    set_site_species,
    sidecar_path,
)
from napari_stem_defects.annotations.agreement import fleiss_kappa, vote_counts
from napari_stem_defects.annotations.consensus import (
    ABSENT,
    ConsensusError,
    annotator_names,
    build_consensus,
    load_annotator_files,
)
from napari_stem_defects.annotations.consensus_report import (
    AGREEMENT_COLUMNS,
    agreement_table,
)
from napari_stem_defects.annotations.training_set import read_training_set
from napari_stem_defects.annotations.training_set_export import export_training_set
from napari_stem_defects.cli import main
from napari_stem_defects.simulate.defects import CELL_CLASSES

NAMES = ("alice", "bob", "carol")


def _draft(seed: int = 11):
    draft = classified_twin(seed=seed)
    return draft.twin, draft.points, draft.points_kwargs, draft.shapes, draft.shapes_kwargs


def _annotations(image: np.ndarray, file: Path, pdata, pk, points_features, sdata, sk, cells_features):
    layer = SimpleNamespace(data=image, name="twin", scale=np.array([PIXEL, PIXEL]), units=("angstrom", "angstrom"),
                            translate=np.array([0.0, 0.0]), metadata={}, source=SimpleNamespace(path=None))
    points = SimpleNamespace(data=pdata, features=points_features, metadata=pk["metadata"], name=pk["name"],
                             scale=np.array(pk["scale"]))
    shapes = SimpleNamespace(data=list(sdata), features=cells_features, metadata=sk["metadata"], name=sk["name"],
                             scale=np.array(sk["scale"]))
    return annotations_from_layers(layer, points, shapes, material="MoS2", image_file=file)


@pytest.fixture(scope="module")
def annotators(tmp_path_factory):
    """Three annotators' files of one twin, and the design: who labelled what where."""
    folder = tmp_path_factory.mktemp("consensus")
    twin, pdata, pk, sdata, sk = _draft()
    image_file = folder / "twin.npy"
    np.save(image_file, twin.image)
    sites, cells = pk["features"].reset_index(drop=True), sk["features"].reset_index(drop=True)
    metals = np.flatnonzero((sites["species"] == "Mo").to_numpy())
    chalcogens = np.flatnonzero((sites["species"] == "S2").to_numpy())
    m0, m1, x0 = int(metals[3]), int(metals[7]), int(chalcogens[5])
    perfect = np.flatnonzero((cells["class"] == "perfect").to_numpy())
    c0, c1, c2 = (int(c) for c in perfect[[2, 6, 9]])
    base_species = sites["species"].astype(str).to_numpy()
    base_class = cells["class"].astype(str).to_numpy()
    # the design: each annotator's label per draft site / cell (ABSENT: deleted)
    site_labels = np.stack([base_species] * 3, axis=1).astype(object)
    site_labels[m0] = ["W", "W", "Mo"]  # majority W, 2 votes
    site_labels[m1] = ["W", "empty", "Mo"]  # three-way tie
    site_labels[x0] = ["S2", ABSENT, "S2"]  # bob deleted it
    cell_labels = np.stack([base_class] * 3, axis=1).astype(object)
    cell_labels[c0] = ["V_X1", "V_X1", base_class[c0]]
    cell_labels[c1] = ["V_M", "V_X1", "perfect"]
    cell_labels[c2] = [base_class[c2], base_class[c2], ABSENT]  # carol deleted it
    files = []
    rng = np.random.default_rng(0)
    for k, name in enumerate(NAMES):
        s = sites.copy()
        for row, label in ((m0, site_labels[m0, k]), (m1, site_labels[m1, k])):
            if label != base_species[row]:
                s = set_site_species(s, [row], label)
        c = cells.copy()
        for row in (c0, c1):
            if cell_labels[row, k] != base_class[row]:
                c = set_cell_class(c, [row], cell_labels[row, k])
        pts, cd = pdata.copy(), sdata.copy()
        keep_s, keep_c = np.ones(len(s), bool), np.ones(len(c), bool)
        if name == "bob":  # moves every point a little, deletes x0, saves the rows in another order
            pts = pts + np.array([0.15, -0.1])
            keep_s[x0] = False
        if name == "carol":  # deletes cell c2, adds a point in a hollow
            keep_c[c2] = False
        pts, s = pts[keep_s], s[keep_s].reset_index(drop=True)
        cd, c = cd[keep_c], c[keep_c].reset_index(drop=True)
        if name == "bob":
            order = rng.permutation(len(s))
            pts, s = pts[order], s.iloc[order].reset_index(drop=True)
        if name == "carol":
            m = pdata[m0]
            nearest_x = pdata[chalcogens[np.argmin(np.hypot(*(pdata[chalcogens] - m).T))]]
            hollow = m + (m - nearest_x)  # opposite the chalcogen: a hollow site, far from any column
            new = s.iloc[[0]].copy()
            new["species"], new["sublattice"], new["site_id"] = "adatom", "H", -1
            pts, s = np.vstack([pts, hollow]), pd.concat([s, new], ignore_index=True)
        ann = _annotations(twin.image, image_file, pts, pk, s, cd, sk, c)
        path = folder / f"{name}.annotations.json"
        save_annotations(ann, path, saved_by=name)
        files.append(path)
    design = SimpleNamespace(site_labels=site_labels, cell_labels=cell_labels, m0=m0, m1=m1, x0=x0, c0=c0, c1=c1,
                             c2=c2, n_sites=len(sites), n_cells=len(cells), image=twin.image, folder=folder)
    return files, design


def _hand_kappa(labels: np.ndarray) -> float:
    """Fleiss' kappa written out with loops, from a table of labels (items x raters)."""
    cats = sorted({v for row in labels for v in row})
    n_items, n = labels.shape
    p_bar, totals = 0.0, dict.fromkeys(cats, 0)
    for row in labels:
        agree = 0
        for cat in cats:
            nij = sum(1 for v in row if v == cat)
            agree += nij * (nij - 1)
            totals[cat] += nij
        p_bar += agree / (n * (n - 1)) / n_items
    p_e = sum((t / (n_items * n)) ** 2 for t in totals.values())
    return (p_bar - p_e) / (1 - p_e)


#: Fleiss' kappa textbook example (10 subjects, 14 raters, 5 categories; Wikipedia "Fleiss' kappa"): 0.210.
TEXTBOOK = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                     [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def test_fleiss_kappa_of_the_textbook_example():
    k = fleiss_kappa(TEXTBOOK, list("abcde"))
    assert round(k.overall, 3) == 0.210
    assert round(k.observed, 3) == 0.378 and round(k.expected, 3) == 0.213
    assert [round(k.share[c], 3) for c in "abcde"] == [0.143, 0.2, 0.279, 0.15, 0.229]
    labels = np.array([[c for c, n in zip("abcde", row) for _ in range(n)] for row in TEXTBOOK])
    assert k.overall == pytest.approx(_hand_kappa(labels), abs=1e-12)
    # Fleiss (1971): kappa is the p_j q_j weighted mean of the per-category kappas
    pq = np.array([k.share[c] * (1 - k.share[c]) for c in "abcde"])
    per = np.array([k.per_category[c] for c in "abcde"])
    assert k.overall == pytest.approx(float((pq * per).sum() / pq.sum()), abs=1e-12)
    # two categories: each category's kappa is the overall one
    two = fleiss_kappa(np.array([[3, 0], [2, 1], [0, 3], [1, 2], [3, 0]]), ["x", "y"])
    assert two.per_category["x"] == pytest.approx(two.overall) == pytest.approx(two.per_category["y"])
    with pytest.raises(ValueError, match="same number of annotators"):
        fleiss_kappa(np.array([[2, 1], [1, 1]]))


def test_votes_majority_and_kappa_of_three_annotators(annotators):
    files, d = annotators
    anns = load_annotator_files(files)
    assert annotator_names(anns, files) == list(NAMES)
    consensus = build_consensus(anns)  # default: 2 of 3 votes
    sites, cells = consensus.sites, consensus.cells
    assert consensus.min_votes == 2
    # every draft site matched across the three despite bob's moved, reordered points; carol's added one apart
    assert len(sites.majority) == d.n_sites + 1 and len(cells.majority) == d.n_cells
    alice = sites.rows[:, 0]
    order = np.argsort(alice[alice >= 0])
    matched = sites.labels[alice >= 0][order]
    assert (matched == d.site_labels).all()
    added = np.flatnonzero(alice < 0)
    assert sites.labels[added].tolist() == [[ABSENT, ABSENT, "adatom"]] and sites.majority[added[0]] == ABSENT
    row = {r: int(np.flatnonzero(alice == r)[0]) for r in (d.m0, d.m1, d.x0)}
    assert (sites.majority[row[d.m0]], sites.votes[row[d.m0]], sites.tie[row[d.m0]]) == ("W", 2, False)
    assert sites.tie[row[d.m1]] and sites.votes[row[d.m1]] == 1 and sites.majority[row[d.m1]] == "W"
    assert (sites.majority[row[d.x0]], sites.votes[row[d.x0]]) == ("S2", 2)
    assert set(np.flatnonzero(~sites.unanimous)) == {row[d.m0], row[d.m1], row[d.x0], added[0]}
    crow = {r: int(np.flatnonzero(cells.rows[:, 0] == r)[0]) for r in (d.c0, d.c1, d.c2)}
    assert (cells.labels[cells.rows[:, 0] >= 0][np.argsort(cells.rows[cells.rows[:, 0] >= 0, 0])]
            == d.cell_labels).all()
    assert (cells.majority[crow[d.c0]], cells.votes[crow[d.c0]]) == ("V_X1", 2)
    assert cells.tie[crow[d.c1]] and not cells.trusted(2)[crow[d.c1]]
    assert set(np.flatnonzero(~cells.unanimous)) == {crow[d.c0], crow[d.c1], crow[d.c2]}
    # Fleiss' kappa against the loops, on the design's own label table
    design_sites = np.vstack([d.site_labels, [[ABSENT, ABSENT, "adatom"]]])
    assert sites.kappa.overall == pytest.approx(_hand_kappa(design_sites), abs=1e-12)
    assert cells.kappa.overall == pytest.approx(_hand_kappa(d.cell_labels), abs=1e-12)
    assert 0.5 < cells.kappa.overall < 1.0
    cats, counts = vote_counts(d.cell_labels)
    assert cells.categories == cats and (np.sort(cells.counts, axis=0) == np.sort(counts, axis=0)).all()
    # the consensus file: the added point dropped, the majority labels, trusted = verified
    merged = consensus.annotations
    assert merged.saved_by == "consensus of alice, bob, carol"
    assert len(merged.sites.features) == d.n_sites and len(merged.cells.features) == d.n_cells
    table = agreement_table(consensus)
    assert tuple(table.columns) == AGREEMENT_COLUMNS
    assert (table["index"] == -1).sum() == 1 and table.loc[table["index"] == -1, "vote_counts"].item() == \
        f"{ABSENT}:2;adatom:1"
    site_rows = table[(table["kind"] == "sites") & (table["index"] >= 0)].sort_values("index")
    assert (merged.sites.features["species"].to_numpy() == site_rows["label"].to_numpy()).all()
    assert (merged.sites.features["verified"].to_numpy() == site_rows["trusted"].to_numpy()).all()


def test_training_set_is_built_from_agreements_only(annotators, tmp_path):
    files, d = annotators
    anns = load_annotator_files(files)
    for min_votes, excluded in ((2, {d.c1}), (3, {d.c0, d.c1, d.c2})):
        consensus = build_consensus(anns, min_votes=min_votes)
        cells = consensus.cells
        out = export_training_set([(d.image, consensus.annotations)], tmp_path / f"set{min_votes}")
        ts = read_training_set(out.parent)
        alice = cells.rows[:, 0]
        exported_draft_rows = set(alice[ts.cell_index].tolist())  # consensus rows follow alice's order
        classed = set(np.flatnonzero(np.isin(d.cell_labels[:, 0], CELL_CLASSES)).tolist())
        assert exported_draft_rows == classed - excluded
        labels = dict(zip(alice[ts.cell_index].tolist(), np.asarray(CELL_CLASSES)[ts.labels].tolist()))
        if min_votes == 2:
            assert labels[d.c0] == "V_X1"  # the majority, not alice's draft


def test_consensus_file_round_trips_and_opens_as_layers(annotators, tmp_path):
    from napari_stem_defects.annotations import annotation_layer_data

    files, d = annotators
    consensus = build_consensus(load_annotator_files(files))
    path = save_annotations(consensus.annotations, sidecar_path(d.folder / "twin.npy").with_name("c.annotations.json"),
                            saved_by=consensus.annotations.saved_by)
    back = load_annotations(path)
    assert back.equals(consensus.annotations)
    assert back.saved_by == "consensus of alice, bob, carol"
    kinds = [t[2] for t in annotation_layer_data(back)]
    assert kinds == ["points", "shapes"]
    path.unlink()


def test_command_line_consensus(annotators, tmp_path, capsys):
    files, d = annotators
    out = tmp_path / "consensus.annotations.json"
    status = main(["consensus", *map(str, files), "--out", str(out), "--min-votes", "2",
                   "--training-set", str(tmp_path / "set")])
    text = capsys.readouterr().out
    assert status == 0, text
    back = load_annotations(out)
    assert back.saved_by == "consensus of alice, bob, carol"
    table = pd.read_csv(tmp_path / "consensus.agreement.csv")
    assert tuple(table.columns) == AGREEMENT_COLUMNS
    assert len(table) == d.n_sites + 1 + d.n_cells
    assert (~table["unanimous"]).sum() == 4 + 3
    consensus = build_consensus(load_annotator_files(files))
    assert f"cells  (all)         1.000 {consensus.cells.kappa.overall:>7.3f}" in text
    assert f"{consensus.cells.kappa.per_category['V_X1']:.3f}" in text
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    classed = int(np.isin(d.cell_labels[:, 0], CELL_CLASSES).sum())
    assert manifest["totals"]["n_cells"] == classed - 1  # the tied cell left out


def test_bad_input_gives_a_clear_message(annotators, tmp_path, capsys):
    files, _ = annotators
    other_twin, pdata, pk, sdata, sk = _draft(seed=12)
    np.save(tmp_path / "other.npy", other_twin.image)
    other = save_annotations(_annotations(other_twin.image, tmp_path / "other.npy", pdata, pk, pk["features"], sdata,
                                          sk, sk["features"]), tmp_path / "other.annotations.json")
    with pytest.raises(ConsensusError, match="annotate different images"):
        load_annotator_files([files[0], other])
    assert main(["consensus", str(files[0]), str(other), "--out", str(tmp_path / "c.annotations.json")]) == 2
    assert "annotate different images" in capsys.readouterr().err
    broken = tmp_path / "broken.annotations.json"
    broken.write_text("{not json")
    assert main(["consensus", str(files[0]), str(broken), "--out", str(tmp_path / "c.annotations.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "broken.annotations.json" in err and "Traceback" not in err
    assert main(["consensus", str(files[0]), "--out", str(tmp_path / "c.annotations.json")]) == 2
    assert "at least two annotators" in capsys.readouterr().err
    assert main(["consensus", *map(str, files), "--out", str(files[0])]) == 2
    assert "would overwrite an annotator's file" in capsys.readouterr().err
    assert main(["consensus", *map(str, files), "--out", str(tmp_path / "c.json"), "--min-votes", "4"]) == 2
    assert "min_votes must lie between 1 and the 3 annotators" in capsys.readouterr().err
    assert not (tmp_path / "c.annotations.json").exists()


@pytest.fixture
def user_settings(tmp_path, monkeypatch):
    """Qt user settings and model/autosave folders in a temporary folder, never the user's."""
    from qtpy.QtCore import QSettings

    monkeypatch.setenv("NAPARI_STEM_DEFECTS_MODELS", str(tmp_path / "user" / "models"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    return tmp_path / "settings"


def test_dock_shows_the_disagreements_in_a_viewer(annotators, make_napari_viewer, user_settings, tmp_path):
    from napari_stem_defects._widgets.consensus_widget import ConsensusWidget

    files, d = annotators
    viewer = make_napari_viewer()
    viewer.add_image(d.image, name="twin", scale=(PIXEL, PIXEL))
    _, dock = viewer.window.add_plugin_dock_widget("napari-stem-defects", "Consensus labels")
    assert isinstance(dock, ConsensusWidget)
    assert dock.load([str(f) for f in files])
    points, cells = viewer.layers["twin disagreements"], viewer.layers["twin disputed cells"]
    assert len(points.data) == 4 and len(cells.data) == 3  # the design's disputed sites and cells
    assert sorted(points.features["vote_counts"]) == sorted(["W:2;Mo:1", "Mo:1;W:1;empty:1", "S2:2;absent:1",
                                                            "absent:2;adatom:1"])
    assert tuple(points.scale) == (PIXEL, PIXEL)
    tie = points.features["vote_counts"] == "Mo:1;W:1;empty:1"
    assert not points.features.loc[tie, "trusted"].item() and points.features.loc[~tie, "trusted"].sum() == 2
    consensus = build_consensus(load_annotator_files(files))
    assert f"{consensus.cells.kappa.overall:.3f}" in dock.kappa.value
    assert f"{consensus.sites.kappa.overall:.3f}" in dock.kappa.value
    assert "disagree on 4 of" in dock.result.value
    dock.min_votes.value = 3  # only unanimous labels are trusted now
    assert not viewer.layers["twin disagreements"].features["trusted"].any()
    assert len([x for x in viewer.layers if x.name == "twin disagreements"]) == 1  # replaced, not added
    target = dock.save(str(tmp_path / "merged.annotations.json"))
    back = load_annotations(target)
    assert back.saved_by == "consensus of alice, bob, carol"
    assert int(back.cells.features["verified"].sum()) == int(consensus.cells.unanimous.sum())
    assert (tmp_path / "merged.agreement.csv").is_file()
    broken = tmp_path / "broken.annotations.json"
    broken.write_text("{not json")
    assert not dock.load([str(files[0]), str(broken)])
    assert "cannot read" in dock.result.value and "broken.annotations.json" in dock.result.value


def test_correct_dock_remembers_the_annotator_and_saves_it(annotators, make_napari_viewer, user_settings, tmp_path):
    from napari_stem_defects._widgets.correct_widget import CorrectWidget
    from napari_stem_defects.annotations import annotation_layer_data

    files, d = annotators
    np.save(tmp_path / "scan.npy", d.image)
    viewer = make_napari_viewer()
    viewer.add_image(d.image, name="scan", scale=(PIXEL, PIXEL), metadata={"path": str(tmp_path / "scan.npy")})
    for data, kwargs, kind in annotation_layer_data(load_annotations(files[0])):
        getattr(viewer, f"add_{kind}")(data, **{**kwargs, "name": f"scan {'columns' if kind == 'points' else 'cells'}"})
    dock = CorrectWidget(viewer)
    assert dock.cells.value is viewer.layers["scan cells"]
    dock.annotator.value = "dora"
    path = dock.save()
    assert load_annotations(path).saved_by == "dora"
    again = CorrectWidget(viewer)  # a later session: the name is remembered
    assert again.annotator.value == "dora"
    assert list(user_settings.rglob("*.ini"))


def test_consensus_file_opens_with_its_image_for_correction(annotators, make_napari_viewer, user_settings, tmp_path,
                                                            capsys):
    """`consensus --out FOLDER` writes <image>.annotations.json: opening the image there restores the consensus,
    and "Next uncertain" in "Correct labels" goes to the least agreed cell first."""
    from napari_stem_defects._widgets.correct_widget import CorrectWidget

    files, d = annotators
    folder = tmp_path / "review"
    folder.mkdir()
    np.save(folder / "twin.npy", d.image)
    assert main(["consensus", *map(str, files), "--out", str(folder)]) == 0
    assert (folder / "twin.npy.annotations.json").is_file() and (folder / "twin.npy.agreement.csv").is_file()
    viewer = make_napari_viewer()
    layers = viewer.open(folder / "twin.npy", plugin="napari-stem-defects")
    assert [type(x).__name__ for x in layers] == ["Image", "Points", "Shapes"]
    dock = CorrectWidget(viewer)
    cells = dock.cells.value
    assert cells is layers[2] and len(cells.features) == d.n_cells
    dock.next_uncertain()
    (row,) = cells.selected_data
    assert cells.features.loc[row, "votes"] == 1 and not cells.features.loc[row, "verified"]  # the three-way tie
