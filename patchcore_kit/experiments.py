"""The sample-efficiency sweep: how good is each method with 1, 2, 5, ... 50 training images?

For every number of shots and every seed, ``Split.with_shots(shots, seed)`` draws the training
images; every method is fitted on them and scored on the whole test set (image AUROC, pixel AUROC,
AUPRO, fit and inference seconds). This is the PatchCore paper's low-shot study (Sec. 4.5).

Why a sweep costs little more than one pass of the backbone over the images: PatchCore, PaDiM and
SPADE read the *same* backbone stage maps, so the sweep first runs the backbone once over every
image it will need (the test set and the union of all training draws) and stores the maps in the
:class:`~patchcore_kit.features.FeatureExtractor` cache. Every fit and every scoring after that
reads the cache, and the backbone is never loaded again. The same cache serves a second sweep.

Each finished row is appended to ``results_path`` at once; a sweep that is interrupted and started
again skips the rows already there (and refuses a results file made with other settings).

Each baseline reads the stages its own paper sets (``baseline_stages="paper"``: PaDiM layer1+2+3,
SPADE and 1-NN pixels from layer1+2+3 and the pooled layer4), or PatchCore's (``"shared"``, the
kit's earlier setting). The extraction pass runs the backbone once over the union of the stages
all methods need; the cache keeps them in one entry per image. SPADE's k=1 pixel search, the
sweep's dominant cost, is shared between rows: the distance of each test position to its nearest
position in each training image is computed once per (test image, training image) pair and serves
every shot count and seed that picks that image (exactly; :class:`SpadePairTable`).

``shots`` may contain ``"all"``: the whole training pool, stored as its real count with
``full=True``. :func:`run_sweep` with ``category="all"`` sweeps every category of an MVTec-layout
dataset, and :func:`category_summary` averages per shot count over categories as the paper's
Fig. 6 averages MVTec AD's 15; :func:`check_claims` tests the paper's §C.1 statements on it.

>>> table = sample_efficiency(load_dataset("../shared/data/mtd", "mtd"), shots=(1, 5, 20),
...                           cache_dir="runs/cache", results_path="runs/sweep/results.csv")  # doctest: +SKIP
>>> table.groupby(["method", "shots"]).image_auroc.mean()                                      # doctest: +SKIP
"""
from __future__ import annotations

import csv
import json
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .atomic import open_text, save_figure, write_text
from .backbones import DEFAULT_BACKBONE, DEFAULT_LAYERS, STAGES
from .base import ScoredImages, upsample_and_smooth
from .baselines import SPADE, NearestImage, PaDiM, nearest_images, nearest_in_each_image
from .data import Split, load_dataset
from .data.mvtec import mvtec_categories
from .errors import InputError
from .evaluate import evaluate, ground_truth_masks
from .features import FeatureExtractor, weights_key
from .images import as_hw
from .params import check_params
from .patchcore import PatchCore

METHODS = {"patchcore": PatchCore, "padim": PaDiM, "spade": SPADE, "nearest_image": NearestImage}
COLUMNS = ("method", "shots", "full", "seed", "image_auroc", "pixel_auroc", "aupro", "fit_s", "infer_s")
METRICS = ("image_auroc", "pixel_auroc", "aupro")
DEFAULT_SHOTS = (1, 2, 5, 10, 16, 20, 50)
#: The shot count that means "the whole training pool".
ALL = "all"
BASELINE_STAGES = ("paper", "shared")
#: Settings that decide the backbone features, or that ``baseline_stages`` decides; they are set
#: once for the whole sweep so that all methods read the same cache entries.
_SWEEP_WIDE = ("backbone", "layers", "global_layer", "image_size", "weights", "device", "batch_size",
               "feature_cache", "seed", "calibrate", "progress")
