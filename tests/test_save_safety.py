"""Saving never loses a correction: atomic writes with the umask's permissions, leftovers of a killed save
cleaned up safely, and a file that could not be read kept aside instead of overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from napari_stem_defects.annotations import (
    EarlierFileKept,
    ImageReference,
    annotations_from_layers,
    load_annotations,
    save_annotations,
    set_cell_class,
    sidecar_path,
)
from napari_stem_defects.annotations.safekeeping import keep_earlier_file
from napari_stem_defects.annotations.store import Annotations
from napari_stem_defects.cells.classify import classify_site_table
from napari_stem_defects.cells.shapes_layer import cells_to_shapes_data
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.columns.points_layer import result_to_points_data
from napari_stem_defects.io import atomic
from napari_stem_defects.io.atomic import (
    atomic_write_text,
    current_umask,
    remove_stale_temporaries,
    temporary_pattern,
)
from napari_stem_defects.io.napari_reader import read_layers
from napari_stem_defects.simulate import ImagingParams, simulate_twin

PIXEL = 0.12
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layers():
    """Image, sites and cells layers (napari look-alikes) of a small classified twin."""
    twin = simulate_twin("MoS2", (192, 192), PIXEL, defects={"V_X1": 0.05, "V_M": 0.03}, imaging=ImagingParams(dose=1e6),
                         seed=11)
    result = detect_columns(twin.image, material="MoS2", pixel_size=PIXEL)
    cells = classify_site_table(None, result.sites, "MoS2", "physics", posteriors=result.posteriors)
    pdata, pk, _ = result_to_points_data(result, scale=(PIXEL, PIXEL), units=("angstrom", "angstrom"),
                                         name="scan columns", parameters={"material": "MoS2"})
    sdata, sk, _ = cells_to_shapes_data(cells, result.a1, result.a2, scale=(PIXEL, PIXEL), units="angstrom",
                                        name="scan cells", metadata={"material": "MoS2"})
    image = SimpleNamespace(data=twin.image, name="scan", scale=np.array([PIXEL, PIXEL]),
                            units=("angstrom", "angstrom"), translate=np.zeros(2), metadata={},
                            source=SimpleNamespace(path=None))
    points = SimpleNamespace(data=pdata, features=pk["features"], metadata=pk["metadata"], name=pk["name"],
                             scale=np.array(pk["scale"]))
    shapes = SimpleNamespace(data=list(sdata), features=sk["features"], metadata=sk["metadata"], name=sk["name"],
                             scale=np.array(sk["scale"]))
    return image, points, shapes


def corrected(layers, rows, cls="V_M"):
    """Annotations of the twin with ``rows`` of its cells set to ``cls`` by a person."""
    image, points, shapes = layers
    edited = SimpleNamespace(**{**vars(shapes), "features": set_cell_class(shapes.features, rows, cls)})
    return annotations_from_layers(image, points, edited)


# --------------------------------------------------------------------------- permissions


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_get_the_umask_permissions(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        atomic_write_text(tmp_path / "a.json", "x")
        atomic.atomic_save_npy(tmp_path / "b.npy", np.zeros(3))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.npy").stat().st_mode & 0o777 == mode


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_replaced_file_keeps_its_own_permissions(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------- leftovers of killed saves


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_only_our_old_unlocked_temporaries_are_removed(tmp_path):
    target = tmp_path / "scan.dm4.annotations.json"
    stale = tmp_path / ".scan.dm4.annotations.json.ab_cd12x.tmp.json"
    young = tmp_path / ".scan.dm4.annotations.json.zz99yy00.tmp.json"
    locked = tmp_path / ".scan.dm4.annotations.json.lockedxx.tmp.json"
    others = [tmp_path / ".other.json.ab_cd12x.tmp.json", tmp_path / "scan.dm4.annotations.json.ab_cd12x.tmp.json",
              tmp_path / ".scan.dm4.annotations.json.toolongname.tmp.json", tmp_path / "notes.txt"]
    for p in (stale, young, locked, *others):
        p.write_text("partial")
    for p in (stale, locked, *others):
        _age(p, 60)
    folder_like = tmp_path / ".scan.dm4.annotations.json.dir00000.tmp.json"
    folder_like.mkdir()
    _age(folder_like, 60)
    assert temporary_pattern(target).match(stale.name) and not temporary_pattern(target).match(others[0].name)

    import fcntl

    holder = open(locked, "rb")  # noqa: SIM115 - a writer that still holds its temporary file
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    try:
        removed = remove_stale_temporaries(target)
    finally:
        holder.close()
    assert removed == [stale]
    assert not stale.exists() and young.exists() and locked.exists() and folder_like.is_dir()
    assert all(p.exists() for p in others)


KILLED_SAVE = textwrap.dedent("""
    import pathlib, sys, time
    from napari_stem_defects.annotations import load_annotations, save_annotations, set_cell_class

    ann = load_annotations(sys.argv[1])
    ann.cells.features = set_cell_class(ann.cells.features, [1, 2], "V_X1")

    def slow(self, text, *args, **kwargs):  # a big file on a slow disk: the kill lands mid-write
        with open(self, "w", encoding="utf-8") as f:
            for i in range(0, len(text), 4096):
                f.write(text[i:i + 4096])
                f.flush()
                if i == 0:
                    print("writing", flush=True)
                time.sleep(0.05)
        return len(text)

    pathlib.Path.write_text = slow
    save_annotations(ann, sys.argv[1])
    print("finished", flush=True)
