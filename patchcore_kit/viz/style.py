"""What every figure shares: method and metric labels, fixed colours, a fresh axes."""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib import colormaps
from matplotlib.figure import Figure

__all__ = ["METHOD_LABELS", "METRIC_LABELS", "method_colours", "metric_colour"]


METHOD_LABELS = {"patchcore": "PatchCore", "padim": "PaDiM", "spade": "SPADE", "nearest_image": "1-NN"}
METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO (FPR ≤ 0.3)"}


def method_colours(methods) -> dict:
    """One fixed colour per method (colour-blind safe), the same in every figure."""
    palette = sns.color_palette("colorblind", 10)
    known = list(METHOD_LABELS)
    return {m: palette[known.index(m) if m in known else len(known) + i] for i, m in enumerate(methods)}


def metric_colour(value: float | None, low: float = 0.5, high: float = 1.0) -> tuple:
    """A background colour for a score in [low, high]: red (poor) through yellow to green (good)."""
    if value is None or not np.isfinite(value):
        return (0.92, 0.92, 0.92, 1.0)
    scaled = float(np.clip((value - low) / (high - low), 0.0, 1.0))
    red, alpha = colormaps["RdYlGn"](scaled), 0.55
    return tuple((1 - alpha) + alpha * np.asarray(red[:3])) + (1.0,)


def _new_axes(ax, figsize):
    """``ax`` itself, or one new axes on a bare Figure (pyplot's figure list stays untouched)."""
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.add_subplot()
