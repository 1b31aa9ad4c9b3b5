"""The readers against damaged files: seeded mutations of every shared format, headers declaring huge sizes,
and paths that are not files.

Every mutated file is read in one child process (``fuzz_files.py``) under a memory limit, one case at a
time with a time limit, so a hang or a blow-up fails a case instead of the session. Each file must be read
(its data may be wrong: a flipped byte in the pixels cannot be seen) or refused with a
:class:`StemReadError` that names it, within a few seconds and without much memory, whatever its header says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fuzz_files import HUGE, huge, make_cases, shared_files
from napari_stem_defects.io import limits
from napari_stem_defects.io.napari_reader import get_reader
from napari_stem_defects.io.rsciio_reader import read_stem_file
from napari_stem_defects.io.stem_image import StemReadError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Seconds one read may take (a cold first read imports rosettasciio's parsers).
SECONDS = 5
#: Address space of the child (the reads must stay far below it).
MEMORY = 4 << 30
#: Most resident memory the child may reach, reading every case.
MAX_RSS = 1 << 30


def _synthetic_sources(folder: Path) -> list[Path]:
    """Formats the shared data lack: npy (image, stack) and hspy."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image.npy", rng.random((96, 80)).astype(np.float32))
    np.save(folder / "stack.npy", rng.integers(0, 4000, (3, 64, 64)).astype(np.uint16))
    out = [folder / "image.npy", folder / "stack.npy"]
    try:
        from rsciio.hspy import file_writer

        axes = [{"name": n, "size": s, "offset": 0.0, "scale": 0.012, "units": "nm", "navigate": False}
                for n, s in (("y", 72), ("x", 64))]
        file_writer(str(folder / "image.hspy"), {
            "data": rng.random((72, 64)).astype(np.float32), "axes": axes,
            "metadata": {"General": {"title": "haadf"}, "Signal": {"signal_type": ""}}, "original_metadata": {},
            "tmp_parameters": {}, "attributes": {"_lazy": False}, "learning_results": {}, "models": {},
            "package_info": {"name": "", "version": ""}}, show_progressbar=False)
        out.append(folder / "image.hspy")
    except Exception:  # noqa: BLE001 - rsciio cannot write hspy without HyperSpy here: npy still covered
        pass
    return out


def _read_in_child(paths: list[Path]) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_files.py"), str(SECONDS), str(MEMORY), *map(str, paths)],
                          capture_output=True, text=True, timeout=600, env=env)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(paths), f"the child stopped early (status {proc.returncode}): {proc.stderr[-2000:]}"
    return results


@pytest.fixture(scope="module")
def fuzzed(shared_data, tmp_path_factory):
    """(sources, results of reading every mutated case) for all shared files and the synthetic ones."""
    folder = tmp_path_factory.mktemp("fuzz")
    sources = shared_files(shared_data) + _synthetic_sources(folder / "sources")
    cases = make_cases(sources, folder / "cases", seed=2025, per_kind=3)
    t0 = time.perf_counter()
    results = _read_in_child(cases)
    print(f"\n{len(cases)} mutated files of {len(sources)} sources read in {time.perf_counter() - t0:.1f} s")
    return sources, cases, results


def test_every_format_is_fuzzed(fuzzed):
    sources, cases, _ = fuzzed
    formats = {p.suffix.lower() for p in sources}
    assert {".dm3", ".dm4", ".emd", ".ser", ".emi", ".mrc", ".tif", ".npy", ".png", ".jpg", ".hspy"} <= formats
    kinds = {c.parent.name.rsplit(".", 1)[-1].rstrip("0123456789") for c in cases}
    assert kinds == {"truncate", "flip", "header", "huge"}
    assert len(cases) >= 10 * len(sources) - 2  # nine mutations and one huge header per file (not the .emi's)


def test_mutated_files_are_read_or_refused_clearly_fast_and_small(fuzzed):
    _, _, results = fuzzed
    bad = [r for r in results if r["outcome"] not in ("ok", "refused")]
    assert not bad, "\n".join(f"{Path(r['path']).parent.name}: {r['outcome']}: {r['message']}" for r in bad)
    for r in results:
        if r["outcome"] == "refused":  # one message naming the file
            assert Path(r["path"]).name in r["message"], r
            assert "\n" not in r["message"]
    slow = [r for r in results if r["seconds"] > SECONDS]
    assert not slow, slow
    assert max(r["max_rss"] for r in results) < MAX_RSS


def test_huge_declared_sizes_are_refused_before_reading(fuzzed):
    _, cases, results = fuzzed
    by_path = {r["path"]: r for r in results}
    huge_cases = [c for c in cases if ".huge" in c.parent.name]
    assert len(huge_cases) >= 20
    for case in huge_cases:
        r = by_path[str(case)]
        assert r["outcome"] == "refused", r
        assert r["seconds"] < 2.5, r
        assert any(w in r["message"] for w in ("declares", "too large", "cannot reshape", "fit")), r


