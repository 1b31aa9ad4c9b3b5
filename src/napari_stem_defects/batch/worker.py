"""One file of a batch, start to finish: read, analyse, write, record. Runs in any worker process.

:func:`process_file` is the batch's unit of work (the shape of cellpose's
distributed segmentation: a pure function per block, results written where
it ran, a small record returned). It reads the file (lazily where the format
allows, a stack one frame at a time), analyses it with
:func:`napari_stem_defects.analyze.analyze_image` and writes the files of
``analyze`` with :func:`napari_stem_defects.analyze.write_analysis` into the
file's own folder, then the report's figures, and last
``batch_record.json``: the record a re-run reads to skip the file. The
record is removed before anything else is written, so a file interrupted
half way is done again by the next run.

A worker process keeps the networks it loaded between files (they are
cached per process by :func:`napari_stem_defects.network_io.load_model`)
and limits torch and BLAS threads so that several workers on one machine do
not oversubscribe its cores.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .settings import BatchSettings

#: The record of one file, written last into its folder.
RECORD_NAME = "batch_record.json"
#: Format name and version of :data:`RECORD_NAME`.
RECORD_FORMAT, RECORD_VERSION = "napari-stem-defects batch record", 1
#: Files ``analyze`` may write into a file's folder (removed when a re-run does not write them again).
ANALYSIS_FILES = ("sites.csv", "cells.csv", "summary.json", "analysis.json", "heatmaps.npy", "uncertainty.npy",
                  "heatmaps.json", "regions.csv", "strain_maps.npy", "defect_profiles.csv", "class_averages.npz",
                  "class_average_columns.csv", "class_averages.png")
#: Folder of a file's report figures, inside its results folder.
FIGURES_DIR = "figures"
#: Largest side of the central crop the calibration check measures the lattice on.
_CALIBRATION_CROP = 2048


@dataclass(frozen=True)
class FileTask:
    """Everything a worker needs for one file (plain values: it travels to other processes and machines).

    Attributes
    ----------
    path : str
        The file (absolute; on a cluster, a path every worker sees).
    rel : str
        Its path relative to the batch's inputs; results go to ``out_dir``.
    out_dir : str
        The file's results folder, ``OUT/<rel>``.
    content_sha256 : str
        Hash of the file when the batch was planned.
    settings : dict
        :meth:`BatchSettings.as_dict`.
    fingerprint : str
        :meth:`BatchSettings.fingerprint` of those settings.
    model_sha256 : dict of str to str
        Hash of each model file the driver resolved (a worker checks it sees the same).
    threads : int, optional
        torch and BLAS threads for this file; None: the worker's cores shared by
        the tasks it runs at once (``host_slots``).
    host_slots : dict of str to int
        On a cluster: files run at once per host.
    figures : bool
        Also draw the report's figures of this file.
    """

    path: str
    rel: str
    out_dir: str
    content_sha256: str
    settings: dict[str, Any]
    fingerprint: str
    model_sha256: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    host_slots: dict[str, int] = field(default_factory=dict)
    figures: bool = True


def process_file(task: FileTask) -> dict[str, Any]:
    """Analyse one file and write its results and record; never raises for a bad file.

    Parameters
    ----------
    task : FileTask

    Returns
    -------
    dict
        The record written to ``<out_dir>/batch_record.json``: ``status`` ('ok'
        or 'failed'), ``message``, the dataset row (``row``) and what the report
        needs (``report``).
    """
    started = time.time()
    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD_NAME).unlink(missing_ok=True)
    threads = _threads_for(task)
    record: dict[str, Any] = {
        "format": RECORD_FORMAT, "version": RECORD_VERSION, "file": task.rel, "path": task.path,
        "content_sha256": task.content_sha256, "settings_sha256": task.fingerprint, "status": "failed",
        "message": "", "started": _iso(started),
    }
    caught: list[warnings.WarningMessage] = []
    loaded_before = _models_loaded()
    try:
        stat = Path(task.path).stat()
        record.update(size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
        if not task.content_sha256:  # hashed here, in parallel, just before the file is read
            from .inputs import file_sha256

            record["content_sha256"] = file_sha256(task.path)
        with _thread_limits(threads), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _check_models(task)
            record.update(_analyse(task, out))
        record["status"] = "ok"
    except MemoryError:
        record["message"] = "out of memory while analysing this file; run it with fewer workers per machine"
        record["error_type"] = "MemoryError"
    except Exception as err:  # noqa: BLE001 - a bad file is recorded, and the batch goes on
        record["message"] = _message(err)
        record["error_type"] = type(err).__name__
        if not _expected(err):
            record["traceback"] = traceback.format_exc()
    notes = [str(w.message) for w in caught if _worth_telling(w)]
    record.setdefault("warnings", [])
    record["warnings"] = list(dict.fromkeys([*record["warnings"], *notes]))
    record.update({
        "run_time_s": round(time.time() - started, 3), "finished": _iso(time.time()),
        "worker": {"host": platform.node(), "pid": os.getpid(), "threads": threads,
                   "peak_rss_mb": round(peak_rss_mb(), 1), "models_loaded": _models_loaded() - loaded_before},
    })
    from ..io.atomic import atomic_write_text, json_default

    atomic_write_text(out / RECORD_NAME, json.dumps(record, indent=1, default=json_default))
    return record


def _analyse(task: FileTask, out: Path) -> dict[str, Any]:
    """Read, analyse and write one file; the record's ``row``, ``report`` and ``warnings``."""
    from ..analyze import write_analysis
    from ..io.rsciio_reader import read_stem_file
    from .dataset import file_row

    settings = BatchSettings.from_dict(task.settings)
    images = read_stem_file(task.path, lazy=True)
    image = images[0]
    notes = []
    if len(images) > 1:
        notes.append(f"the file holds {len(images)} images; analysed the first, {image.name!r}")
    pixel_source = "file" if image.pixel_size is not None else "none"
    if settings.pixel_size:
        image.pixel_size = (float(settings.pixel_size), float(settings.pixel_size))
        pixel_source = "override"
    first = _read_frame(image, 0 if image.data.ndim == 3 else None)
    calibration = calibration_check(first, settings.material, image.pixel_size, settings.calibration_tolerance)
    if calibration.get("note"):
        notes.append(calibration["note"])
    analysis = analyze_frames(image, settings, first=first)
    paths = write_analysis(analysis, out, source=task.path)
    for name in ANALYSIS_FILES:
        if (out / name) not in paths.values():
            (out / name).unlink(missing_ok=True)
    notes += [m for result in analysis.columns for m in result.messages]
    from .figures import file_figures, remove_figures

    figures = file_figures(analysis, first, out / FIGURES_DIR) if task.figures else {}
    if not task.figures:
        remove_figures(out / FIGURES_DIR)
    summary = analysis.summary() if analysis.cells else None
    row = file_row(task.rel, analysis, summary, calibration, pixel_source)
    report = {"name": image.name, "shape": list(image.data.shape), "calibration": calibration,
              "figures": {k: str(Path(FIGURES_DIR) / v) for k, v in figures.items()},
              "totals": None if summary is None else summary["total"],
              "heatmap_regions": None if not analysis.heatmaps else analysis.heatmaps_summary()["region_counts"],
              "outputs": sorted(p.name for p in paths.values())}
    return {"row": row, "report": report, "warnings": list(dict.fromkeys(notes))}


