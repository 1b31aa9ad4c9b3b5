"""The batch driver behind ``napari-stem-defects batch`` and the Batch dock: plan, run, resume, summarise.

:func:`run_batch` finds the files, skips those a previous run finished with
the same settings (their record in ``OUT/<rel>/batch_record.json`` holds the
content hash and the settings fingerprint), sends the rest to a pool
(:mod:`napari_stem_defects.batch.executors`), and writes, as files finish,
``OUT/dataset.csv`` and ``OUT/batch.json``, then ``OUT/report.html``. Every
file's results are final once its record is written, so an interrupted
batch loses only the files in flight; the next run finishes the rest. The
results of a file do not depend on how many workers ran the batch, and the
tables are sorted by file.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .inputs import InputFile, collect_inputs, file_sha256
from .settings import BatchSettings
from .worker import RECORD_FORMAT, RECORD_NAME, RECORD_VERSION, FileTask, record_of

#: Format name and version of ``batch.json``.
BATCH_FORMAT, BATCH_VERSION = "napari-stem-defects batch", 1
#: Seconds between rewrites of ``dataset.csv`` and ``batch.json`` while a batch runs.
_SAVE_EVERY_S = 10.0
#: Packages whose versions ``batch.json`` records.
_PACKAGES = ("numpy", "scipy", "pandas", "scikit-image", "torch", "rosettasciio", "matplotlib", "dask",
             "distributed", "jinja2")


@dataclass
class BatchProgress:
    """What a running batch reports after planning and after each file.

    Attributes
    ----------
    kind : {'planned', 'started', 'finished', 'done'}
    total : int
        Files in the batch.
    to_do : int
        Files this run analyses (the others were finished before).
    done : int
        Files this run finished so far (ok or failed).
    failed : int
        Files this run recorded as failed so far.
    rel : str, optional
        The file started or finished.
    record : dict, optional
        The finished file's record.
    elapsed_s, eta_s : float
        Seconds since the first file started; estimated seconds to go (nan until a file finished).
    """

    kind: str
    total: int
    to_do: int
    done: int = 0
    failed: int = 0
    rel: str | None = None
    record: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    eta_s: float = float("nan")


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    out_dir : Path
    records : list of dict
        Every file's record (this run's and the earlier ones kept), sorted by file.
    analysed, skipped, failed : int
        Files analysed by this run, kept from earlier runs, and failed (this run or kept).
    cancelled : bool
    dataset, batch_json, report : Path
        The files written (``report`` None when no report was asked for).
    elapsed_s : float
    """

    out_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    analysed: int = 0
    skipped: int = 0
    failed: int = 0
    cancelled: bool = False
    dataset: Path | None = None
    batch_json: Path | None = None
    report: Path | None = None
    elapsed_s: float = 0.0


