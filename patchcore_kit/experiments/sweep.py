"""The sample-efficiency sweep itself: one extraction pass, then every (method, shots, seed) cell."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..backbones import DEFAULT_BACKBONE, DEFAULT_LAYERS, STAGES
from ..data import Split
from ..errors import InputError
from ..evaluate import Scored, ground_truth_masks
from ..features import weights_key
from ..images import as_hw
from ..metrics import PixelGroundTruth
from .cell import Cell, SweepCells, extraction_pass
from .grid import BASELINE_STAGES, COLUMNS, DEFAULT_SHOTS, _as_split, _check_grid, _unique, method_stages, resolve_shots
from .rows import _append_row, _earlier_runs, _read_done_rows, _write_json, measured
from .scheduler import DaskCells, check_scheduler, is_serial
from .spade_table import SPADE_TABLE_GB, SpadePairTable


def sample_efficiency(
    split_or_dataset: Split | str | Path,
    shots: Sequence[int] = DEFAULT_SHOTS,
    methods: Sequence[str] = ("patchcore", "padim", "spade"),
    seeds: Sequence[int] = (0, 1, 2),
    backbone: str = DEFAULT_BACKBONE,
    image_size: int | Sequence[int] = 224,
    cache_dir: str | Path | None = None,
    results_path: str | Path | None = None,
    progress: bool = True,
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    format: str | None = None,
    category: str | None = None,
    summary_path: str | Path | None = None,
    baseline_stages: str = "paper",
    spade_table_gb: float = SPADE_TABLE_GB,
    scheduler="serial",
    workers: int | None = None,
    **method_params: dict,
) -> pd.DataFrame:
    """Fit and score every method for every ``(shots, seed)``; one row per fit.

    Parameters
    ----------
    split_or_dataset : a :class:`~patchcore_kit.data.Split`, or a dataset folder read with
        ``load_dataset(folder, format, category)``.
    shots, methods, seeds : the grid; methods from ``"patchcore"``, ``"padim"``, ``"spade"``,
        ``"nearest_image"``; a shot count may be ``"all"`` (the whole training pool: its rows get
        the pool's size as ``shots`` and ``full=True``).
    backbone, image_size, weights, device, batch_size : shared by every method, so all of them
        read one set of cached features.
    layers : PatchCore's stages.
    baseline_stages : ``"paper"`` (default): each baseline reads the stages of its own paper (see
        :func:`method_stages`); ``"shared"``: all methods read ``layers``, SPADE and 1-NN pool the
        deepest of them and PaDiM keeps 100 channels (the kit's earlier sweep).
    spade_table_gb : memory SPADE's shared (test image × training image × position) table may
        take; above it (or with 0, or SPADE's k > 1) SPADE is fitted and scored row by row.
    cache_dir : the feature cache (kept for later sweeps); None uses a temporary one.
    results_path : CSV that every finished row is appended to; rows already in it are skipped.
    scheduler : where the cells run (:mod:`~patchcore_kit.experiments.scheduler`): ``"serial"``
        (here, one after another), ``"processes"`` (a Dask LocalCluster of ``workers`` single-threaded
        processes, default one per core), a Dask scheduler address ``"tcp://host:8786"``, a scheduler
        file, or a ``dask.distributed.Client``. Every cell is one task; the rows equal the serial
        run's (in the order they finish in ``results_path``; the returned table is sorted). A cluster
        needs ``cache_dir`` and the dataset on storage every worker reads.
    summary_path : JSON with the settings and timings (default: ``results_path`` with ``.json``).
    **method_params : per-method constructor parameters, e.g.
        ``patchcore={"coreset_ratio": 0.01}, padim={"n_features": 80}``.

    Returns a DataFrame with columns ``COLUMNS``; ``table.attrs["summary"]`` holds the settings,
    the seconds of the one feature-extraction pass and the wall time of the whole sweep.
    ``fit_s`` is one fit, ``infer_s`` the scoring of the whole test set (anomaly maps included),
    both from cached features. Models are fitted with ``calibrate=False``: AUROC needs no threshold.
    """
    wall_start = time.perf_counter()
    split = _as_split(split_or_dataset, format, category)
    methods, seeds = list(methods), [int(s) for s in seeds]
    shots = resolve_shots(split, shots)
    if baseline_stages not in BASELINE_STAGES:
        raise InputError(
            f"{split.root or split.name}: baseline_stages must be one of {BASELINE_STAGES}, got {baseline_stages!r}"
        )
    _check_grid(split, methods, shots, seeds, method_params)
    check_scheduler(scheduler, workers, cache_dir, split.root or split.name)
    results_path = Path(results_path) if results_path is not None else None
    if summary_path is None and results_path is not None:
        summary_path = results_path.with_suffix(".json")
    summary_path = Path(summary_path) if summary_path is not None else None

    settings = {
        "dataset": split.name,
        "split_hash": split.split_hash(),
        "backbone": backbone,
        "layers": list(layers),
        "image_size": list(as_hw(image_size)),
        "weights": None if weights is None else str(weights),
        "method_params": {name: dict(params) for name, params in sorted(method_params.items())},
        "baseline_stages": baseline_stages,
    }
    if weights is not None:
        # A weights file replaced at the same path must not resume the old file's rows. (Not added
        # for the built-in weights, so summaries written before this key still resume.)
        settings["weights_key"] = weights_key(weights)
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back from the summary file
    done = _read_done_rows(results_path, summary_path, settings)
    plan = [(method, n, seed) for n in shots for seed in seeds for method in methods]
    todo = [key for key in plan if key not in done]
    summary = {
        "settings": settings,
        "methods": methods,
        "shots": shots,
        "seeds": seeds,
        "train_pool": len(split.train),
        "test_images": len(split.test),
        "rows": len(plan),
        "rows_resumed": len(plan) - len(todo),
        "status": "running",
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "scheduler": {"scheduler": scheduler if isinstance(scheduler, str) else "client"},
        "earlier_runs": _earlier_runs(summary_path) if done else [],
    }
    _write_json(summary_path, summary)

    rows = {key: done[key] for key in plan if key in done}
    with ExitStack() as stack:
        cache = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="patchcore_kit_features_")
            if cache_dir is None
            else nullcontext(cache_dir)
        )
        # A scheduler address is tried here, before the extraction pass; closed on any exit (first).
        dask = None if is_serial(scheduler) else stack.enter_context(DaskCells(scheduler, workers))
        shared = dict(
            backbone=backbone,
            image_size=image_size,
            weights=weights,
            device=device,
            batch_size=batch_size,
            feature_cache=str(cache),
        )
        params = {m: {**method_stages(m, baseline_stages, layers), **method_params.get(m, {})} for m in methods}
        make = SweepCells(split, shared, params, masks=None).make

        if todo:
            # One backbone pass per image size over every stage its methods read: each cache entry then
            # holds them all. (One size, one pass, unless a method's own settings chose another size.)
            size_of = {m: as_hw(make(m, 0).image_size) for m in methods}
            summary["stages"] = {m: list(make(m, 0)._extract_layers()) for m in methods}
            train_images = _unique(p for (_, n, seed) in todo for p in split.with_shots(n, seed).train_paths)
            passes = []
            for size in _unique(size_of.values()):
                stages = sorted(
                    {layer for m in methods if size_of[m] == size for layer in make(m, 0)._extract_layers()},
                    key=STAGES.index,
                )
                passes.append(
                    extraction_pass(
                        train_images + split.test_paths, {**shared, "image_size": size, "layers": stages}, progress
                    )
                )
            summary["feature_pass"] = {key: sum(p[key] for p in passes) for key in ("seconds", "images", "computed")}
            _write_json(summary_path, summary)  # kept even if the sweep is interrupted later
            by_size = {size: ground_truth_masks(split, size) for size in _unique(size_of.values())}  # read once
            masks = (
                None
                if any(m is None for m in by_size.values())
                else {  # regions labelled once, too
                    size: PixelGroundTruth(m) for size, m in by_size.items()
                }
            )
            cells = SweepCells(split, shared, params, masks=masks)
            spade_draws = [split.with_shots(n, seed).train_paths for (m, n, seed) in todo if m == "spade"]
            if not spade_draws:
                spade_table, use_table = None, False
            elif dask is None:
                spade_table = SpadePairTable.for_sweep(make("spade", 0), split, spade_draws, spade_table_gb)
                use_table = spade_table is not None
            else:  # on Dask each task builds its own (scheduler.py)
                spade_table = None
                use_table = SpadePairTable.fits(make("spade", 0), split, spade_draws, spade_table_gb)
            summary["spade_table"] = None if spade_table is None else spade_table.stats

        def record(row: dict) -> None:
            rows[(row["method"], row["shots"], row["seed"])] = row
            _append_row(results_path, row)
            summary["elapsed_s"] = time.perf_counter() - wall_start  # what an interruption leaves behind
            _write_json(summary_path, summary)

        bar = stack.enter_context(tqdm(total=len(todo), desc="sweep", unit="fit", disable=not progress))
        if dask is not None and todo:
            summary["spade_table"] = dask.run(
                cells, todo, use_table, {"image_size": size, "layers": stages}, record, bar
            )
            summary["scheduler"] = dask.description
        if dask is None and todo:

            def score(cell: Cell) -> Scored:
                method, n, seed = cell
                bar.set_postfix_str(f"{method} {n}-shot seed {seed}")
                if method == "spade" and spade_table is not None:
                    scored = spade_table.score(split.with_shots(n, seed), cells.masks_for("spade"))
                    summary["spade_table"] = spade_table.stats
                    return scored
                return cells.score(cell)

            run_measuring_behind(todo, score, lambda cell, scored: cells.row(cell, measured(scored)), record, bar)

    table = pd.DataFrame([rows[key] for key in plan], columns=list(COLUMNS))
    table["full"] = table.shots == len(split.train)  # also for rows resumed from a file
    table = table.sort_values(["method", "shots", "seed"], ignore_index=True)
    wall = time.perf_counter() - wall_start
    summary.update(
        status="finished",
        elapsed_s=wall,
        sweep_wall_s=wall,
        wall_s_all_runs=wall + sum(run.get("elapsed_s", 0.0) for run in summary["earlier_runs"]),
        fit_s_total=float(table.fit_s.sum()),
        infer_s_total=float(table.infer_s.sum()),
    )
    # "The whole sweep costs N extraction passes": only a pass that computed every image is one.
    passes = [run.get("feature_pass") for run in summary["earlier_runs"]] + [summary.get("feature_pass")]
    cold = [p for p in passes if p and p["computed"] == p["images"] and p["seconds"] > 0]
    if cold:
        summary["sweep_over_one_pass"] = summary["wall_s_all_runs"] / cold[0]["seconds"]
    _write_json(summary_path, summary)
    table.attrs["summary"] = summary
    return table


def run_measuring_behind(
    todo: list[Cell], score: Callable[[Cell], Scored], row: Callable[[Cell, Scored], dict], record, bar
) -> None:
    """The serial sweep: each cell scored here, then measured in a second thread while the next
    cell is fitted and scored; ``record`` gets the rows in ``todo``'s order.

    The metrics of a fit are a few sorts and binary searches of its 30 million pixel scores, on
    one core (numpy lets go of the interpreter while it sorts); the next cell's products use
    both. Overlapping them keeps the second core busy. The numbers are the same as measured one
    after another: each row's metrics read only its own maps. Should a cell fail (or Ctrl-C), the
    row measured behind it is still recorded before the error goes on, so a resumed sweep skips it.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="sweep-metrics") as measuring:
        behind: tuple[Cell, Future] | None = None
        try:
            for cell in todo:
                scored = score(cell)
                if behind is not None:
                    record(behind[1].result())
                    bar.update()
                behind = cell, measuring.submit(row, cell, scored)
                del scored  # its maps live on in the task only: at most two cells' maps at once
        finally:
            if behind is not None:
                record(behind[1].result())
                bar.update()