#: PaDiM's channel count in the "shared" setting: what the kit used before each paper's stages.
SHARED_PADIM_FEATURES = 100
#: Memory SPADE's shared pair table may take before the sweep scores SPADE row by row instead.
SPADE_TABLE_GB = 4.0


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
        raise InputError(f"{split.root or split.name}: baseline_stages must be one of {BASELINE_STAGES}, "
                         f"got {baseline_stages!r}")
    _check_grid(split, methods, shots, seeds, method_params)
    results_path = Path(results_path) if results_path is not None else None
    if summary_path is None and results_path is not None:
        summary_path = results_path.with_suffix(".json")
    summary_path = Path(summary_path) if summary_path is not None else None

    settings = {
        "dataset": split.name, "split_hash": split.split_hash(), "backbone": backbone, "layers": list(layers),
        "image_size": list(as_hw(image_size)), "weights": None if weights is None else str(weights),
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
        "settings": settings, "methods": methods, "shots": shots, "seeds": seeds,
        "train_pool": len(split.train), "test_images": len(split.test),
        "rows": len(plan), "rows_resumed": len(plan) - len(todo), "status": "running",
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "earlier_runs": _earlier_runs(summary_path) if done else [],
    }
    _write_json(summary_path, summary)

    rows = {key: done[key] for key in plan if key in done}
    with (tempfile.TemporaryDirectory(prefix="patchcore_kit_features_") if cache_dir is None else nullcontext(cache_dir)) as cache:
        shared = dict(backbone=backbone, image_size=image_size, weights=weights,
                      device=device, batch_size=batch_size, feature_cache=str(cache))
        params = {m: {**method_stages(m, baseline_stages, layers), **method_params.get(m, {})} for m in methods}

        def make(method: str, seed: int):
            return METHODS[method](**shared, seed=seed, calibrate=False, progress=False, **params[method])

        if todo:
            # One backbone pass over every stage any method reads: each cache entry then holds them all.
            stages = sorted({layer for m in methods for layer in make(m, 0)._extract_layers()}, key=STAGES.index)
            summary["stages"] = {m: list(make(m, 0)._extract_layers()) for m in methods}
            train_images = _unique(p for (_, n, seed) in todo for p in split.with_shots(n, seed).train_paths)
            summary["feature_pass"] = extraction_pass(train_images + split.test_paths, {**shared, "layers": stages},
                                                      progress)
            _write_json(summary_path, summary)  # kept even if the sweep is interrupted later
            masks = ground_truth_masks(split, image_size)  # read once for every fit
            spade_draws = [split.with_shots(n, seed).train_paths for (m, n, seed) in todo if m == "spade"]
            spade_table = SpadePairTable.for_sweep(make("spade", 0), split, spade_draws, spade_table_gb) if spade_draws else None
            summary["spade_table"] = None if spade_table is None else spade_table.stats
        bar = tqdm(total=len(todo), desc="sweep", unit="fit", disable=not progress)
        for method, n, seed in todo:
            bar.set_postfix_str(f"{method} {n}-shot seed {seed}")
            drawn = split.with_shots(n, seed)
            if method == "spade" and spade_table is not None:
                measured = spade_table.evaluate(drawn, masks)
                summary["spade_table"] = spade_table.stats
            else:
                measured = evaluate_once(make(method, seed), drawn, masks)
            row = {"method": method, "shots": n, "full": n == len(split.train), "seed": seed, **measured}
            rows[(method, n, seed)] = row
            _append_row(results_path, row)
            summary["elapsed_s"] = time.perf_counter() - wall_start  # what an interruption leaves behind
            _write_json(summary_path, summary)
            bar.update()
        bar.close()

    table = pd.DataFrame([rows[key] for key in plan], columns=list(COLUMNS))
    table["full"] = table.shots == len(split.train)  # also for rows resumed from a file
    table = table.sort_values(["method", "shots", "seed"], ignore_index=True)
    wall = time.perf_counter() - wall_start
    summary.update(status="finished", elapsed_s=wall, sweep_wall_s=wall,
                   wall_s_all_runs=wall + sum(run.get("elapsed_s", 0.0) for run in summary["earlier_runs"]),
                   fit_s_total=float(table.fit_s.sum()), infer_s_total=float(table.infer_s.sum()))
    # "The whole sweep costs N extraction passes": only a pass that computed every image is one.
    passes = [run.get("feature_pass") for run in summary["earlier_runs"]] + [summary.get("feature_pass")]
    cold = [p for p in passes if p and p["computed"] == p["images"] and p["seconds"] > 0]
    if cold:
        summary["sweep_over_one_pass"] = summary["wall_s_all_runs"] / cold[0]["seconds"]
    _write_json(summary_path, summary)
    table.attrs["summary"] = summary
    return table


