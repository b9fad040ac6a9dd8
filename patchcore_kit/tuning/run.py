"""The tune loop: every candidate scored on every development fold; the best mean becomes the settings.

Files in the output folder (each written atomically, so an interrupted tune resumes where it stopped):

* ``protocol.json`` — what was tuned and how (dataset, split hash, folds, seed, shots, validation).
  A resume with another protocol is refused rather than mixing rows of two tunes.
* ``folds.csv`` — one row per (candidate, fold) as soon as it is scored: the resume log.
* ``candidates.csv`` — one row per candidate: mean ± sd over folds, each fold, each defect type's
  mean, seconds (fits and scoring; the shared backbone pass is counted once, in ``features_s``).
* ``settings.json`` — the ``method`` and the chosen candidate's ``params`` (``PatchCore(**params)``,
  ``PaDiM(**params)`` or ``SPADE(**params)``), its figures, the protocol, and which defective images
  the choice used (the held-out rest gives an honest figure).
* ``synthetic/`` — the painted validation anomalies (``--validation synthetic``).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import write_csv, write_text
from ..data import load_dataset
from ..data.base import Split
from ..errors import InputError
from ..evaluate import evaluate
from ..features import FeatureExtractor
from ..images import image_hw
from .folds import DEFAULT_FOLDS, check_shots, development_split, grouped_folds, regroup
from .grid import candidate_name, load_grid, method_grid, model_params
from .jobs import fit_cost, longest_first, resolve_jobs, run_tasks
from .validation import VALIDATIONS, real_anomalies, synthetic_anomalies

METRICS = ("image_auroc", "pixel_auroc")


def estimator_class(method: str):
    """The estimator a tune of ``method`` fits: PatchCore, PaDiM or SPADE."""
    from ..baselines import SPADE, PaDiM
    from ..patchcore import PatchCore

    method_grid(method)  # an unknown method is one clear error
    return {"patchcore": PatchCore, "padim": PaDiM, "spade": SPADE}[method]


#: PatchCore parameters that say how a run is executed, not what the model is: never part of settings.
RUNTIME = ("device", "batch_size", "seed", "threshold_quantile", "calibrate", "feature_cache", "progress")


def score_fold(
    params: dict,
    dev: Split,
    metric: str,
    feature_cache,
    seed: int,
    device: str,
    batch_size: int,
    method: str = "patchcore",
) -> dict:
    """Fit one candidate on a fold's training images and score its test images: one ``folds.csv`` row."""
    start = time.perf_counter()
    model = estimator_class(method)(
        **params,
        seed=seed,
        device=device,
        batch_size=batch_size,
        calibrate=False,
        feature_cache=None if feature_cache is None else str(feature_cache),
    )
    pixel = metric == "pixel_auroc"
    result = evaluate(model, dev, pixel=pixel)  # pixel metrics only when they choose
    per = result.metrics["per_defect"]
    row = {"image_auroc": result.metrics["image_auroc"]}
    if pixel:
        row["pixel_auroc"] = result.metrics["pixel_auroc"]
        row.update({f"pixel_auroc_{d}": m["pixel_auroc"] for d, m in per.items()})
    row.update({f"image_auroc_{d}": m["image_auroc"] for d, m in per.items()})
    row = {key: round(float(value), 4) for key, value in row.items()}
    row["seconds"] = round(time.perf_counter() - start, 3)  # a cached fold of tiny images takes ms
    return row


def _score_task(task: tuple) -> tuple[str, int, dict]:
    name, fold, params, dev, metric, cache, seed, device, batch_size, method = task
    return name, fold, score_fold(params, dev, metric, cache, seed, device, batch_size, method)