def analyze_frames(image: Any, settings: BatchSettings, first: np.ndarray | None = None,
                   cancel: Callable[[], bool] | None = None) -> Any:
    """:func:`~napari_stem_defects.analyze.analyze_image` of a 2D image, or of a stack one frame at a time.

    A stack's frames are read (from a lazy array) and analysed one after the
    other, and each frame's detection map is dropped once its columns are
    found, so memory holds one frame's work plus the tables of all frames.
    The frames share the first frame's heatmap window, as in ``analyze``.

    Parameters
    ----------
    image : StemImage
        2D image or (t, y, x) stack; its data may be a lazy (dask) array.
    settings : BatchSettings
    first : ndarray, optional
        The first frame (or the image) already read.
    cancel : callable, optional
        Checked between frames; True raises InterruptedError.

    Returns
    -------
    Analysis
        As :func:`~napari_stem_defects.analyze.analyze_image` returns for the whole image.
    """
    from ..analyze import Analysis, analyze_image
    from ..io.stem_image import StemImage

    kwargs = settings.analysis_kwargs()
    if settings.mask:
        from ..io.mask_file import read_mask

        kwargs["mask"] = read_mask(settings.mask, image.data.shape[-2:])
    if image.data.ndim == 2:
        data = np.asarray(image.data) if first is None else first
        return analyze_image(StemImage(data, image.pixel_size, image.name, image.metadata), **kwargs)
    columns, cells, maps, regions, used, check, lattice = [], [], [], [], None, None, []
    for t in range(image.data.shape[0]):
        if cancel is not None and cancel():
            raise InterruptedError("cancelled")
        frame = first if (t == 0 and first is not None) else _read_frame(image, t)
        try:
            part = analyze_image(StemImage(frame, image.pixel_size, image.name, image.metadata), **kwargs)
        except ValueError as err:
            raise type(err)(f"frame {t}: {err}") from err
        if used is None:
            used, check = part.settings, part.check
            if part.image.pixel_size != image.pixel_size:  # the check replaced a wrong stored calibration
                image = replace(image, pixel_size=part.image.pixel_size, metadata=part.image.metadata)
            if part.heatmaps and part.heatmaps[0].window_px is not None:
                kwargs["heatmap_window"] = part.heatmaps[0].window_px
        part.columns[0].detection_map = None  # the largest thing a frame keeps; not written
        columns += part.columns
        cells += part.cells
        maps += part.heatmaps
        regions += part.regions
        lattice += part.lattice
    return Analysis(image, columns, used or {}, cells, maps, regions, check, lattice)