def resolve_shots(split: Split, shots: Sequence[int | str]) -> list[int]:
    """Shot counts as training-image counts: ``"all"`` (or None) is the whole pool; duplicates dropped.

    >>> resolve_shots(split_of_209_images, [1, 5, "all"])   # doctest: +SKIP
    [1, 5, 209]
    """
    where = split.root or split.name
    counts = []
    for n in shots:
        if n is None or (isinstance(n, str) and n.strip().lower() == ALL):
            counts.append(len(split.train))
            continue
        try:
            counts.append(int(n))
        except (TypeError, ValueError):
            raise InputError(f"{where}: a shot count is a whole number or 'all', got {n!r}") from None
    return _unique(counts)


def method_stages(method: str, baseline_stages: str = "paper", layers: Sequence[str] = DEFAULT_LAYERS) -> dict:
    """The stage parameters of ``method`` in a sweep whose PatchCore reads ``layers``.

    ``"paper"``: PatchCore ``layers``; PaDiM layer1+2+3 (its class defaults, with the WRN50 channel
    share); SPADE and 1-NN pixels from layer1+2+3, global feature the pooled layer4. ``"shared"``:
    every method reads ``layers``, SPADE and 1-NN pool the deepest of them, PaDiM keeps 100
    channels: the kit's sweep before each paper's stages (what ``docs/sample_efficiency.md`` ran).
    """
    if baseline_stages not in BASELINE_STAGES:
        raise ValueError(f"baseline_stages must be one of {BASELINE_STAGES}, got {baseline_stages!r}")
    if method == "patchcore":
        return {"layers": tuple(layers)}
    if baseline_stages == "paper":
        return {}  # each baseline's constructor defaults are its paper's stages
    if method == "padim":
        return {"layers": tuple(layers), "n_features": SHARED_PADIM_FEATURES}
    return {"layers": tuple(layers), "global_layer": None}


