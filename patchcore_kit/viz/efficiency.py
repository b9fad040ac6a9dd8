"""Sample efficiency: a metric against the number of training images (the paper's Fig. 6, the demo's curve)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..paper import PAPER_MVTEC_REFERENCE
from .style import METHOD_LABELS, METRIC_LABELS, _new_axes, method_colours

__all__ = ["plot_sample_efficiency", "plot_sample_efficiency_panels", "plot_shots_curve"]


def plot_sample_efficiency(
    results: pd.DataFrame,
    reference: dict | None = PAPER_MVTEC_REFERENCE,
    ax=None,
    metric: str = "image_auroc",
    spread: str = "sd",
) -> Figure:
    """Metric against the number of training images: mean over seeds, one line per method.

    ``results`` is the table of :func:`~patchcore_kit.experiments.sample_efficiency` (columns
    method, shots, seed and the metric). The band is ± one standard deviation over seeds
    (``spread="sd"``) or their full range (``spread="range"``). The shot axis is logarithmic.
    ``reference`` values (default: the PatchCore paper's MVTec AD averages with *all* training
    images) are drawn as stars to the right of the curves, labelled "paper, MVTec AD, full data":
    they are another dataset and backbone, a yardstick rather than a target. ``reference=None``
    leaves them out.

    >>> rows = pd.DataFrame({"method": ["patchcore"] * 4 + ["padim"] * 4, "shots": [1, 1, 10, 10] * 2,
    ...                      "seed": [0, 1] * 4, "image_auroc": [.7, .8, .9, .95, .6, .65, .8, .85]})
    >>> fig = plot_sample_efficiency(rows)
    >>> [label.get_text().split()[0] for label in fig.axes[0].get_xticklabels()]   # + the paper's star
    ['1', '10', 'full']
    """
    if spread not in ("sd", "range"):
        raise ValueError(f"spread must be 'sd' or 'range', got {spread!r}")
    table = pd.DataFrame(results)
    missing = [c for c in ("method", "shots", metric) if c not in table.columns]
    if missing:
        raise ValueError(f"results: missing columns {missing}")
    table = table.dropna(subset=[metric])
    if table.empty:
        raise ValueError(f"results: no values of {metric!r} to plot (pixel metrics need ground-truth masks)")
    methods = [m for m in METHOD_LABELS if m in set(table.method)] + sorted(set(table.method) - set(METHOD_LABELS))
    colours = method_colours(methods)
    table = table.assign(label=table.method.map(lambda m: METHOD_LABELS.get(m, m)))
    # A bare Figure, not pyplot's: a notebook shows the returned figure once, and nothing leaks.
    figure = ax.figure if ax is not None else Figure(figsize=(6.4, 4.2))
    ax = ax if ax is not None else figure.add_subplot()

    sns.lineplot(
        data=table,
        x="shots",
        y=metric,
        hue="label",
        hue_order=[METHOD_LABELS.get(m, m) for m in methods],
        palette=[colours[m] for m in methods],
        marker="o",
        ax=ax,
        errorbar="sd" if spread == "sd" else ("pi", 100),
        err_style="band",
    )
    shots = sorted(table.shots.unique())
    ax.set_xscale("log")
    ticks, labels = list(shots), [str(n) for n in shots]
    handles, names = ax.get_legend_handles_labels()
    if reference:
        x_reference = shots[-1] * 2.5
        drawn = False
        for method in methods:
            value = reference.get(method, {}).get(metric)
            if value is not None:
                ax.scatter(
                    [x_reference],
                    [value],
                    marker="*",
                    s=160,
                    color=colours[method],
                    edgecolor="black",
                    linewidth=0.6,
                    zorder=4,
                )
                drawn = True
        if drawn:
            ax.axvline(np.sqrt(shots[-1] * x_reference), color="0.75", linestyle=":", linewidth=1)
            ticks.append(x_reference)
            labels.append("full\n(paper)")
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="*",
                    linestyle="",
                    markersize=11,
                    color="0.6",
                    markeredgecolor="black",
                    markeredgewidth=0.6,
                )
            )
            names.append("paper, MVTec AD, full data")
    ax.set_xticks(ticks, labels)
    ax.minorticks_off()
    ax.set_xlabel("training images (shots, log scale)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    band = "± 1 sd" if spread == "sd" else "min–max"
    n_seeds = table.seed.nunique() if "seed" in table.columns else 1
    ax.legend(handles, names, title=f"mean over {n_seeds} seeds, band {band}", fontsize=8, title_fontsize=8, loc="best")
    ax.grid(True, alpha=0.3)
    return figure


def plot_sample_efficiency_panels(
    summary: pd.DataFrame,
    metrics=("image_auroc", "pixel_auroc", "aupro"),
    title: str | None = None,
    panel_size: tuple[float, float] = (4.6, 3.8),
) -> Figure:
    """The paper's Fig. 6 from a sweep's summary: one panel per metric, shots on a log axis.

    ``summary`` is :func:`~patchcore_kit.experiments.category_summary`'s table (columns method,
    shots as labels "1", "5", ..., "all", full, train_images_min/max and ``<metric>_mean`` /
    ``<metric>_sd``). Each method is a line of means with a ± 1 sd band (over seeds, of the
    category average). The whole training pool is the rightmost point, labelled "all (N)" (N the
    pool size, or its range over categories), placed at the mean pool size (at least twice the
    largest swept count). A metric with no values (pixel metrics without ground-truth masks) gets
    no panel.
    """
    table = pd.DataFrame(summary).copy()
    table["shots"] = table["shots"].astype(str)
    metrics = [m for m in metrics if f"{m}_mean" in table and table[f"{m}_mean"].notna().any()]
    if not metrics:
        raise ValueError("summary: no metric values to plot")
    counts = sorted({int(s) for s in table.shots if s != "all"})
    full = table[table.shots == "all"]
    ticks, labels = list(counts), [str(n) for n in counts]
    x_full = None
    if not full.empty:
        low, high = int(full.train_images_min.min()), int(full.train_images_max.max())
        x_full = max(float(full.train_images.mean()), 2.0 * counts[-1] if counts else 1.0)
        ticks.append(x_full)
        labels.append(f"all ({low})" if low == high else f"all ({low}–{high})")
    methods = [m for m in METHOD_LABELS if m in set(table.method)] + sorted(set(table.method) - set(METHOD_LABELS))
    colours = method_colours(methods)
    figure = Figure(figsize=(panel_size[0] * len(metrics), panel_size[1]), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    n_seeds = int(table["n_seeds"].max()) if "n_seeds" in table else 1
    for ax, metric in zip(axes, metrics):
        for method in methods:
            rows = table[(table.method == method) & table[f"{metric}_mean"].notna()]
            if rows.empty:
                continue
            x = np.array([x_full if s == "all" else float(s) for s in rows.shots])
            order = np.argsort(x)
            mean = rows[f"{metric}_mean"].to_numpy(float)[order]
            sd = np.nan_to_num(rows[f"{metric}_sd"].to_numpy(float)[order]) if f"{metric}_sd" in rows else 0 * mean
            ax.plot(x[order], mean, marker="o", color=colours[method], label=METHOD_LABELS.get(method, method))
            ax.fill_between(x[order], mean - sd, mean + sd, color=colours[method], alpha=0.2, linewidth=0)
        if x_full is not None and counts:
            ax.axvline(np.sqrt(counts[-1] * x_full), color="0.75", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels)
        ax.minorticks_off()
        ax.set_xlabel("training images (shots, log scale)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(True, alpha=0.3)
    axes[0].legend(
        title=f"mean ± 1 sd over {n_seeds} seed{'s' if n_seeds != 1 else ''}",
        fontsize=8,
        title_fontsize=8,
        loc="lower right",
    )
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_shots_curve(
    table: pd.DataFrame, metric: str = "image_auroc", hue: str = "category", x: str = "shots", ax=None
) -> Figure:
    """A metric against the number of training images, one line per ``hue`` value (log x axis).

    ``table`` holds one row per fit (columns ``x``, ``metric``, ``hue``); rows repeated over
    seeds are averaged, with a ± 1 sd band.

    >>> rows = pd.DataFrame({"shots": [1, 5, 1, 5], "image_auroc": [.7, .9, .8, 1.], "category": list("aabb")})
    >>> len(plot_shots_curve(rows).axes)
    1
    """
    table = pd.DataFrame(table).dropna(subset=[metric])
    if table.empty:
        raise ValueError(f"table: no values of {metric!r} to plot")
    figure, ax = _new_axes(ax, (5.2, 3.6))
    sns.lineplot(data=table, x=x, y=metric, hue=hue, marker="o", errorbar="sd", palette="colorblind", ax=ax)
    shots = sorted(table[x].unique())
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(n) for n in shots])
    ax.minorticks_off()
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(True, alpha=0.3)
    ax.legend(title=hue, fontsize=8, title_fontsize=8, loc="lower right")
    return figure