def run_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    settings: BatchSettings | None = None,
    *,
    workers: int | None = None,
    scheduler: Any = None,
    threads: int | None = None,
    retry_failed: bool = False,
    redo: bool = False,
    report: bool = True,
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    command: str | None = None,
) -> BatchResult:
    """Analyse many files with the same settings; resumable, in parallel, with a dataset table and report.

    Parameters
    ----------
    inputs : sequence of str or Path
        Files, folders (recursively) and glob patterns (see :func:`collect_inputs`).
    out_dir : str or Path
        Results: ``OUT/<relative path>/`` per file, ``dataset.csv``, ``batch.json``, ``report.html``.
    settings : BatchSettings, optional
        The ``analyze`` settings for every file (default: ``analyze``'s defaults).
    workers : int, optional
        Local worker processes (1: this process; default one per core, memory allowing).
    scheduler : str or distributed.Client, optional
        Run on a dask.distributed cluster instead (address, scheduler file, ``"config"`` or a Client).
    threads : int, optional
        torch and BLAS threads per file (default: the cores shared among the files running at once).
    retry_failed : bool
        Analyse again the files an earlier run recorded as failed (default: keep their record).
    redo : bool
        Analyse every file again, whatever was done before.
    report : bool
        Write ``report.html``.
    progress : callable, optional
        Called with a :class:`BatchProgress` after planning and when each file starts and finishes.
    cancel : callable, optional
        Returns True to stop: queued files are dropped, local worker processes stopped.
    command : str, optional
        The command line, for ``batch.json``.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        Bad settings or models (before any work), no input files, or an unreachable scheduler.
    FileNotFoundError
        An input that does not exist.
    """
    from .executors import make_pool

    settings = settings or BatchSettings()
    started = time.time()
    out = Path(out_dir).expanduser().resolve()
    settings.check()
    files = collect_inputs(inputs, exclude=[out])
    if not files:
        raise ValueError("no files to analyse: the inputs hold no file with an extension this plugin reads")
    out.mkdir(parents=True, exist_ok=True)
    models = settings.models()
    fingerprint = settings.fingerprint(models)
    kept, tasks = _plan(files, out, settings, fingerprint, models, retry_failed, redo, report)
    records: dict[str, dict[str, Any]] = dict(kept)
    say = progress or (lambda _p: None)
    state = BatchProgress("planned", total=len(files), to_do=len(tasks))
    say(replace(state))
    pool = make_pool(workers, scheduler, threads) if tasks else None
    info = _batch_info(inputs, out, settings, fingerprint, models, pool, command, started)
    _save(out, records, info, "running")
    cancelled = False
    try:
        if pool is not None:
            cancelled = _drive(pool, tasks, records, state, say, cancel, out, info)
    finally:
        if pool is not None:
            if cancelled:
                pool.cancel()
            pool.close()
    result = BatchResult(out, [records[k] for k in sorted(records)], cancelled=cancelled)
    result.analysed = state.done
    result.skipped = len(kept)
    result.failed = sum(r.get("status") != "ok" for r in result.records)
    result.elapsed_s = time.time() - started
    info["elapsed_s"] = round(result.elapsed_s, 2)
    result.dataset, result.batch_json = _save(out, records, info, "cancelled" if cancelled else "complete",
                                              counts=(result.analysed, result.skipped, result.failed))
    if report:
        from .report import write_report
        from .worker import peak_rss_mb

        result.report = write_report(out, result.records, info)
        info["driver_peak_rss_mb"] = round(peak_rss_mb(), 1)
        _save(out, records, info, info["status"], counts=(result.analysed, result.skipped, result.failed))
    say(replace(state, kind="done", elapsed_s=result.elapsed_s, eta_s=0.0))
    return result


def _plan(files: list[InputFile], out: Path, settings: BatchSettings, fingerprint: str,
          models: dict[str, dict[str, str]], retry_failed: bool, redo: bool, figures: bool
          ) -> tuple[dict[str, dict], list[FileTask]]:
    """Records kept from earlier runs, and the tasks of the files to analyse."""
    kept: dict[str, dict] = {}
    tasks = []
    digests = {role: m["sha256"] for role, m in models.items()}
    for f in files:
        record = None if redo else record_of(out / f.rel)
        if record is not None and _still_valid(record, f, fingerprint, retry_failed):
            kept[f.rel] = record
            continue
        tasks.append(FileTask(str(f.path), f.rel, str(out / f.rel), "", settings.as_dict(), fingerprint, digests,
                              figures=figures))
    return kept, tasks


def _still_valid(record: dict, f: InputFile, fingerprint: str, retry_failed: bool) -> bool:
    """A record from an earlier run stands for this file: same settings, same content, and ok (or failed and
    not to be retried)."""
    if record.get("settings_sha256") != fingerprint or record.get("version") != RECORD_VERSION:
        return False
    if record.get("status") != "ok" and retry_failed:
        return False
    try:
        stat = f.path.stat()
    except OSError:
        return False
    if record.get("size_bytes") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        return bool(record.get("content_sha256"))
    return record.get("content_sha256") == file_sha256(f.path)


def _drive(pool: Any, tasks: list[FileTask], records: dict[str, dict], state: BatchProgress,
           say: Callable[[BatchProgress], None], cancel: Callable[[], bool] | None, out: Path, info: dict) -> bool:
    """Keep the pool fed until every task finished (True when cancelled)."""
    todo = deque(tasks)
    isolate: deque[FileTask] = deque()  # files in flight when a worker process died: one at a time
    inflight: dict[Any, FileTask] = {}
    ran_alone: set[str] = set()  # files that were the only one in a fresh pool when it broke are lost for good
    first_start, last_save = None, time.time()
    while todo or isolate or inflight:
        if cancel is not None and cancel():
            return True
        while len(inflight) < pool.capacity and (todo or isolate):
            alone = bool(isolate)
            if alone and inflight:
                break
            task = isolate.popleft() if alone else todo.popleft()
            first_start = first_start or time.time()
            say(replace(state, kind="started", rel=task.rel, record=None,
                        elapsed_s=time.time() - first_start))
            inflight[pool.submit(task)] = task
            if alone:
                ran_alone.add(task.rel)
                break
        finished = [h for h in inflight if h.done()]
        if not finished:
            time.sleep(0.05)
            continue
        broken = []
        for handle in finished:
            task = inflight.pop(handle)
            try:
                record = handle.result()
            except BrokenProcessPool:
                broken.append(task)
                continue
            except CancelledError:
                return True
            except Exception as err:  # noqa: BLE001 - the worker died or the cluster lost it
                record = _lost_record(task, f"the worker running this file failed ({type(err).__name__}: {err})")
            _finish(task, record, records, state, say, first_start)
        if broken:
            # a pool breaks for all its files at once, whichever worker died: only a file that ran alone is
            # known to have killed its worker (one that merely happened to be the last in flight is not)
            for task in [*broken, *inflight.values()]:
                if task.rel in ran_alone:
                    record = _lost_record(task, "the worker process running this file died (out of memory?); "
                                                "rerun it with fewer workers, or alone, and --retry-failed")
                    _finish(task, record, records, state, say, first_start)
                else:
                    isolate.append(task)
            inflight.clear()
            pool.restart()
        if time.time() - last_save > _SAVE_EVERY_S:
            _save(out, records, info, "running")
            last_save = time.time()
    return False