class SpadePairTable:
    """SPADE's rows of a sweep from one table of per-(test image, training image) nearest distances.

    With k = 1, SPADE's anomaly map of test image t against a training set S is, per position,
    ``min over n in K(t, S) of d(t, n)``, where ``d(t, n)`` ``(P,)`` is the distance of each of t's
    positions to its nearest position in training image n (:func:`nearest_in_each_image`) and
    ``K(t, S)`` the ``top_k_images`` images of S nearest to t by the global feature. ``d(t, n)``
    does not depend on S, so it is computed once, the first time a row needs the pair, and every
    later shot count and seed that picks image n for test image t reads it. Image scores, the
    choice of images and the maps are SPADE's own functions, so a row equals fitting
    :class:`~patchcore_kit.baselines.SPADE` on the draw and scoring the test set (tested).

    Memory: the table ``(T, N, P)`` float32 for T test images and the N pool images any SPADE row
    draws, plus the test images' pixel features ``(T, P, C)``. :meth:`for_sweep` returns None when
    that exceeds the budget, or when k > 1 (the per-image minima do not combine), and the sweep
    then scores SPADE row by row.
    """

    def __init__(self, model: SPADE, split: Split, pool: list, progress: bool = False):
        self.model, self.split, self.pool = model, split, list(pool)
        self.slot = {path: i for i, path in enumerate(self.pool)}
        extractor = model._extractor()
        test = [model.features(maps) for maps in extractor.iter_layer_maps(split.test_paths, desc="SPADE test")]
        self.test_global = torch.cat([g for g, _ in test])
        self.test_positions = torch.cat([p for _, p in test])  # (T, P, C)
        self.pool_global = torch.cat([model.features(maps)[0] for maps in extractor.iter_layer_maps(self.pool)])
        first = split.test_paths[0]
        self.grid = tuple(extractor.layer_maps([first])[extractor.layers.index(model.layers[0])].shape[-2:])
        t, p = self.test_positions.shape[:2]
        self.table = torch.full((t, len(self.pool), p), float("nan"))
        self.known = torch.zeros(t, len(self.pool), dtype=torch.bool)
        self.stats = {"used": True, "test_images": t, "pool_images": len(self.pool), "positions": p,
                      "table_bytes": self.table.numel() * 4, "pairs_computed": 0, "pairs_read": 0}

    @staticmethod
    def needed_bytes(test_images: int, pool_images: int, positions: int, channels: int) -> int:
        """The table plus the test images' pixel features, float32."""
        return 4 * test_images * positions * (pool_images + channels)

    @classmethod
    def for_sweep(cls, model: SPADE, split: Split, draws: list[list], budget_gb: float) -> "SpadePairTable | None":
        if model.k != 1 or budget_gb <= 0:
            return None
        pool = _unique(p for draw in draws for p in draw)
        probe = model._extractor().layer_maps(split.test_paths[:1])
        _, positions = model.features(probe)
        need = cls.needed_bytes(len(split.test), len(pool), positions.shape[1], positions.shape[2])
        if need > budget_gb * 2**30:
            return None
        return cls(model, split, pool)

    def _fill(self, wanted: torch.Tensor) -> None:
        """Compute the missing pairs of ``wanted`` ``(T, N)`` (bool), one training image at a time."""
        missing = wanted & ~self.known
        images = torch.nonzero(missing.any(0)).flatten().tolist()
        extractor = self.model._extractor()
        for start in range(0, len(images), extractor.batch_size):
            chunk = images[start : start + extractor.batch_size]
            maps = next(iter(extractor.iter_layer_maps([self.pool[n] for n in chunk])))
            _, positions = self.model.features(maps)  # (b, P, C)
            for slot, n in enumerate(chunk):
                tests = torch.nonzero(missing[:, n]).flatten()
                distances = nearest_in_each_image(self.test_positions[tests], positions[slot : slot + 1])
                self.table[tests, n] = distances[:, 0]
                self.known[tests, n] = True
                self.stats["pairs_computed"] += len(tests)

    def scores(self, train_paths: list) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(T,)`` and anomaly maps ``(T, H, W)`` of SPADE fitted on ``train_paths``."""
        members = torch.tensor([self.slot[path] for path in train_paths])
        nearest_d, nearest_i = nearest_images(self.test_global, self.pool_global[members], self.model.top_k_images)
        chosen = members[nearest_i]  # (T, K) pool slots
        wanted = torch.zeros_like(self.known)
        wanted.scatter_(1, chosen, True)
        self.stats["pairs_read"] += int(wanted.sum())
        self._fill(wanted)
        rows = torch.arange(len(chosen))[:, None]
        grids = self.table[rows, chosen].min(dim=1).values  # (T, P)
        maps = upsample_and_smooth(grids.reshape(-1, *self.grid), self.model.image_size)
        return nearest_d.mean(dim=1).numpy().astype(np.float64), maps

    def evaluate(self, split: Split, masks: np.ndarray | None) -> dict:
        """Like :func:`evaluate_once` for SPADE fitted on ``split.train``: metrics and seconds.

        ``fit_s`` is ~0 (the pool's features are read once for all rows); ``infer_s`` includes the
        pairs this row computes first, so later rows, which read more pairs, are cheaper.
        """
        return evaluate_once(_TableSPADE(self), split, masks)


class _TableSPADE:
    """SPADE "fitted" by remembering its training images, scored from a :class:`SpadePairTable`.

    It has what :func:`~patchcore_kit.evaluate.evaluate` calls (``fit``, ``score_images``,
    ``image_size``), so the table's rows are measured by the one evaluation loop.
    """

    def __init__(self, table: SpadePairTable):
        self.table, self.image_size, self.fit_seconds_ = table, table.model.image_size, {}

    def fit(self, train_paths: list) -> "_TableSPADE":
        self.train_paths_ = list(train_paths)
        return self

    def score_images(self, images: list) -> ScoredImages:
        assert list(images) == list(self.table.split.test_paths), "the table holds this split's test set only"
        return ScoredImages(*self.table.scores(self.train_paths_))


def evaluate_once(model, split: Split, masks: np.ndarray | None) -> dict:
    """Fit ``model`` on ``split.train``, score ``split.test``: metrics and seconds for one row.

    ``masks`` are :func:`~patchcore_kit.evaluate.ground_truth_masks` of the test set, read once
    for the whole sweep; the row is :func:`~patchcore_kit.evaluate.evaluate`'s, without the
    per-defect table.
    """
    result = evaluate(model, split, masks=masks, pixel=masks is not None, per_defect=False)
    return {**result.metrics, "fit_s": result.seconds["fit"], "infer_s": result.seconds["infer"]}


def extraction_pass(images: list, settings: dict, progress: bool = True) -> dict:
    """Run the backbone once over ``images`` into the cache; how long it took and how much was new.

    ``settings`` are the shared extractor settings (backbone, layers, image_size, weights,
    device, batch_size, feature_cache). ``computed`` counts images that were not cached yet: the
    seconds are one real extraction pass only when ``computed == images``.
    """
    extractor = FeatureExtractor(
        settings["backbone"], settings["layers"], settings["image_size"], weights=settings["weights"],
        device=settings["device"], batch_size=settings["batch_size"], cache_dir=settings["feature_cache"],
        progress=progress,
    )
    computed = sum(not extractor.is_cached(image) for image in images)
    start = time.perf_counter()
    for _ in extractor.iter_layer_maps(images, desc="features (one pass)"):
        pass
    return {"seconds": time.perf_counter() - start, "images": len(images), "computed": computed}


def summarize(results: pd.DataFrame, metric: str = "image_auroc") -> pd.DataFrame:
    """Mean and standard deviation over seeds: one row per shot count, one column pair per method."""
    grouped = results.groupby(["shots", "method"])[metric].agg(["mean", "std"]).unstack("method")
    return grouped.swaplevel(axis=1).sort_index(axis=1)


def category_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (method, shots): each metric averaged over categories, then mean ± sd over seeds.

    ``results`` has the columns of :data:`COLUMNS` and, for several categories, ``category``. For
    each seed the metric is averaged over the categories (as the paper's Fig. 6 averages MVTec
    AD's 15); ``<metric>_mean`` and ``<metric>_sd`` are the mean and the sample standard deviation
    of those averages over seeds (sd empty with one seed). Rows with ``full=True`` (the whole
    pool, whose size differs between categories) form one x position, ``shots="all"``;
    ``train_images`` is their mean pool size (and ``_min`` / ``_max``). A metric missing in a
    category (no masks: pixel metrics) is averaged over the categories that have it.

    Returns one row per (method, shots) with ``shots`` a label ("1", "5", ..., "all"), methods in
    the kit's order and shot counts ascending with "all" last.
    """
    table = pd.DataFrame(results).copy()
    if "category" not in table.columns:
        table["category"] = ""
    if "full" not in table.columns:
        table["full"] = False
    table["full"] = table["full"].astype(bool)
    table["label"] = np.where(table["full"], ALL, table["shots"].astype(int).astype(str))
    for metric in METRICS:
        table[metric] = pd.to_numeric(table.get(metric), errors="coerce")
    keys = ["method", "label", "full"]
    per_seed = table.groupby(keys + ["seed"])[list(METRICS)].mean()  # category average per seed (NaN skipped)
    grouped = per_seed.groupby(level=keys)
    out = pd.concat(
        [grouped[m].mean().rename(f"{m}_mean") for m in METRICS] + [grouped[m].std().rename(f"{m}_sd") for m in METRICS],
        axis=1,
    )
    sizes = table.groupby(keys)
    out["train_images"] = sizes["shots"].mean()
    out["train_images_min"] = sizes["shots"].min()
    out["train_images_max"] = sizes["shots"].max()
    out["n_categories"] = sizes["category"].nunique()
    out["n_seeds"] = sizes["seed"].nunique()
    out = out.reset_index().rename(columns={"label": "shots"})
    order = {m: i for i, m in enumerate(METHODS)}
    out["_method"] = out["method"].map(lambda m: order.get(m, len(order)))
    out["_shots"] = [np.inf if full else int(label) for label, full in zip(out["shots"], out["full"])]
    out = out.sort_values(["_method", "method", "_shots"]).drop(columns=["_method", "_shots"]).reset_index(drop=True)
    columns = ["method", "shots", "full", "train_images", "train_images_min", "train_images_max", "n_categories",
               "n_seeds"] + [f"{m}_{stat}" for m in METRICS for stat in ("mean", "sd")]
    return out[columns]


def sweep_categories(root: str | Path, format: str, category: str | None) -> list[str | None]:
    """The categories a sweep runs: ``[category]``, or with ``category="all"`` every category folder.

    ``"all"`` needs the MVTec layout (``<root>/<category>/train/good``; the kit's demo data has it
    too); a root that is itself one category folder gives that one category.
    """
    if category is None or category != ALL:
        return [category]
    root = Path(root)
    if format != "mvtec":
        raise InputError(f"{root}: --category all needs the mvtec layout (one folder per category), not {format!r}")
    if (root / "train").is_dir():
        return [root.name]
    found = mvtec_categories(root)
    if not found:
        raise InputError(f"{root}: no category folders found (expected <category>/train/good/)")
    return found


def run_sweep(
    root: str | Path,
    format: str,
    category: str | None = None,
    shots: Sequence[int | str] = DEFAULT_SHOTS,
    methods: Sequence[str] = ("patchcore", "padim", "spade"),
    seeds: Sequence[int] = (0, 1, 2),
    backbone: str = DEFAULT_BACKBONE,
    image_size: int | Sequence[int] = 224,
    output: str | Path = "runs/sweep",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    baseline_stages: str = "paper",
    spade_table_gb: float = SPADE_TABLE_GB,
    **method_params: dict,
) -> Path:
    """The ``patchcore-kit sweep`` command: the sweep, its category average, the figure and the claims.

    One category: ``output/results.csv`` and ``summary.json`` (settings, timings).
    ``category="all"``: every category into ``output/<category>/`` (each resumable on its own).
    Then, over all of them: ``output/summary.csv`` (:func:`category_summary`), ``claims.md``
    (:func:`~patchcore_kit.claims.check_claims`) and ``sample_efficiency.png`` (three panels:
    image AUROC, pixel AUROC, AUPRO). The cache defaults to ``output/feature_cache``, shared by all
    categories, so an interrupted sweep resumes without running the backbone again.
    """
    from .claims import check_claims, claims_markdown, status  # the claims read the summary, nothing else
    from .viz import plot_sample_efficiency_panels  # viz sits above experiments; only this entry point draws

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    categories = sweep_categories(root, format, category)
    cache = cache_dir if cache_dir is not None else output / "feature_cache"
    tables, names = [], []
    for name in categories:
        split = load_dataset(root, format, name)
        folder = output / name if category == ALL else output
        if len(categories) > 1:
            print(f"--- {split.name} ({len(tables) + 1} of {len(categories)})")
        table = sample_efficiency(
            split, shots, methods, seeds, backbone=backbone, image_size=image_size, cache_dir=cache,
            results_path=folder / "results.csv", summary_path=folder / "summary.json", progress=progress,
            layers=layers, weights=weights, device=device, batch_size=batch_size, baseline_stages=baseline_stages,
            spade_table_gb=spade_table_gb, **method_params,
        )
        # Every row the category's results.csv holds, not only this call's: a sweep run in pieces
        # (say SPADE on fewer seeds, into the same folder) is summarised as a whole.
        every_row = pd.read_csv(folder / "results.csv") if (folder / "results.csv").is_file() else table
        tables.append(every_row.assign(category=split.name))
        names.append(split.name)
    results = pd.concat(tables, ignore_index=True)
    summary = category_summary(results)
    with open_text(output / "summary.csv", newline="") as handle:
        summary.to_csv(handle, index=False, float_format="%.6g")
    dataset = format if format in ("mvtec", "mtd") else None
    claims = check_claims(summary, dataset=dataset)
    settings = {"categories": names, "backbone": backbone, "image_size": image_size, "layers": list(layers),
                "baseline_stages": baseline_stages, "seeds": list(seeds), "methods": list(methods)}
    write_text(output / "claims.md", claims_markdown(claims, settings))
    figure = plot_sample_efficiency_panels(summary, title=_figure_title(names, backbone, image_size, baseline_stages))
    save_figure(figure, output / "sample_efficiency.png", dpi=150, bbox_inches="tight")

    shown = summary.assign(**{m: summary[f"{m}_mean"].round(3) for m in METRICS})
    print(f"mean over {len(names)} categor{'y' if len(names) == 1 else 'ies'} and seeds {list(seeds)} "
          f"({backbone}, {image_size} px, baselines on {baseline_stages} stages):")
    print(shown[["method", "shots", *METRICS]].to_string(index=False))
    for claim in claims:
        print(f"claim {claim['id']}: {status(claim)}")
    print(f"results in {output}")
    return output


def _figure_title(names: list[str], backbone: str, image_size, baseline_stages: str) -> str:
    where = names[0] if len(names) == 1 else f"mean over {len(names)} categories"
    return f"{where}: {backbone}, {image_size} px, baselines on {baseline_stages} stages"


# --- helpers ----------------------------------------------------------------------------------
def _as_split(data, format: str | None, category: str | None) -> Split:
    if isinstance(data, Split):
        return data
    if format is None:
        raise InputError(f"{data}: give format= ('mvtec', 'mtd' or 'folder') to load a dataset folder")
    return load_dataset(data, format, category)


def _check_grid(split: Split, methods: list, shots: list, seeds: list, method_params: dict) -> None:
    where = split.root or split.name
    unknown = [m for m in list(methods) + list(method_params) if m not in METHODS]
    if unknown:
        raise InputError(f"{where}: unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if not methods or not shots or not seeds:
        raise InputError(f"{where}: the sweep needs at least one method, one shot count and one seed")
    for name, params in method_params.items():
        if not isinstance(params, dict):
            raise InputError(f"{where}: parameters for {name!r} must be a dict, got {type(params).__name__}")
        shared = sorted(set(params) & set(_SWEEP_WIDE))
        if shared:
            raise InputError(f"{where}: {shared} are set for the whole sweep (one feature cache for all methods), "
                             f"not per method ({name!r})")
        check_params(f"{where}: {name}", params)  # the estimator's own rules, before the feature pass
    for n in shots:
        split.with_shots(n, 0)  # raises an InputError naming the dataset when n is too large


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _read_done_rows(results_path: Path | None, summary_path: Path | None, settings: dict) -> dict:
    """Rows of an earlier (perhaps interrupted) run of the same sweep, keyed by (method, shots, seed)."""
    if results_path is None or not results_path.is_file() or results_path.stat().st_size == 0:
        return {}
    if summary_path is not None and summary_path.is_file():
        earlier = json.loads(summary_path.read_text()).get("settings")
        if earlier is not None and earlier != settings:
            changed = sorted(k for k in settings if earlier.get(k) != settings[k])
            raise InputError(
                f"{results_path}: holds a sweep with other settings ({', '.join(changed)} differ); "
                f"choose another results path"
            )
    text = results_path.read_text()
    if not text.endswith("\n"):  # a row cut short by the interruption: drop it, it is redone
        text = text[: text.rfind("\n") + 1]
        write_text(results_path, text)
    try:
        table = pd.read_csv(results_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{results_path}: not a readable sweep results file ({error})") from None
    missing = [c for c in COLUMNS if c not in table.columns and c != "full"]  # "full" is derived again
    if missing:
        raise InputError(f"{results_path}: not a sweep results file (missing columns {missing})")
    table = table.astype({"shots": int, "seed": int}).replace({np.nan: None})
    return {(r["method"], r["shots"], r["seed"]): {c: r.get(c) for c in COLUMNS} for r in table.to_dict("records")}


def _earlier_runs(summary_path: Path | None) -> list[dict]:
    """What earlier runs of a resumed sweep recorded (their time and feature pass), oldest first."""
    if summary_path is None or not summary_path.is_file():
        return []
    earlier = json.loads(summary_path.read_text())
    keep = {k: earlier[k] for k in ("status", "elapsed_s", "rows_resumed", "feature_pass") if k in earlier}
    return earlier.get("earlier_runs", []) + [keep]


def _append_row(path: Path | None, row: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in COLUMNS})
        handle.flush()


def _write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
