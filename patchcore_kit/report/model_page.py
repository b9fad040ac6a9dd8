"""A page about one fitted model on your own images (notebook 06): parameters, thresholds, scores, gallery."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluate import Evaluation
from ..images import as_hw, display_image
from ..viz import plot_gallery, plot_score_histogram
from .page import _fmt, data_uri, html_page

__all__ = ["write_model_report"]


def write_model_report(
    output: str | Path,
    model,
    evaluation: Evaluation | None = None,
    settings: pd.DataFrame | None = None,
    title: str = "PatchCore on your images",
    notes: Sequence[str] = (),
) -> Path:
    """One self-contained HTML page about a fitted, calibrated model; returns its path.

    It shows the model's parameters and thresholds (set on nominal images only), the histogram of
    the nominal calibration scores (with the test scores when ``evaluation`` is given), the table
    of candidate ``settings`` compared on development data, and a gallery of the highest-scoring
    test images. Figures go to ``output/figures/``; the page is ``output/report.html``.
    """
    output = Path(output)
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in model.get_params().items() if k not in ("feature_cache", "progress", "device", "weights")}
    params_html = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in shown.items()
    )
    thresholds = {"image threshold (predict)": model.threshold_, "pixel threshold": model.pixel_threshold_}
    thresholds_html = "".join(f"<tr><td>{k}</td><td>{_fmt(v, '{:.3f}')}</td></tr>" for k, v in thresholds.items())

    calibration = np.asarray(getattr(model, "calibration_scores_", []), dtype=float)
    scores = calibration if evaluation is None else np.concatenate([calibration, evaluation.scores])
    labels = (
        np.zeros(len(calibration), int)
        if evaluation is None
        else np.concatenate([np.zeros(len(calibration), int), evaluation.labels])
    )
    sections = []
    if len(scores):
        path = figures / "scores.png"
        plot_score_histogram(
            scores, labels, threshold=model.threshold_, title="image scores", names=("nominal", "defective")
        ).savefig(path, dpi=110)
        sections.append(
            f"<section><h2>Scores</h2><p class='note'>Nominal: leave-one-out calibration images"
            f"{' and nominal test images' if evaluation is not None else ''}. The dashed line is the "
            f"threshold set on nominal images only.</p><img src='{data_uri(path)}' alt='scores'></section>"
        )
    if settings is not None:
        sections.append(
            "<section><h2>Settings compared on development data</h2>"
            + pd.DataFrame(settings).to_html(classes="metrics", float_format=lambda v: f"{v:.3f}")
            + "</section>"
        )
    if evaluation is not None:
        metrics = {k: v for k, v in evaluation.metrics.items() if k != "per_defect"}
        metrics_html = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in metrics.items())
        worst = np.argsort(-evaluation.scores)[:6]
        size = as_hw(model.image_size)
        path = figures / "gallery.png"
        masks = None if evaluation.masks is None else evaluation.masks[worst]
        plot_gallery(
            [display_image(evaluation.split.test[i].path, size) for i in worst],
            masks,
            [evaluation.maps[i] for i in worst],
            [evaluation.maps[i] > model.pixel_threshold_ for i in worst],
            [f"{evaluation.split.test[i].defect_type}: {evaluation.scores[i]:.1f}" for i in worst],
            threshold=model.pixel_threshold_,
            outline_thickness=2,
        ).savefig(path, dpi=100)
        sections.append(
            f"<section><h2>Test set (measured once, after the settings were chosen)</h2>"
            f"<table class='metrics'>{metrics_html}</table>"
            f"<h3>The highest-scoring test images</h3><img src='{data_uri(path, 85)}' alt='gallery'></section>"
        )
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    body = (
        f"<main><section><h2>Model</h2>{notes_html}<div class='two'><table class='metrics'>{params_html}</table>"
        f"<table class='metrics'>{thresholds_html}</table></div></section>{''.join(sections)}</main>"
    )
    page = html_page(html.escape(title), f"patchcore_kit, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", body)
    path = output / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