def _finish(task: FileTask, record: dict, records: dict[str, dict], state: BatchProgress,
            say: Callable[[BatchProgress], None], first_start: float | None) -> None:
    records[task.rel] = record
    state.done += 1
    state.failed += record.get("status") != "ok"
    elapsed = time.time() - (first_start or time.time())
    remaining = state.to_do - state.done
    state.elapsed_s = elapsed
    state.eta_s = elapsed / state.done * remaining if state.done else float("nan")
    say(replace(state, kind="finished", rel=task.rel, record=record))


def _lost_record(task: FileTask, message: str) -> dict[str, Any]:
    """The record of a file whose worker never returned one (written so that a re-run knows)."""
    from ..io.atomic import atomic_write_text

    record = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "file": task.rel, "path": task.path,
              "content_sha256": task.content_sha256 or _digest_or_empty(task.path),
              "settings_sha256": task.fingerprint, "status": "failed", "message": message,
              "error_type": "WorkerLost", "warnings": []}
    try:
        stat = Path(task.path).stat()
        record.update(size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
    except OSError:
        pass
    Path(task.out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(task.out_dir) / RECORD_NAME, json.dumps(record, indent=1))
    return record


def _digest_or_empty(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return ""


def _batch_info(inputs: Sequence[str | Path], out: Path, settings: BatchSettings, fingerprint: str,
                models: dict, pool: Any, command: str | None, started: float) -> dict[str, Any]:
    """The ``batch.json`` entries known when the batch starts."""
    from ..provenance import provenance
    from .worker import _iso

    return {
        "format": BATCH_FORMAT, "version": BATCH_VERSION, **provenance(),
        "command": command, "inputs": [str(i) for i in inputs], "out_dir": str(out),
        "settings": settings.as_dict(), "settings_sha256": fingerprint, "models": models,
        "versions": _versions(), "host": platform.node(), "platform": platform.platform(),
        "executor": {"kind": getattr(pool, "kind", None), "workers": getattr(pool, "workers", 0),
                     "threads_per_file": getattr(pool, "threads", None)},
        "started": _iso(started), "record_file": RECORD_NAME,
    }


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out: dict[str, str | None] = {"napari-stem-defects": __version__, "python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _save(out: Path, records: dict[str, dict], info: dict, status: str,
          counts: tuple[int, int, int] | None = None) -> tuple[Path, Path]:
    """Write ``dataset.csv`` and ``batch.json`` (atomically); ``info`` gains the status and counts."""
    from ..io.atomic import atomic_write_text, json_default
    from .dataset import write_dataset
    from .worker import _iso

    dataset = write_dataset(records.values(), out / "dataset.csv")
    ok = sum(r.get("status") == "ok" for r in records.values())
    info.update(status=status, updated=_iso(time.time()),
                files={"recorded": len(records), "ok": ok, "failed": len(records) - ok})
    if counts is not None:
        info["files"].update(analysed_this_run=counts[0], kept_from_earlier_runs=counts[1])
    path = out / "batch.json"
    atomic_write_text(path, json.dumps(info, indent=2, default=json_default))
    return dataset, path


def format_duration(seconds: float) -> str:
    """A duration as a person reads it.

    Examples
    --------
    >>> format_duration(42), format_duration(210), format_duration(4320 * 1.0), format_duration(7200)
    ('42 s', '3.5 min', '72.0 min', '2.0 h')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["BATCH_FORMAT", "BATCH_VERSION", "BatchProgress", "BatchResult", "format_duration", "run_batch"]
