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

from .atomic import save_figure, write_text
from .backbones import DEFAULT_LAYERS
from .baselines import SPADE, NearestImage, PaDiM
from .data import Split, load_dataset
from .errors import InputError
from .evaluate import compute_metrics, ground_truth_masks
from .features import FeatureExtractor, weights_key
from .images import as_hw
from .patchcore import PatchCore

METHODS = {"patchcore": PatchCore, "padim": PaDiM, "spade": SPADE, "nearest_image": NearestImage}
COLUMNS = ("method", "shots", "seed", "image_auroc", "pixel_auroc", "aupro", "fit_s", "infer_s")
DEFAULT_SHOTS = (1, 2, 5, 10, 16, 20, 50)
#: Settings that decide the backbone features; they are set once for the whole sweep so that all
#: methods read the same cache entries.
_SWEEP_WIDE = ("backbone", "layers", "image_size", "weights", "device", "batch_size", "feature_cache",
               "seed", "calibrate", "progress")


def sample_efficiency(
    split_or_dataset: Split | str | Path,
    shots: Sequence[int] = DEFAULT_SHOTS,
    methods: Sequence[str] = ("patchcore", "padim", "spade"),
    seeds: Sequence[int] = (0, 1, 2),
    backbone: str = "efficientnet_lite0",
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
    **method_params: dict,
) -> pd.DataFrame:
    """Fit and score every method for every ``(shots, seed)``; one row per fit.

    Parameters
    ----------
    split_or_dataset : a :class:`~patchcore_kit.data.Split`, or a dataset folder read with
        ``load_dataset(folder, format, category)``.
    shots, methods, seeds : the grid; methods from ``"patchcore"``, ``"padim"``, ``"spade"``,
        ``"nearest_image"``.
    backbone, layers, image_size, weights, device, batch_size : shared by every method, so all
        of them read one set of cached features.
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
    methods, shots, seeds = list(methods), [int(n) for n in shots], [int(s) for s in seeds]
    _check_grid(split, methods, shots, seeds, method_params)
    results_path = Path(results_path) if results_path is not None else None
    if summary_path is None and results_path is not None:
        summary_path = results_path.with_suffix(".json")
    summary_path = Path(summary_path) if summary_path is not None else None

    settings = {
        "dataset": split.name, "split_hash": split.split_hash(), "backbone": backbone, "layers": list(layers),
        "image_size": list(as_hw(image_size)), "weights": None if weights is None else str(weights),
        "method_params": {name: dict(params) for name, params in sorted(method_params.items())},
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
        shared = dict(backbone=backbone, layers=tuple(layers), image_size=image_size, weights=weights,
                      device=device, batch_size=batch_size, feature_cache=str(cache))
        if todo:
            train_images = _unique(p for (_, n, seed) in todo for p in split.with_shots(n, seed).train_paths)
            summary["feature_pass"] = extraction_pass(train_images + split.test_paths, shared, progress)
            _write_json(summary_path, summary)  # kept even if the sweep is interrupted later
            masks = ground_truth_masks(split, image_size)  # read once for every fit
        bar = tqdm(total=len(todo), desc="sweep", unit="fit", disable=not progress)
        for method, n, seed in todo:
            bar.set_postfix_str(f"{method} {n}-shot seed {seed}")
            model = METHODS[method](**shared, seed=seed, calibrate=False, progress=False, **method_params.get(method, {}))
            row = {"method": method, "shots": n, "seed": seed, **evaluate_once(model, split.with_shots(n, seed), masks)}
            rows[(method, n, seed)] = row
            _append_row(results_path, row)
            summary["elapsed_s"] = time.perf_counter() - wall_start  # what an interruption leaves behind
            _write_json(summary_path, summary)
            bar.update()
        bar.close()

    table = pd.DataFrame([rows[key] for key in plan], columns=list(COLUMNS))
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


def evaluate_once(model, split: Split, masks: np.ndarray | None) -> dict:
    """Fit ``model`` on ``split.train``, score ``split.test``: metrics and seconds for one row.

    ``masks`` are :func:`~patchcore_kit.evaluate.ground_truth_masks` of the test set, read once
    for the whole sweep; the metrics are :func:`~patchcore_kit.evaluate.compute_metrics`'.
    """
    start = time.perf_counter()
    model.fit(split.train_paths)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores, maps = model.score(split.test_paths)
    infer_s = time.perf_counter() - start
    return {**compute_metrics(split, scores, maps, masks, per_defect=False), "fit_s": fit_s, "infer_s": infer_s}


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
    computed = sum(not extractor._path(extractor._cache_key(image)).is_file() for image in images)
    start = time.perf_counter()
    for _ in extractor.iter_layer_maps(images, desc="features (one pass)"):
        pass
    return {"seconds": time.perf_counter() - start, "images": len(images), "computed": computed}


def summarize(results: pd.DataFrame, metric: str = "image_auroc") -> pd.DataFrame:
    """Mean and standard deviation over seeds: one row per shot count, one column pair per method."""
    grouped = results.groupby(["shots", "method"])[metric].agg(["mean", "std"]).unstack("method")
    return grouped.swaplevel(axis=1).sort_index(axis=1)


def run_sweep(
    root: str | Path,
    format: str,
    category: str | None = None,
    shots: Sequence[int] = DEFAULT_SHOTS,
    methods: Sequence[str] = ("patchcore", "padim", "spade"),
    seeds: Sequence[int] = (0, 1, 2),
    backbone: str = "efficientnet_lite0",
    image_size: int | Sequence[int] = 224,
    output: str | Path = "runs/sweep",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    **method_params: dict,
) -> Path:
    """The ``patchcore-kit sweep`` command: results.csv, sample_efficiency.png, summary.json in ``output``.

    The cache defaults to ``output/feature_cache`` so that an interrupted sweep resumes without
    running the backbone again. Prints the mean image AUROC per method and shot count.
    """
    from .viz import plot_sample_efficiency  # viz sits above experiments; only this entry point draws

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    split = load_dataset(root, format, category)
    table = sample_efficiency(
        split, shots, methods, seeds, backbone=backbone, image_size=image_size,
        cache_dir=cache_dir if cache_dir is not None else output / "feature_cache",
        results_path=output / "results.csv", summary_path=output / "summary.json", progress=progress,
        **method_params,
    )
    figure = plot_sample_efficiency(table)
    save_figure(figure, output / "sample_efficiency.png", dpi=150, bbox_inches="tight")
    summary = table.attrs["summary"]
    means = table.pivot_table(index="shots", columns="method", values="image_auroc", aggfunc="mean")
    print(f"image AUROC, mean over seeds {list(seeds)} ({split.name}, {backbone}, {image_size} px):")
    print(means.round(3).to_string())
    if summary.get("feature_pass"):
        print(f"sweep {summary['sweep_wall_s']:.0f} s; one feature pass {summary['feature_pass']['seconds']:.0f} s "
              f"({summary['feature_pass']['computed']} of {summary['feature_pass']['images']} images computed)")
    print(f"results in {output}")
    return output


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
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{results_path}: not a sweep results file (missing columns {missing})")
    table = table.astype({"shots": int, "seed": int}).replace({np.nan: None})
    return {(r["method"], r["shots"], r["seed"]): {c: r[c] for c in COLUMNS} for r in table.to_dict("records")}


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
