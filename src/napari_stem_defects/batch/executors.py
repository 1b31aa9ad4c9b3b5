"""Where the files of a batch run: in this process, in local worker processes, or on a dask.distributed cluster.

All three take :class:`~napari_stem_defects.batch.worker.FileTask` objects and
give back handles with ``done()`` and ``result()`` (``concurrent.futures``
or ``distributed`` futures), so the driver in
:mod:`napari_stem_defects.batch.runner` is the same for a laptop and a
cluster. ``distributed`` is imported only when a cluster is used.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from .worker import FileTask, available_cores, init_worker, process_file


class SerialPool:
    """Files one after the other in this process (``--workers 1``); cancelling waits for the file in hand.

    Parameters
    ----------
    threads : int, optional
        torch and BLAS threads per file (default: all cores of this process).
    """

    kind = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or available_cores()
        self.capacity = 1
        self.workers = 1

    def submit(self, task: FileTask) -> Future:
        """Run the file now; the returned future is done."""
        future: Future = Future()
        try:
            future.set_result(process_file(_with_threads(task, self.threads)))
        except BaseException as err:  # noqa: BLE001 - handed to the driver like a worker's failure
            future.set_exception(err)
        return future

    def cancel(self) -> None:
        """Nothing runs in the background."""

    def close(self) -> None:
        """Nothing to close."""


class LocalPool:
    """Files in ``workers`` local processes (spawned: no state forked from a viewer), each keeping its models.

    Parameters
    ----------
    workers : int
        Processes.
    threads : int, optional
        torch and BLAS threads per process (default: the cores shared among them).
    """

    kind = "processes"

    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.workers = max(1, int(workers))
        self.threads = threads or max(1, available_cores() // self.workers)
        self.capacity = self.workers
        self._start()

    def _start(self) -> None:
        self.executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=init_worker, initargs=(self.threads,))

    def submit(self, task: FileTask) -> Future:
        """Queue one file."""
        return self.executor.submit(process_file, _with_threads(task, self.threads))

    def restart(self) -> None:
        """A fresh pool after a worker process died (the old one is broken)."""
        self.close()
        self._start()

    def cancel(self) -> None:
        """Drop the queued files and stop the worker processes now (files in flight are lost, not recorded)."""
        terminate = getattr(self.executor, "terminate_workers", None)  # Python >= 3.14
        if terminate is not None:
            terminate()
            return
        # before shutdown, which forgets them
        processes = list((getattr(self.executor, "_processes", None) or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)

    def close(self) -> None:
        """Shut the processes down."""
        self.executor.shutdown(wait=True, cancel_futures=True)


class DaskPool:
    """Files on a dask.distributed cluster: an address (``tcp://host:8786``), a scheduler file, or a Client.

    Parameters
    ----------
    scheduler : str or distributed.Client
        Where the scheduler is. ``"config"`` takes dask's ``scheduler-address`` setting
        (``DASK_SCHEDULER_ADDRESS`` or a dask config file); a path to an existing
        file is a scheduler file (``dask scheduler --scheduler-file``).
    threads : int, optional
        torch and BLAS threads per file; default each host's cores over the files it runs at once.

    Notes
    -----
    Workers write each file's results themselves, so the output folder (and the
    inputs) must be on a file system every worker sees, at the same paths.
    """

    kind = "dask"

    def __init__(self, scheduler: Any, threads: int | None = None) -> None:
        from pathlib import Path

        try:
            from distributed import Client
        except ImportError as err:  # pragma: no cover - declared dependency
            raise ValueError("--scheduler needs the 'distributed' package: pip install distributed") from err
        self._own = not isinstance(scheduler, Client)
        if not self._own:
            self.client = scheduler
        elif scheduler == "config":
            import dask

            address = dask.config.get("scheduler-address", None)
            if not address:
                raise ValueError("--scheduler config: dask's 'scheduler-address' is not set "
                                 "(set DASK_SCHEDULER_ADDRESS or a dask config file)")
            self.client = Client(address, timeout="30s")
        elif Path(str(scheduler)).is_file():
            self.client = Client(scheduler_file=str(scheduler), timeout="30s")
        else:
            try:
                self.client = Client(str(scheduler), timeout="30s")
            except OSError as err:
                raise ValueError(f"cannot reach the dask scheduler at {scheduler}: {err}") from err
        self.threads = threads
        info = self.client.scheduler_info(n_workers=-1) if _takes_n_workers(self.client) \
            else self.client.scheduler_info()
        workers = info.get("workers", {})
        self.host_slots: dict[str, int] = {}
        for address, worker in workers.items():
            host = address.split("://")[-1].rsplit(":", 1)[0]
            self.host_slots[host] = self.host_slots.get(host, 0) + int(worker.get("nthreads", 1))
        self.workers = len(workers)
        # enough queued for every worker thread to stay busy, few enough to cancel quickly
        self.capacity = max(2, 2 * sum(self.host_slots.values()))
        self._futures: list[Any] = []

    def submit(self, task: FileTask) -> Any:
        """Send one file to the cluster."""
        from dataclasses import replace

        task = replace(task, threads=self.threads, host_slots=self.host_slots)
        future = self.client.submit(process_file, task, pure=False, key=f"nsd-batch-{task.rel}-{id(task)}")
        self._futures.append(future)
        return future

    def cancel(self) -> None:
        """Cancel what has not finished (a file already running on a worker still finishes and is recorded)."""
        pending = [f for f in self._futures if not f.done()]
        if pending:
            self.client.cancel(pending, force=True)

    def close(self) -> None:
        """Let go of the futures; close the client if this pool made it."""
        self._futures.clear()
        if self._own:
            self.client.close()


def _with_threads(task: FileTask, threads: int) -> FileTask:
    from dataclasses import replace

    return replace(task, threads=threads)


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def make_pool(workers: int | None = None, scheduler: Any = None, threads: int | None = None) -> Any:
    """The pool a batch runs on: a cluster when ``scheduler`` is given, else ``workers`` local processes
    (1: this process)."""
    if scheduler is not None:
        return DaskPool(scheduler, threads)
    if workers is None:
        workers = default_workers()
    if workers <= 1:
        return SerialPool(threads)
    return LocalPool(workers, threads)


def default_workers() -> int:
    """Local worker processes by default: one per core, at most one per 3 GB of available memory."""
    try:
        import psutil

        by_memory = int(psutil.virtual_memory().available // (3 * 2**30))
    except ImportError:  # pragma: no cover
        by_memory = available_cores()
    return max(1, min(available_cores(), by_memory))


__all__ = ["DaskPool", "LocalPool", "SerialPool", "default_workers", "make_pool"]