def tune(
    data: str | Path | Split,
    format: str | None = None,
    category: str | None = None,
    *,
    output: str | Path = "runs/tune",
    shots: int | None = None,
    seed: int = 0,
    grid: str | Path | dict | None = None,
    validation: str = "real",
    folds: int = DEFAULT_FOLDS,
    groups: str | None = None,
    metric: str = "image_auroc",
    method: str = "patchcore",
    feature_cache: str | Path | None = None,
    jobs: int | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Choose a method's settings for a dataset on development folds of its training pool.

    ``data`` is a dataset folder (with ``format`` and, for MVTec AD, ``category``) or a loaded
    :class:`Split`. ``method`` is ``"patchcore"``, ``"padim"`` or ``"spade"``: each has its own grid
    keys and default grid (:mod:`.grid`). Returns the settings dict also written to
    ``output/settings.json``; ``PatchCore(**settings["params"])`` (or PaDiM, SPADE: ``settings["method"]``)
    is the chosen model. See the module docstring for the files. ``jobs``: fits run at once in
    spawned processes (None: as many as the CPUs and the memory allow for PatchCore, :mod:`.jobs`).
    """
    if validation not in VALIDATIONS:
        raise InputError(f"{validation!r}: unknown validation; choose one of {', '.join(VALIDATIONS)}")
    if metric not in METRICS:
        raise InputError(f"{metric!r}: unknown metric; choose one of {', '.join(METRICS)}")
    estimator = estimator_class(method)  # an unknown method fails before the dataset is read
    split = data if isinstance(data, Split) else load_dataset(data, format, category=category, seed=seed)
    where = str(split.root or split.name)
    if groups is not None:
        split = Split(split.name, regroup(split.train, groups, where), split.test, split.has_masks, split.root)
    candidates, fixed = load_grid(grid, method)  # bad grids fail before anything slow
    cut = grouped_folds(split.train, folds, seed, where)
    check_shots(split, cut, shots, where)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)

    held_out = []
    if validation == "real":
        used, held_out = real_anomalies(split, seed, where)
        if metric == "pixel_auroc" and not split.has_masks:
            raise InputError(f"{where}: no ground-truth masks, so --metric pixel_auroc cannot be measured")
        fold_anomalies = [used] * folds
    else:
        painted = synthetic_anomalies(split, output / "synthetic", seed, progress)
        fold_of = {s.group: index for index, fold in enumerate(cut) for s in fold}
        fold_anomalies = [[s for s in painted if fold_of[s.group] == index] for index in range(folds)]
        used = []
    devs = []
    for index in range(folds):
        dev = development_split(split, cut, index, fold_anomalies[index], shots, seed)
        if validation == "synthetic":
            dev.has_masks = True
        devs.append(dev)

    aspects = [w / h for h, w in (image_hw(s.path) for s in split.train)]
    resolved, names_seen = [], {}
    for candidate in candidates:
        # Every parameter spelled out, the estimator's defaults too: a resume after a default changed
        # (issue #10 moved the border rule) rescores rather than reusing rows of another model.
        params = {
            k: v
            for k, v in estimator(**model_params(candidate, fixed, aspects, method)).get_params().items()
            if k not in RUNTIME
        }
        key = json.dumps(params, sort_keys=True, default=list)
        if key in names_seen:  # e.g. aspect keep on square images is stretch: scored once
            continue
        names_seen[key] = name = candidate_name(candidate, method)
        resolved.append((name, params, candidate))

    protocol = {
        "dataset": split.name,
        "root": str(split.root) if split.root else None,
        "format": format,
        "category": category,
        "split_hash": split.split_hash(),
        "folds": folds,
        "seed": seed,
        "shots": shots,
        "validation": validation,
        "groups": groups,
        "metric": metric,
        "pool": len(split.train),
        "pool_groups": len({s.group for s in split.train}),
        "method": method,
    }
    _check_protocol(output / "protocol.json", protocol)
    cache = Path(feature_cache) if feature_cache is not None else output / "feature_cache"
    # A row is reused only for the very same model parameters: a changed fixed option (coreset ratio,
    # backbone) under the same candidate name is scored again, and the stale row dropped.
    current = {name: _params_text(params) for name, params, _ in resolved}
    rows = [r for r in _read_rows(output / "folds.csv") if current.get(r["setting"]) == r.get("params")]
    done = {(r["setting"], int(r["fold"])) for r in rows}
    features_s = _backbone_passes(resolved, devs, cache, device, batch_size, progress, estimator)

    tasks = [
        (name, index, params, devs[index], metric, cache, seed, device, batch_size, method)
        for name, params, _ in resolved
        for index in range(folds)
        if (name, index) not in done
    ]
    jobs = resolve_jobs(
        jobs,
        len(tasks),
        [t[2] for t in tasks],
        max(len(d.train) for d in devs),
        max(len(d.test) for d in devs),
        metric,
        method,
        device,
    )
    if jobs > 1:  # the dearest fits first: the last to finish are short ones
        tasks = longest_first(tasks, lambda task: fit_cost(task[2]))
    bar = tqdm(total=len(tasks), desc=f"tune (candidate x fold, {jobs} at once)", unit="fit", disable=not progress)

    def record(name: str, fold: int, row: dict) -> None:
        rows.append({"setting": name, "fold": fold, **row, "params": current[name]})
        _write_rows(output / "folds.csv", rows)
        _write_rows(output / "candidates.csv", summarize(rows, resolved, folds, metric, features_s))
        bar.update(1)

    try:
        run_tasks(_score_task, tasks, jobs, record)
    finally:
        bar.close()

    table = summarize(rows, resolved, folds, metric, features_s)
    best = max(table, key=lambda r: r[metric])  # first of equals: the grid's order decides ties
    name, params, candidate = next(item for item in resolved if item[0] == best["setting"])
    settings = {
        "method": method,
        "params": _jsonable(params),
        "setting": name,
        "aspect": candidate["aspect"],
        "development": {
            metric: best[metric],
            "sd": best[f"{metric}_sd"],
            "folds": [best[f"fold{k}"] for k in range(folds)],
        },
        "runner_up": next(
            (r["setting"] for r in sorted(table, key=lambda r: -r[metric]) if r["setting"] != name), None
        ),
        "protocol": protocol,
        "defective_used": sorted(split.relative(s.path) for s in used),
        "defective_held_out": len(held_out),
        "note": (
            "validation anomalies were painted on pool images: no test image was read"
            if validation == "synthetic"
            else "defective_used were scored while tuning; the test set less these gives the honest figure"
        ),
    }
    write_text(output / "settings.json", json.dumps(settings, indent=2) + "\n")
    if progress:
        print(
            f"chosen: {name} (development {metric} {best[metric]:.4f} ± {best[f'{metric}_sd']:.4f} over {folds} folds); "
            f"wrote {output / 'settings.json'} and candidates.csv"
        )
    return settings


def summarize(rows: list[dict], resolved: list, folds: int, metric: str, features_s: dict) -> list[dict]:
    """``folds.csv`` rows -> one ``candidates.csv`` row per candidate with every fold scored, best first."""
    table = []
    for name, params, _ in resolved:
        mine = sorted((r for r in rows if r["setting"] == name), key=lambda r: int(r["fold"]))
        if len(mine) < folds:
            continue
        row = {"setting": name}
        for key in ("image_auroc", "pixel_auroc") if metric == "pixel_auroc" else ("image_auroc",):
            values = [float(r[key]) for r in mine]
            row[key], row[f"{key}_sd"] = round(float(np.mean(values)), 4), round(float(np.std(values)), 4)
        for r in mine:
            row[f"fold{r['fold']}"] = float(r[metric])
        per = sorted({k for r in mine for k in r if k.startswith(("image_auroc_", "pixel_auroc_"))})
        for key in per:
            values = [float(r[key]) for r in mine if r.get(key) not in (None, "")]
            row[key] = round(float(np.mean(values)), 4) if values else None
        row["seconds"] = round(sum(float(r["seconds"]) for r in mine), 3)
        row["features_s"] = features_s.get(_feature_key(params))
        row["params"] = _params_text(params)
        table.append(row)
    return sorted(table, key=lambda r: -r[metric])


def _feature_key(params: dict) -> str:
    """Candidates with the same backbone, weights and image size share one backbone pass."""
    size = params["image_size"]
    return json.dumps([params["backbone"], params.get("weights"), size if isinstance(size, int) else list(size)])


def _backbone_passes(resolved, devs, cache: Path, device: str, batch_size: int, progress: bool, estimator) -> dict:
    """One backbone pass per (backbone, weights, size) over every image the folds use, into the cache.

    The pass asks for the union of the stages its candidates read (SPADE's pooled global stage too):
    the cache keeps every stage of an
    image in one entry, so afterwards every fit and score (of any stage set, patch size or aggregation)
    only reads it, and parallel workers never write the same entry.
    """
    from ..backbones import STAGES

    images = list(dict.fromkeys(p for dev in devs for p in dev.train_paths + dev.test_paths))
    groups: dict[str, list[dict]] = {}
    for _, params, _ in resolved:
        groups.setdefault(_feature_key(params), []).append(params)
    seconds = {}
    for key, members in groups.items():
        first = members[0]
        layers = sorted(
            {layer for params in members for layer in estimator(**params)._extract_layers()}, key=STAGES.index
        )
        start = time.perf_counter()
        extractor = FeatureExtractor(
            first["backbone"],
            layers,
            first["image_size"],
            weights=first.get("weights"),
            device=device,
            batch_size=batch_size,
            cache_dir=cache,
            progress=progress,
        )
        size = first["image_size"]
        for _ in extractor.iter_layer_maps(
            images, desc=f"features {size if isinstance(size, int) else 'x'.join(map(str, size))} px"
        ):
            pass
        seconds[key] = round(time.perf_counter() - start, 1)
    return seconds


def _params_text(params: dict) -> str:
    return json.dumps(_jsonable(params), sort_keys=True)


def _jsonable(params: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def _check_protocol(path: Path, protocol: dict) -> None:
    if path.is_file():
        before = json.loads(path.read_text())
        before.setdefault("method", "patchcore")  # written before tunes had a method: PatchCore's
        if before != json.loads(json.dumps(protocol)):
            changed = sorted(k for k in set(before) | set(protocol) if before.get(k) != protocol.get(k))
            raise InputError(
                f"{path.parent}: holds a tune with another protocol (differs in {', '.join(changed)}); "
                f"choose another --output or remove it"
            )
    else:
        write_text(path, json.dumps(protocol, indent=2) + "\n")


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))  # rows may differ in keys
