"""Where the sweep's cells run: one after another in this process, or as tasks on Dask.

``scheduler="serial"`` runs the cells in a loop here (the default). ``"processes"`` starts a
:class:`dask.distributed.LocalCluster` (one single-threaded worker process per core, or
``workers``); a scheduler address (``tcp://host:8786``), a scheduler file (``scheduler.json``, as
``dask scheduler --scheduler-file`` and dask-jobqueue write it) or a ready
:class:`dask.distributed.Client` uses a cluster that is already running.

Every (method, shots, seed) cell is one task. The feature cache is filled before any task runs, by
the one extraction pass in this process, exactly as the serial sweep fills it: the same batches
through the same backbone give the same bytes in every cache entry, so a Dask sweep and a serial
sweep read identical features (with the pass split into tasks, a batch's make-up, and so the
float rounding of the convolutions, could differ). Workers then only *read* the cache; they need
the dataset and the cache at the same paths (shared storage on a cluster), which is checked on a
worker before any task is sent.

SPADE's shared pair table (:class:`~.spade_table.SpadePairTable`) cannot be shared between
processes, so with the table SPADE's cells of one seed form one task: the pairs are shared across
that seed's shot counts inside the task, and each seed's task builds its own table (pairs common to
two seeds are computed twice, in parallel). Each pair's distance does not depend on which other
pairs are computed with it, so the rows equal the serial sweep's (tested).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import InputError
from .cell import Cell, SweepCells, shared_extractor

SERIAL, PROCESSES = "serial", "processes"
#: How long a scheduler address may take to answer before the sweep gives up with an InputError.
CONNECT_TIMEOUT_S = 10


def is_serial(scheduler) -> bool:
    return isinstance(scheduler, str) and scheduler == SERIAL


def check_scheduler(scheduler, workers: int | None, cache_dir, where) -> None:
    """Refuse a scheduler the sweep cannot use, before any work (an address is tried later, on entry)."""
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"{where}: workers must be a whole number of at least 1, got {workers!r}")
    if not isinstance(scheduler, str):
        from dask.distributed import Client

        if not isinstance(scheduler, Client):
            raise InputError(
                f"{where}: scheduler must be 'serial', 'processes', a Dask scheduler address "
                f"(tcp://host:8786), a scheduler file or a dask.distributed.Client, "
                f"got {type(scheduler).__name__}"
            )
    elif scheduler not in (SERIAL, PROCESSES) and "://" not in scheduler and not scheduler.endswith(".json"):
        raise InputError(
            f"{where}: scheduler must be 'serial', 'processes', a Dask scheduler address "
            f"(tcp://host:8786) or a scheduler file (.json), got {scheduler!r}"
        )
    remote = not isinstance(scheduler, str) or scheduler not in (SERIAL, PROCESSES)
    if remote and cache_dir is None:
        raise InputError(
            f"{where}: a Dask cluster's workers read the feature cache: give cache_dir (--feature-cache) "
            f"on storage every worker reads, at the same path"
        )


def dask_tasks(todo: list[Cell], spade_table: bool) -> list[tuple[list[Cell], bool]]:
    """The cells grouped into tasks: one cell each, but with the table SPADE's cells of one seed together.

    Returns ``(cells, with_spade_table)`` per task, the SPADE groups first (the longest tasks
    start first). Within a group the cells keep the sweep's order (shot counts ascending).
    """
    by_seed: dict[int, list[Cell]] = {}
    single = []
    for cell in todo:
        if cell[0] == "spade" and spade_table:
            by_seed.setdefault(cell[2], []).append(cell)
        else:
            single.append(([cell], False))
    return [(group, True) for group in by_seed.values()] + single


def run_task(cells: SweepCells, group: list[Cell], with_spade_table: bool) -> tuple[list[dict], dict | None]:
    """One Dask task: the rows of ``group`` (and the SPADE table's counts when it used one)."""
    if with_spade_table:
        return cells.run_spade_with_table(group)
    return [cells.run(cell) for cell in group], None


def what_a_worker_sees(cells: SweepCells, probe: dict) -> dict:
    """Run on a worker: its kit version, and whether it reads the cache entry of the first test image.

    ``probe`` is one extraction pass's ``{"image_size", "layers"}`` (the cache key besides the backbone).
    """
    import socket

    from ..version import __version__

    extractor = shared_extractor(cells.shared, probe["layers"], probe["image_size"])
    try:
        cached = extractor.is_cached(cells.split.test_paths[0])
    except InputError as error:  # the dataset itself is not there
        cached = str(error)
    return {"version": __version__, "cached": cached, "host": socket.gethostname()}


class DaskCells:
    """A Dask client for one sweep (or several, in :func:`~.command.run_sweep`): opened, used, closed.

    An address or scheduler file is connected on entry, so a wrong one fails before the extraction
    pass; a LocalCluster starts on first use, after the pass (its workers would only wait for it).
    On exit, normal or not (an error in a task, Ctrl-C), the client is closed and a cluster this
    object started is shut down with its worker processes.
    """

    def __init__(self, scheduler, workers: int | None = None):
        self.scheduler, self.workers = scheduler, workers
        self._client = None
        self._cluster = None

    def __enter__(self) -> DaskCells:
        if not isinstance(self.scheduler, str):
            self._client = self.scheduler  # the caller's Client: used, never closed here
        elif self.scheduler != PROCESSES:
            self._client = self._connect(self.scheduler)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._cluster is not None:  # only what this object opened
            self._client.close()
            self._cluster.close()
            self._client = self._cluster = None
        elif isinstance(self.scheduler, str) and self._client is not None:
            self._client.close()
            self._client = None

    @property
    def description(self) -> dict:
        kind = self.scheduler if isinstance(self.scheduler, str) else "client"
        workers = len(self._client.nthreads()) if self._client is not None else None
        return {"scheduler": kind, "workers": workers}

    def client(self):
        if self._client is None:
            from dask.distributed import Client, LocalCluster

            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            workers = self.workers or cores
            # One thread per worker process: cells are independent, so processes, not threads, share the cores.
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,
            )
            self._client = Client(self._cluster, set_as_default=False)
        return self._client

    @staticmethod
    def _connect(address: str):
        from dask.distributed import Client

        try:
            if "://" in address:
                return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            if not Path(address).is_file():
                raise InputError(f"{address}: no such Dask scheduler file")
            return Client(scheduler_file=address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise InputError(
                f"{address}: no Dask scheduler answers there within {CONNECT_TIMEOUT_S} s ({error})"
            ) from None

    def run(self, cells: SweepCells, todo: list[Cell], spade_table: bool, probe: dict, record, bar) -> dict:
        """Send every cell as a task; ``record(row)`` each row as its task finishes (in this process).

        Returns the SPADE tables' counts summed over the tasks that used one (None when none did).
        """
        from dask.distributed import as_completed

        client = self.client()
        shipped = client.scatter(cells, broadcast=True, hash=False)  # masks and split sent once per worker
        self._check_workers(client.submit(what_a_worker_sees, shipped, probe, pure=False).result(), cells)
        tasks = dask_tasks(todo, spade_table)
        futures = [
            client.submit(run_task, shipped, group, with_table, pure=False, priority=int(with_table))
            for group, with_table in tasks
        ]
        totals = None
        try:
            for future in as_completed(futures, loop=client.loop):
                rows, stats = future.result()  # a task's error is raised here, with its own type
                for row in rows:
                    record(row)
                    bar.update()
                if stats is not None:
                    totals = (
                        dict(stats, tables=1)
                        if totals is None
                        else {
                            **totals,
                            "tables": totals["tables"] + 1,
                            **{k: totals[k] + stats[k] for k in ("pairs_computed", "pairs_read", "table_bytes")},
                        }
                    )
        finally:
            client.cancel(futures)  # after an error or Ctrl-C the workers stop on the rest
        return totals

    @staticmethod
    def _check_workers(seen: dict, cells: SweepCells) -> None:
        from ..version import __version__

        if seen["version"] != __version__:
            raise InputError(
                f"Dask worker on {seen['host']} runs patchcore_kit {seen['version']}, this process "
                f"{__version__}: install the same version on every worker"
            )
        if seen["cached"] is not True:
            why = seen["cached"] if isinstance(seen["cached"], str) else "no entry for its first test image"
            raise InputError(
                f"{cells.shared['feature_cache']}: a Dask worker on {seen['host']} cannot read the "
                f"feature cache ({why}); the cache and the dataset must be on storage every worker "
                f"reads, at the same paths"
            )
