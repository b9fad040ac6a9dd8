"""The report's files: every figure as a PNG, the metrics as CSV and JSON, the table for the terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..atomic import open_text, save_figure, write_text
from ..evaluate import Evaluation
from ..images import display_image
from ..viz import plot_gallery, plot_metrics_table, plot_score_histogram, plot_shots_curve
from .results import CategoryResult

__all__ = ["category_gallery", "format_table", "gallery_samples", "write_figures", "write_metrics"]


def gallery_samples(evaluation: Evaluation, per_type: int) -> dict[str, list[int]]:
    """Test-set indices shown per defect type: the first ``per_type`` of each, nominal last.

    The first ones, not the best ones: the gallery shows typical results, failures included.
    """
    chosen: dict[str, list[int]] = {}
    for index, sample in enumerate(evaluation.split.test):
        chosen.setdefault(sample.defect_type, [])
        if len(chosen[sample.defect_type]) < per_type:
            chosen[sample.defect_type].append(index)
    order = sorted(t for t in chosen if t != "good") + (["good"] if "good" in chosen else [])
    return {t: chosen[t] for t in order}


def category_gallery(result: CategoryResult, indices: Sequence[int]):
    """The gallery figure of some test images of one category (one colour scale per category)."""
    evaluation, model = result.evaluation, result.model
    maps = evaluation.maps
    # Colour scale shared by all galleries of the category: most pixels are nominal, so the median
    # pixel score is where colour starts; the largest score is where it saturates.
    vmin, vmax = float(np.median(maps)), float(maps.max())
    samples = [evaluation.split.test[i] for i in indices]
    images = [display_image(s.path, model.image_size) for s in samples]
    masks = [evaluation.masks[i] if evaluation.masks is not None else None for i in indices]
    thresholded = [maps[i] > model.pixel_threshold_ for i in indices]
    titles = []
    for i, sample in zip(indices, samples):
        verdict = "flagged" if evaluation.scores[i] > model.threshold_ else "passed"
        titles.append(f"{sample.path.stem}: score {evaluation.scores[i]:.1f}, {verdict}")
    return plot_gallery(
        images,
        masks,
        [maps[i] for i in indices],
        thresholded,
        titles,
        vmin=vmin,
        vmax=vmax,
        outline_thickness=2,
        threshold=model.pixel_threshold_,
    )


def write_figures(
    results: Sequence[CategoryResult],
    table: pd.DataFrame,
    shots_table: pd.DataFrame,
    folder: Path,
    per_type: int,
    progress: bool,
) -> dict[str, Path]:
    """Save every figure of the report as a PNG in ``folder``; returns ``{key: path}``."""
    jobs = {
        "metrics_table": lambda: plot_metrics_table(
            table[["image_auroc", "pixel_auroc", "aupro", "n_train", "n_test", "fit_s", "infer_s"]],
            formats={"fit_s": "{:.1f}", "infer_s": "{:.1f}"},
        ),
        "sample_efficiency": lambda: plot_shots_curve(shots_table),
    }
    for result in results:
        evaluation = result.evaluation
        title = f"{result.name}: image AUROC {evaluation.metrics['image_auroc']:.3f}"
        jobs[f"scores_{result.name}"] = lambda r=result, t=title: plot_score_histogram(
            r.evaluation.scores, r.evaluation.labels, threshold=r.model.threshold_, title=t
        )
        for defect_type, indices in gallery_samples(evaluation, per_type).items():
            jobs[f"gallery_{result.name}_{defect_type}"] = lambda r=result, i=indices: category_gallery(r, i)

    paths = {}
    for key, draw in tqdm(jobs.items(), desc="figures", unit="fig", disable=not progress, leave=False):
        paths[key] = folder / f"{key}.png"
        save_figure(draw(), paths[key], dpi=100, facecolor="white")
    return paths


def _clean(value):
    """JSON-ready: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def write_metrics(
    output: Path,
    table: pd.DataFrame,
    results: Sequence[CategoryResult],
    shots_table: pd.DataFrame,
    settings: dict,
    machine: dict,
    seconds: float,
) -> None:
    """``metrics.csv`` (the table) and ``metrics.json`` (table, per-defect metrics, shots curve, settings)."""
    with open_text(output / "metrics.csv", newline="") as handle:
        table.to_csv(handle, float_format="%.6g")
    categories = {}
    for result in results:
        categories[result.name] = {
            **{k: v for k, v in result.row().items() if k != "category"},
            "pixel_threshold": result.model.pixel_threshold_,
            "fit_seconds": result.model.fit_seconds_,
            "per_defect": result.evaluation.metrics["per_defect"],
            "split_hash": result.evaluation.split.split_hash(),
        }
    document = {
        "settings": settings,
        "categories": categories,
        "sample_efficiency": shots_table.to_dict("records"),
        "seconds_total": seconds,
        "machine": machine,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(output / "metrics.json", json.dumps(_clean(document), indent=2, allow_nan=False) + "\n")


def format_table(table: pd.DataFrame) -> str:
    """The metrics table as text for the terminal."""
    shown = table[["image_auroc", "pixel_auroc", "aupro", "n_train", "n_test", "fit_s", "infer_s"]].copy()
    formats = {
        "image_auroc": "{:.3f}",
        "pixel_auroc": "{:.3f}",
        "aupro": "{:.3f}",
        "fit_s": "{:.1f}",
        "infer_s": "{:.1f}",
    }
    for column, pattern in formats.items():
        shown[column] = shown[column].map(lambda v, p=pattern: "-" if v is None or pd.isna(v) else p.format(v))
    return shown.to_string()
