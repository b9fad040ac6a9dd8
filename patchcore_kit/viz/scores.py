"""Image scores and decisions: the score histogram with its threshold, decision costs, the metrics table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .style import METRIC_LABELS, _new_axes, metric_colour

__all__ = ["plot_decision_costs", "plot_metrics_table", "plot_score_histogram"]


def plot_score_histogram(
    scores,
    labels,
    threshold: float | None = None,
    title: str | None = None,
    ax=None,
    bins: int | str = 20,
    names: tuple[str, str] = ("nominal", "anomalous"),
) -> Figure:
    """Histogram of image scores, nominal and anomalous in two colours, with the decision threshold.

    ``labels`` are 0 (nominal) / 1 (anomalous). Both classes share one set of bins, so their
    overlap reads directly: every anomalous image left of the threshold line is missed by
    ``predict``, every nominal one right of it is a false alarm.

    >>> fig = plot_score_histogram([1.0, 1.2, 3.0], [0, 0, 1], threshold=2.0)
    >>> len(fig.axes)
    1
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(
            f"scores and labels: expected two 1-D arrays of one length, got {scores.shape}, {labels.shape}"
        )
    figure, ax = _new_axes(ax, (5.2, 3.4))
    table = pd.DataFrame({"score": scores, "class": np.where(labels == 1, names[1], names[0])})
    present = [name for name in names if name in set(table["class"])]
    edges = np.histogram_bin_edges(scores, bins=bins)
    palette = {names[0]: "#4c72b0", names[1]: "#dd8452"}
    sns.histplot(
        data=table,
        x="score",
        hue="class",
        hue_order=present,
        bins=edges,
        palette=palette,
        multiple="layer",
        alpha=0.55,
        edgecolor="white",
        linewidth=0.5,
        ax=ax,
    )
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1.5)
        ax.annotate(
            "threshold",
            xy=(threshold, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=8,
            color="#c44e52",
        )
    ax.set_xlabel("image anomaly score")
    ax.set_ylabel("images")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title=None, frameon=False, fontsize=8)
    return figure


def plot_decision_costs(table: pd.DataFrame, x: str = "budget") -> Figure:
    """Missed defects and false alarms on the test set against the false-alarm budget set on nominal data.

    ``table`` holds one row per budget with columns ``x``, ``miss_rate`` and ``false_alarm_rate``
    (e.g. :func:`~patchcore_kit.thresholds.decision_counts` of each threshold). The dotted diagonal
    is the budget itself: the false-alarm rate the nominal calibration images promised.
    """
    table = pd.DataFrame(table)
    figure, ax = _new_axes(None, (5.6, 3.8))
    ax.plot(table[x], table["miss_rate"], marker="o", color="#dd8452", label="missed defects (test)")
    ax.plot(table[x], table["false_alarm_rate"], marker="s", color="#4c72b0", label="false alarms (test)")
    top = float(max(table[x].max(), 0.01))
    ax.plot([0, top], [0, top], linestyle=":", color="0.5", label="budget (promised on nominal images)")
    ax.set_xlabel("false-alarm budget on nominal calibration images")
    ax.set_ylabel("share of test images")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure


def plot_metrics_table(
    table: pd.DataFrame,
    score_columns=("image_auroc", "pixel_auroc", "aupro"),
    formats: dict | None = None,
    title: str | None = None,
) -> Figure:
    """A table as a figure, one row per row of ``table``; score columns tinted red to green.

    ``formats`` maps a column to a format string (default ``"{:.3f}"`` for floats); the index
    becomes the first column. Handy where HTML is not (a PNG for a README or a slide).

    >>> fig = plot_metrics_table(pd.DataFrame({"image_auroc": [0.99, 0.8]}, index=["a", "b"]))
    >>> len(fig.axes)
    1
    """
    table = pd.DataFrame(table)
    formats = formats or {}
    headers = [table.index.name or ""] + [METRIC_LABELS.get(c, c).replace(" (FPR ≤ 0.3)", "") for c in table.columns]

    def text(column, value):
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "–"
        if column in formats:
            return formats[column].format(value)
        return f"{value:.3f}" if isinstance(value, (float, np.floating)) else str(value)

    cells = [[str(index)] + [text(c, row[c]) for c in table.columns] for index, row in table.iterrows()]
    colours = [
        [(1, 1, 1, 1)] + [metric_colour(row[c]) if c in score_columns else (1, 1, 1, 1) for c in table.columns]
        for _, row in table.iterrows()
    ]
    figure = Figure(figsize=(1.0 + 1.15 * len(headers), 0.6 + 0.32 * (len(cells) + 1)), layout="constrained")
    ax = figure.add_subplot()
    ax.set_axis_off()
    drawn = ax.table(cellText=cells, cellColours=colours, colLabels=headers, loc="center", cellLoc="center")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(9)
    drawn.scale(1.0, 1.35)
    for (row, _), cell in drawn.get_celld().items():
        cell.set_edgecolor("0.85")
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("0.95")
    if title:
        ax.set_title(title, fontsize=10)
    return figure
