"""The demo run: build the demo data, fit and evaluate one PatchCore per category, write the report."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..atomic import write_text
from ..backbones import DEFAULT_BACKBONE
from ..data import load_mvtec
from ..data.demo import build_demo_dataset
from ..errors import InputError
from ..evaluate import evaluate
from ..experiments import sample_efficiency
from ..patchcore import PatchCore
from ..paths import demo_data_dir
from .files import format_table, write_figures, write_metrics
from .page import render_html
from .results import DEMO_MODEL, FAST, FULL, CategoryResult

__all__ = ["run_demo", "shots_curve"]


def run_demo(
    output: str | Path | None = None,
    root: str | Path | None = None,
    fast: bool = False,
    backbone: str = DEFAULT_BACKBONE,
    image_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Build (or reuse) the demo data, fit and evaluate PatchCore per category, write the report.

    ``output`` defaults to ``runs/demo``; ``root`` to the demo data folder
    (:func:`~patchcore_kit.paths.demo_data_dir`: ``demo``, or a folder named after the FAST size).
    ``image_size`` is what the model sees (default 224, fast 64). Prints the metrics table and
    the report's path; returns the path of ``report.html``.
    """
    start = time.perf_counter()
    size = FAST if fast else FULL
    image_size = size.image_size if image_size is None else int(image_size)
    output = Path(output) if output is not None else Path("runs") / "demo"
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder; choose another report folder")
    if root is None:
        # FULL is the generator's default size (tests/test_report.py checks it), so it shares ``demo``
        # with the notebooks; FAST gets a folder of its own size.
        root = demo_data_dir(size.build_sizes() if fast else None)
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    cache = output / "feature_cache"

    root = build_demo_dataset(
        root,
        size.categories,
        **size.build_sizes(),
        seed=seed,
        progress=progress,
    )
    params = dict(DEMO_MODEL, backbone=backbone, image_size=image_size, seed=seed, feature_cache=str(cache))

    results = []
    bar = tqdm(size.categories, desc="demo", unit="category", disable=not progress)
    for category in bar:
        bar.set_postfix_str(f"{category}: fit + evaluate")
        split = load_mvtec(root, category)
        model = PatchCore(**params, progress=progress)
        results.append(CategoryResult(category, model, evaluate(model, split)))
    bar.close()

    shots_table = shots_curve(results, size.shots, params, seed, progress)
    table = pd.DataFrame([r.row() for r in results]).set_index("category")
    images = write_figures(results, table, shots_table, figures, size.gallery, progress)
    seconds = time.perf_counter() - start
    settings = {
        "backbone": backbone,
        "layers": list(params["layers"]),
        "image_size": image_size,
        "coreset_ratio": params["coreset_ratio"],
        "num_neighbors": params["num_neighbors"],
        "threshold_quantile": results[0].model.threshold_quantile,
        "seed": seed,
        "fast": fast,
        "data": str(root),
        "data_size": size.data_size,
    }
    machine = {"platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    write_metrics(output, table, results, shots_table, settings, machine, seconds)
    page = output / "report.html"
    write_text(page, render_html(table, results, shots_table, images, settings, machine, seconds))

    print(format_table(table))
    print(f"demo finished in {seconds:.0f} s; report: {page.resolve()}")
    return page


def shots_curve(
    results: Sequence[CategoryResult], shots: Sequence[int], params: dict, seed: int, progress: bool
) -> pd.DataFrame:
    """PatchCore's metrics with 1, 2, 5, ... training images per category, from cached features.

    The point "all training images" is the model already fitted for the report (the same fit).
    """
    frames = []
    for result in results:
        split = result.evaluation.split
        fewer = [n for n in shots if n < len(split.train)]
        model_params = {
            k: v for k, v in params.items() if k not in ("backbone", "layers", "image_size", "seed", "feature_cache")
        }
        table = (
            sample_efficiency(
                split,
                fewer,
                methods=("patchcore",),
                seeds=(seed,),
                backbone=params["backbone"],
                image_size=params["image_size"],
                layers=params["layers"],
                cache_dir=params["feature_cache"],
                progress=progress,
                patchcore=model_params,
            )
            if fewer
            else pd.DataFrame()
        )
        metrics = result.evaluation.metrics
        full = {
            "method": "patchcore",
            "shots": len(split.train),
            "seed": seed,
            "fit_s": result.fit_s,
            **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro")},
        }
        frames.append(pd.concat([table, pd.DataFrame([full])], ignore_index=True).assign(category=result.name))
    return pd.concat(frames, ignore_index=True)[["category", "shots", "seed", "image_auroc", "pixel_auroc", "aupro"]]