def test_mrc_declaring_100000_cubed_is_refused_at_once(shared_data, tmp_path):
    path = tmp_path / "HAADFscan.mrc"
    assert huge(shared_data / "formats" / "HAADFscan.mrc", path)
    t0 = time.perf_counter()
    with pytest.raises(StemReadError, match=rf"{HUGE} x {HUGE} x {HUGE} voxels .* the file holds only"):
        read_stem_file(path)
    assert time.perf_counter() - t0 < 2  # rosettasciio's memory map took over 300 s
    assert get_reader(path) is not None  # napari's reader runs the same check: a message, no freeze


def test_unwritten_hdf5_datasets_are_refused(shared_data, tmp_path):
    velox = tmp_path / "velox.emd"
    assert huge(shared_data / "formats" / "STEM_HAADF_Diffraction_Micro.emd", velox)
    with pytest.raises(StemReadError, match=r"only 0 of its \d+ chunks were ever written"):
        read_stem_file(velox)
    import h5py

    hspy = tmp_path / "big.hspy"  # the QA case: 776 KB declaring 45000 x 45000 uint32
    with h5py.File(hspy, "w") as f:
        f.create_dataset("Experiments/x/data", shape=(45000, 45000), dtype=np.uint32, chunks=(512, 512))
    with pytest.raises(StemReadError, match="45000 x 45000 uint32"):
        read_stem_file(hspy)


def test_the_memory_budget_refuses_a_real_file_too_large_for_it(shared_data, monkeypatch):
    path = shared_data / "formats" / "example_Au_nanoparticle.emd"  # 2048 x 2048 uint16: 8 MiB
    assert read_stem_file(path)[0].data.shape == (2048, 2048)
    monkeypatch.setenv(limits.BUDGET_ENV, "1M")
    assert limits.memory_budget() == 1 << 20
    with pytest.raises(StemReadError, match=r"more than the 1\.0 MiB a file may use .*NAPARI_STEM_DEFECTS_READ_LIMIT"):
        read_stem_file(path)
    monkeypatch.delenv(limits.BUDGET_ENV)
    assert limits.memory_budget() >= limits.MIN_BUDGET


def test_paths_that_are_not_readable_files(tmp_path, monkeypatch):
    folder = tmp_path / "x.dm3"
    folder.mkdir()
    assert get_reader(folder) is None  # napari tries another reader
    with pytest.raises(StemReadError, match="is a folder, not a Gatan DigitalMicrograph"):
        read_stem_file(folder)
    loop = tmp_path / "loop.dm3"
    loop.symlink_to(loop)
    with pytest.raises(StemReadError, match="points back to itself"):
        read_stem_file(loop)
    dangling = tmp_path / "gone.tif"
    dangling.symlink_to(tmp_path / "nothing.tif")
    with pytest.raises(StemReadError, match="symbolic link to a file that does not exist"):
        read_stem_file(dangling)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_stem_file(tmp_path / "missing.dm4")

    locked = tmp_path / "locked.npy"
    np.save(locked, np.zeros((8, 8)))
    from napari_stem_defects.io import rsciio_reader

    def no_permission(*_, **__):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rsciio_reader, "open", no_permission, raising=False)  # root may read anything
    with pytest.raises(StemReadError, match="permission denied") as err:
        read_stem_file(locked)
    assert "corrupt" not in str(err.value)


def test_an_array_with_a_channel_axis_is_one_image(tmp_path):
    rng = np.random.default_rng(1)
    one = rng.random((512, 512, 1)).astype(np.float32)
    np.save(tmp_path / "one.npy", one)
    (image,) = read_stem_file(tmp_path / "one.npy")
    assert image.data.shape == (512, 512) and not image.is_stack
    np.testing.assert_array_equal(image.data, one[..., 0])
    np.save(tmp_path / "narrow.npy", rng.random((3, 512, 2)))
    with pytest.raises(StemReadError, match="3 frames of 512 × 2 pixels, not an image"):
        read_stem_file(tmp_path / "narrow.npy")


def test_implausible_calibrations_are_warned_about(shared_data, tmp_path):
    import struct

    data = bytearray((shared_data / "formats" / "HAADFscan.mrc").read_bytes())
    nx, ny = struct.unpack("<2i", data[:8])
    data[40:48] = struct.pack("<2f", 0.014 * nx, 56.8 * ny)  # a damaged cell size: 0.014 x 56.8 Å pixels
    (tmp_path / "odd.mrc").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="strongly non-square"):
        (image,) = read_stem_file(tmp_path / "odd.mrc")
    assert "strongly non-square" in image.metadata["calibration_warning"]
    with pytest.warns(UserWarning, match="non-square"):
        read_stem_file(shared_data / "formats" / "dmTest_float32_nonSquare_diffPixelSize.dm3")  # 2 Å x 1 nm
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # an ordinary calibration: no warning
        (plain,) = read_stem_file(shared_data / "formats" / "HAADFscan.mrc")
    assert "calibration_warning" not in plain.metadata
