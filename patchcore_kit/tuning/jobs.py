"""Running a tune's fits (candidate × fold): how many at once, in which order, in which processes.

Why parallel processes pay even on two cores: a fit's greedy coreset, most of its time, runs on one
thread by design (``coreset.LOOP_THREADS``: its small matrix products gain nothing from a second
thread and lose much on a busy machine), so one fit at a time leaves the other core idle for most
of the tune. Two fits at once, each with one thread, keep both busy.

* :func:`resolve_jobs` — ``jobs=None`` (the default): as many fits at once as the CPUs this process
  may use, at most the number of fits and what the memory available now holds (PatchCore's own
  estimate, :func:`patchcore_kit.memory.estimate`, for the largest candidate). Fits too small to
  repay starting a process (below :data:`MIN_PARALLEL_PATCHES` training patches: a second or so
  each, against several seconds to start a worker that imports torch), PaDiM and SPADE, and any
  device other than the CPU run one fit at a time unless ``jobs`` says otherwise.
* :func:`longest_first` — fits ordered by their expected cost (patches × feature width), so that
  the last fits to finish are short ones and no core waits long for a straggler.
* :func:`run_tasks` — the fits, serially or in spawned processes, each result handed to ``record``
  as soon as it is in (the resume log is written from there).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from ..backbones import STAGE_CHANNELS
from ..images import as_hw
from ..memory import STRIDES, available_bytes, estimate

#: Below this many training patches in the largest fit, ``jobs=None`` runs the fits in this process.
MIN_PARALLEL_PATCHES = 20_000


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def fit_bytes(params: dict, n_train: int, n_test: int, metric: str) -> int:
    """A PatchCore fit-and-score's peak memory (bytes), estimated from its parameters."""
    return estimate(
        params["image_size"],
        params["layers"],
        STAGE_CHANNELS[params["backbone"]],
        params["backbone"],
        n_train=n_train,
        n_test=n_test,
        target_dim=params.get("target_dim"),
        coreset_ratio=params.get("coreset_ratio", 0.1),
        sampler=params.get("sampler", "greedy"),
        projection_dim=params.get("projection_dim", 128),
        pixel_metrics=metric == "pixel_auroc",
        aggregation=params.get("aggregation", "mean"),
        patch_size=params.get("patch_size", 3),
    )["total"]


def resolve_jobs(
    jobs: int | None,
    n_tasks: int,
    params: list[dict],
    n_train: int,
    n_test: int,
    metric: str,
    method: str,
    device: str,
) -> int:
    """How many fits run at once: ``jobs`` when given, else the default described in the module doc."""
    if jobs is not None:
        return max(1, min(int(jobs), max(1, n_tasks)))
    if method != "patchcore" or device != "cpu" or n_tasks < 2 or not params:
        return 1
    if max(training_patches(p, n_train) for p in params) < MIN_PARALLEL_PATCHES:
        return 1
    largest = max(fit_bytes(p, n_train, n_test, metric) for p in params)
    by_memory = max(1, available_bytes() // max(1, largest))
    return int(max(1, min(usable_cpus(), n_tasks, by_memory)))


def training_patches(params: dict, n_train: int) -> int:
    """Patches a fit on ``n_train`` images puts into the memory bank before the coreset."""
    h, w = as_hw(params["image_size"])
    finest = STRIDES.get(params["layers"][0], 16)
    return n_train * -(-h // finest) * -(-w // finest)


def fit_cost(params: dict) -> float:
    """Relative cost of one fit: patches per image on the finest stage's grid × feature width.

    Only the order matters (:func:`longest_first`); PaDiM and SPADE candidates have the same keys.
    """
    width = sum(STAGE_CHANNELS[params["backbone"]].get(layer, 0) for layer in params["layers"])
    return training_patches(params, 1) * max(1, width)


def longest_first(tasks: list[tuple], cost: Callable[[tuple], float]) -> list[tuple]:
    """``tasks`` sorted by ``cost``, dearest first (stable: equal costs keep their order)."""
    return sorted(tasks, key=lambda task: -cost(task))


def _worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:  # faiss keeps an OpenMP pool of its own: without this each worker would use every core
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


def run_tasks(function: Callable, tasks: list[tuple], jobs: int, record: Callable) -> None:
    """``record(*function(task))`` for every task: in this process when ``jobs`` is 1, else in
    ``jobs`` spawned processes with an equal share of this process's torch threads each."""
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            record(*function(task))
        return
    threads = max(1, torch.get_num_threads() // jobs)
    # spawn, not fork: a forked child of a process whose OpenMP threads already ran can hang
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_threads, initargs=(threads,)) as pool:
        for future in as_completed([pool.submit(function, task) for task in tasks]):
            record(*future.result())