""")


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_save_killed_midway_leaves_the_previous_file_and_no_leftovers_after_the_next_save(layers, tmp_path):
    path = tmp_path / "scan.npy.annotations.json"
    first = corrected(layers, [0], "V_M")
    save_annotations(first, path)
    before = path.read_bytes()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "writing"
        time.sleep(0.2)
        leftovers = [p for p in tmp_path.iterdir() if temporary_pattern(path).match(p.name)]
        assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < len(before)  # caught mid-write
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before  # the previous file, intact
    assert load_annotations(path).cells.features.loc[0, "class"] == "V_M"
    assert leftovers[0].exists()  # what the killed save left

    _age(leftovers[0], 60)  # napari is restarted a while later; the next save cleans up
    second = corrected(layers, [0, 3], "V_M")
    save_annotations(second, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert load_annotations(path).cells.features.loc[3, "class"] == "V_M"


def test_opening_the_image_removes_leftovers_of_a_killed_save(layers, tmp_path):
    image, points, shapes = layers
    np.save(tmp_path / "scan.npy", image.data)
    path = save_annotations(annotations_from_layers(image, points, shapes, image_file=tmp_path / "scan.npy"),
                            sidecar_path(tmp_path / "scan.npy"))
    leftover = tmp_path / f".{path.name}.k1ll3d_x.tmp.json"
    leftover.write_text(path.read_text()[:1000])
    _age(leftover, 60)
    assert [kind for *_, kind in read_layers(tmp_path / "scan.npy")] == ["image", "points", "shapes"]
    assert not leftover.exists()


# --------------------------------------------------------------------------- never overwrite an unreadable file


def test_a_damaged_file_is_kept_aside_and_never_overwritten(layers, tmp_path):
    path = tmp_path / "scan.npy.annotations.json"
    save_annotations(corrected(layers, [0, 5]), path)
    damaged = path.read_bytes()[: int(0.9 * path.stat().st_size)]
    path.write_bytes(damaged)

    with pytest.warns(EarlierFileKept, match=r"could not be read .* kept, untouched, as .*\.damaged-\d{8}-\d{6}"):
        save_annotations(corrected(layers, [7]), path)
    kept = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # byte for byte
    assert load_annotations(path).cells.features.loc[7, "class"] == "V_M"

    messages = []
    save_annotations(corrected(layers, [8]), path, on_kept=messages.append)  # our own file now: no copy
    assert messages == [] and len([p for p in tmp_path.iterdir() if ".damaged-" in p.name]) == 1


def test_a_file_of_another_image_is_kept_as_replaced(layers, tmp_path):
    path = tmp_path / "scan.npy.annotations.json"
    other = Annotations(ImageReference.from_array(np.ones((64, 64), np.float32), name="other"), "MoS2", None, None)
    save_annotations(other, path)
    before = path.read_bytes()
    messages = []
    save_annotations(corrected(layers, [1]), path, on_kept=messages.append)
    (kept,) = [p for p in tmp_path.iterdir() if ".replaced-" in p.name]
    assert kept.read_bytes() == before and "another image" in messages[0] and str(kept) in messages[0]


def test_a_file_known_to_be_good_is_not_read_again(layers, tmp_path, monkeypatch):
    path = tmp_path / "scan.npy.annotations.json"
    ann = corrected(layers, [2])
    save_annotations(ann, path)
    from napari_stem_defects.annotations import store

    reads = []
    real = store.load_annotations
    monkeypatch.setattr(store, "load_annotations", lambda p: reads.append(p) or real(p))
    assert keep_earlier_file(path, ann.image.sha256) is None and reads == []  # our own file: not read again
    path.write_text(path.read_text().replace('"V_M"', '"banana"', 1))  # changed behind our back: read again
    assert "could not be read" in keep_earlier_file(path, ann.image.sha256) and reads == [path]


def test_a_file_that_cannot_be_moved_aside_stops_the_save(layers, tmp_path, monkeypatch):
    path = tmp_path / "scan.npy.annotations.json"
    path.write_text("{not json")

    def refuse(*_):
        raise OSError("read-only folder")

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(OSError, match="nothing was written"):
        save_annotations(corrected(layers, [1]), path)
    assert path.read_text() == "{not json"


def test_invalid_annotations_are_not_written(layers, tmp_path):
    path = tmp_path / "scan.npy.annotations.json"
    save_annotations(corrected(layers, [1]), path)
    before = path.read_bytes()
    ann = corrected(layers, [2])
    ann.sites.data = ann.sites.data.copy()
    ann.sites.data[4] = np.nan
    with pytest.raises(ValueError, match="cannot save these annotations: sites: 1 item"):
        save_annotations(ann, path)
    assert path.read_bytes() == before
    json.loads(before)


def test_pasted_copies_of_points_and_cells_are_saved_as_added_by_a_person(layers, tmp_path):
    """napari's copy and paste repeats a point's features, site_id included: the save must not fail on it."""
    image, points, shapes = layers
    pasted = SimpleNamespace(**{**vars(points), "data": np.concatenate([points.data, points.data[:2] + 0.5]),
                                "features": pd.concat([points.features, points.features.iloc[:2]], ignore_index=True)})
    cells = SimpleNamespace(**{**vars(shapes), "data": [*shapes.data, shapes.data[0]],
                               "features": pd.concat([shapes.features, shapes.features.iloc[:1]], ignore_index=True)})
    path = save_annotations(annotations_from_layers(image, pasted, cells), tmp_path / "a.annotations.json")
    back = load_annotations(path)
    n = len(points.data)
    assert back.sites.features["site_id"].tolist()[n:] == [-1, -1]
    assert back.sites.features["site_id"].tolist()[:n] == points.features["site_id"].tolist()
    assert back.cells.features["cell_id"].tolist()[-1] == -1