def _read_frame(image: Any, t: int | None) -> np.ndarray:
    """Frame ``t`` of a (possibly lazy) stack, or the 2D image (None), in memory; a read failure says so."""
    from ..io.rsciio_reader import corrupt_file_error

    from ..io.signal_to_image import in_memory

    try:
        return in_memory(image.data if t is None else image.data[t])
    except Exception as err:  # noqa: BLE001 - a truncated file fails only when its frames are read
        where = Path(image.metadata.get("source_path") or image.name)
        raise corrupt_file_error(where, str(image.metadata.get("file_format") or "?"), err) from err


def calibration_check(frame: np.ndarray, material: str | None, pixel_size: tuple[float, float] | None,
                      tolerance: float) -> dict[str, Any]:
    """The pixel size the lattice implies, next to the file's (``calibrate``'s check on a central crop).

    Returns
    -------
    dict
        ``checked`` (bool), ``measured_A`` (y, x), ``file_A`` (y, x or None),
        ``relative_difference``, ``ok`` (None without a pixel size), ``note``
        (a warning for the dataset table, or '').
    """
    from ..calibration import LatticeNotFoundError, check_calibration

    out: dict[str, Any] = {"checked": False, "measured_A": None, "file_A": pixel_size,
                           "relative_difference": None, "ok": None, "tolerance": tolerance, "note": ""}
    if not material:
        return out
    h, w = frame.shape
    size = _CALIBRATION_CROP
    crop = frame[max(0, (h - size) // 2):max(0, (h - size) // 2) + size,
                 max(0, (w - size) // 2):max(0, (w - size) // 2) + size]
    try:
        report = check_calibration(np.nan_to_num(np.asarray(crop, np.float32)), material, pixel_size,
                                   tolerance=tolerance)
    except (LatticeNotFoundError, ValueError) as err:
        out["note"] = f"calibration not checked: {err}"
        return out
    out.update(checked=True, measured_A=[float(v) for v in report.measured_pixel_size],
               relative_difference=report.relative_difference,
               ok=None if pixel_size is None else bool(report.ok))
    if pixel_size is not None and not report.ok:
        out["note"] = (f"the pixel size ({pixel_size[0]:.4g} Å) is {100 * report.relative_difference:.1f} % off "
                       f"the one the {material} lattice implies ({np.mean(report.measured_pixel_size):.4g} Å); "
                       "concentrations scale with its square")
    elif pixel_size is None:
        out["note"] = (f"no pixel size in the file: concentrations are not given; the {material} lattice "
                       f"implies {np.mean(report.measured_pixel_size):.4g} Å per pixel (--pixel-size)")
    return out


# --------------------------------------------------------------------------- worker process


def init_worker(threads: int) -> None:
    """Process-pool initializer: limit the threads of every numerical library before they start."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _set_torch_threads(threads)


def _set_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class _thread_limits:
    """torch and BLAS/OpenMP threads limited for the duration of one file (restored after)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        from threadpoolctl import threadpool_limits

        import torch

        self._torch = torch.get_num_threads()
        _set_torch_threads(self.threads)
        self._limits = threadpool_limits(self.threads)

    def __exit__(self, *exc) -> None:
        self._limits.restore_original_limits()
        _set_torch_threads(self._torch)


def _threads_for(task: FileTask) -> int:
    """Threads for one file: given by the driver, or this host's cores over the files it runs at once."""
    if task.threads:
        return int(task.threads)
    cores = available_cores()
    try:
        from distributed import get_worker

        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
        slots = task.host_slots.get(host) or get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        slots = 1
    return max(1, cores // max(1, int(slots)))


def _models_loaded() -> int:
    """Networks this process has read from disk so far (they stay cached for the next files)."""
    from ..network_io import _load_cached

    return int(_load_cached.cache_info().misses)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux and macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _check_models(task: FileTask) -> None:
    """The worker resolves the same model files as the driver (a cluster may see another models folder)."""
    if not task.model_sha256:
        return
    seen = {role: m["sha256"] for role, m in BatchSettings.from_dict(task.settings).models().items()}
    for role, digest in task.model_sha256.items():
        if seen.get(role) != digest:
            raise ValueError(f"this worker finds another {role} model than the batch was started with "
                             f"(hash {str(seen.get(role))[:12]} instead of {digest[:12]}); give the model as a "
                             "path all workers see, or set NAPARI_STEM_DEFECTS_MODELS on the workers")


def _worth_telling(caught: warnings.WarningMessage) -> bool:
    """Warnings meant for the person (readers, our own), not library noise (resources, deprecations, numpy)."""
    category = caught.category
    if not issubclass(category, UserWarning) or issubclass(category, (DeprecationWarning, FutureWarning)):
        return False
    return not str(caught.filename).replace("\\", "/").count("/numpy/")


def _expected(err: Exception) -> bool:
    """Errors with a message a person can act on (no traceback needed)."""
    return isinstance(err, (ValueError, OSError, InterruptedError))


def _message(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text if _expected(err) else f"{type(err).__name__}: {text}"


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def record_of(out_dir: str | Path) -> dict[str, Any] | None:
    """The record in a file's results folder, or None (missing or unreadable)."""
    path = Path(out_dir) / RECORD_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None


__all__ = ["ANALYSIS_FILES", "FIGURES_DIR", "FileTask", "RECORD_NAME", "analyze_frames", "available_cores",
           "calibration_check", "init_worker", "peak_rss_mb", "process_file", "record_of"]
