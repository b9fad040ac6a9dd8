"""Notebook 03's sample-efficiency curves, for the methods and the metric chosen."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from ..viz import PAPER_MVTEC_REFERENCE, plot_sample_efficiency


def render_sweep(
    results: pd.DataFrame,
    methods: Sequence[str] | None = None,
    metric: str = "image_auroc",
    reference: dict | None = PAPER_MVTEC_REFERENCE,
    title: str | None = None,
) -> Figure:
    """The sample-efficiency curves of the chosen ``methods`` (all when None), optionally with the paper's values."""
    table = pd.DataFrame(results)
    if methods is not None:
        unknown = sorted(set(methods) - set(table.method))
        if unknown:
            raise ValueError(f"methods {unknown} are not in the results; they hold {sorted(set(table.method))}")
        table = table[table.method.isin(list(methods))]
    if table.empty:
        raise ValueError("no results to plot: choose at least one method")
    figure = plot_sample_efficiency(table, reference=reference, metric=metric)
    if title:
        figure.axes[0].set_title(title, fontsize=10)
    return figure
