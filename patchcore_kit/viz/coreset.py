"""The coreset seen by a person: its members in an embedding and on the image, covering radii, curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .style import METRIC_LABELS, _new_axes

__all__ = ["plot_coreset_curves", "plot_coreset_embedding", "plot_coverage_2d", "plot_patch_picks"]


def plot_coreset_embedding(
    embedding: np.ndarray, selected: np.ndarray, title: str | None = None, ax=None, background: np.ndarray | None = None
) -> Figure:
    """A 2-D embedding (e.g. UMAP) of patch features, the coreset members drawn on top in colour.

    ``selected`` marks the coreset members among the embedded points. ``background`` marks the
    points drawn in grey, e.g. a uniform sample of the bank whose crowding shows its density
    (members of the coreset among them are drawn over in colour); by default every point that is
    not selected is grey.
    """
    figure, ax = _new_axes(ax, (5.5, 5))
    selected = np.asarray(selected, dtype=bool)
    if background is None:
        grey, label = ~selected, f"memory bank ({int((~selected).sum())} shown)"
    else:
        grey = np.asarray(background, dtype=bool)
        label = f"memory bank (uniform sample of {int(grey.sum())})"
    ax.scatter(embedding[grey, 0], embedding[grey, 1], s=3, color="0.78", linewidths=0, label=label)
    ax.scatter(
        embedding[selected, 0],
        embedding[selected, 1],
        s=9,
        color="#d55e00",
        linewidths=0,
        label=f"coreset ({int(selected.sum())})",
    )
    ax.legend(loc="lower right", fontsize=8, markerscale=2.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return figure


def plot_patch_picks(
    image: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int], title: str | None = None, ax=None
) -> Figure:
    """``image`` with a square around each chosen patch (positions on the feature ``grid``)."""
    figure, ax = _new_axes(ax, (4.5, 4.5))
    ax.imshow(image)
    h, w = np.asarray(image).shape[:2]
    step_y, step_x = h / grid[0], w / grid[1]
    for r, c in zip(rows, cols):
        ax.add_patch(
            Rectangle((c * step_x, r * step_y), step_x, step_y, fill=False, edgecolor="#d55e00", linewidth=1.0)
        )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return figure


def plot_coverage_2d(points: np.ndarray, picks: dict, panel_size: float = 4.0) -> Figure:
    """2-D points with each sampler's picks and the disc of the covering radius around every pick.

    ``picks`` is ``{title: indices}``. The radius drawn is that sampler's covering radius (the
    largest distance from any point to its nearest pick): the discs together cover every point,
    and the point that sets the radius is marked with a cross.
    """
    from matplotlib.patches import Circle

    points = np.asarray(points, dtype=np.float64)
    figure = Figure(figsize=(panel_size * len(picks), panel_size + 0.4), layout="constrained")
    axes = figure.subplots(1, len(picks), squeeze=False, sharex=True, sharey=True)[0]
    for ax, (title, chosen) in zip(axes, picks.items()):
        chosen = np.asarray(chosen)
        centres = points[chosen]
        distance = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2).min(axis=1)
        radius, farthest = float(distance.max()), int(distance.argmax())
        for centre in centres:
            ax.add_patch(Circle(centre, radius, facecolor="#d55e00", alpha=0.08, edgecolor="#d55e00", linewidth=0.4))
        ax.scatter(points[:, 0], points[:, 1], s=4, color="0.6", linewidths=0, label="points")
        ax.scatter(centres[:, 0], centres[:, 1], s=18, color="#d55e00", linewidths=0, label=f"{len(chosen)} picks")
        ax.scatter(*points[farthest], marker="x", s=60, color="black", label="farthest point")
        ax.set_title(f"{title}\ncovering radius {radius:.2f}", fontsize=10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="lower right", fontsize=7)
    return figure


def plot_coreset_curves(
    table: pd.DataFrame,
    metrics=("radius", "image_auroc"),
    x: str = "ratio",
    hue: str = "sampler",
    labels: dict | None = None,
) -> Figure:
    """One panel per metric against the coreset ratio (log scale), one line per sampler."""
    labels = {"radius": "coverage radius (max distance to the coreset)", **METRIC_LABELS, **(labels or {})}
    table = pd.DataFrame(table)
    figure = Figure(figsize=(5.2 * len(metrics), 4), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        sns.lineplot(
            data=table.dropna(subset=[metric]), x=x, y=metric, hue=hue, marker="o", ax=ax, palette="colorblind"
        )
        ax.set_xscale("log")
        ax.set_xlabel("coreset ratio (fraction of all patches kept)")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(True, alpha=0.3)
    return figure
