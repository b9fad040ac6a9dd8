"""Feature maps seen by a person: principal components as colours, receptive fields, patches in PCA space.

The receptive fields themselves are computed (by backpropagation) in
:mod:`patchcore_kit.receptive_fields`; here they are only drawn.
"""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["pca_rgb", "plot_feature_maps", "plot_patch_pca", "plot_receptive_fields", "position_colours"]


def pca_rgb(feature_maps, n_fit: int = 20000, seed: int = 0) -> list[np.ndarray]:
    """Feature maps ``(C, H, W)`` -> RGB images ``(H, W, 3)`` in [0, 1]: their first three principal components.

    One PCA is fitted on the positions of *all* given maps (so equal colours mean similar features
    across panels; the maps must share ``C``), each component stretched between its 1st and 99th
    percentile. A way to look at 100+ channels at once.

    >>> [rgb.shape for rgb in pca_rgb([np.random.rand(8, 5, 6)])]
    [(5, 6, 3)]
    """
    from sklearn.decomposition import PCA

    maps = [np.asarray(m, dtype=np.float32) for m in feature_maps]
    rows = np.concatenate([m.reshape(m.shape[0], -1).T for m in maps])
    rng = np.random.default_rng(seed)
    fit_rows = rows[rng.choice(len(rows), n_fit, replace=False)] if len(rows) > n_fit else rows
    pca = PCA(n_components=min(3, *fit_rows.shape), random_state=seed).fit(fit_rows)
    projected = pca.transform(rows)
    low, high = np.percentile(projected, [1, 99], axis=0)
    projected = np.clip((projected - low) / np.maximum(high - low, 1e-12), 0, 1)
    projected = np.pad(projected, ((0, 0), (0, 3 - projected.shape[1])))  # fewer than 3 channels: pad
    images, start = [], 0
    for m in maps:
        h, w = m.shape[1:]
        images.append(projected[start : start + h * w].reshape(h, w, 3))
        start += h * w
    return images


def plot_feature_maps(maps: dict, image: np.ndarray | None = None, panel_size: float = 2.6) -> Figure:
    """One panel per feature map ``(C, H, W)`` (its principal components as RGB), titled with its shape.

    ``maps`` is ``{title: map}``; ``image`` (H, W, 3) is drawn first for reference. Maps with the
    same number of channels share one PCA, so their colours compare (one stage before and after
    aggregation or alignment); maps of different stages get their own. Each panel shows the map's
    grid at its own resolution: a 14×14 map looks blocky.
    """
    titles = list(maps)
    colours = {}
    for channels in dict.fromkeys(np.shape(maps[t])[0] for t in titles):
        group = [t for t in titles if np.shape(maps[t])[0] == channels]
        colours.update(zip(group, pca_rgb([maps[t] for t in group])))
    rgbs = [colours[t] for t in titles]
    panels = ([("image", image)] if image is not None else []) + list(zip(titles, rgbs))
    figure = Figure(figsize=(panel_size * len(panels), panel_size + 0.5), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        if title != "image":
            c, h, w = np.shape(maps[title])
            title = f"{title}\n{c} ch × {h}×{w}"
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    return figure


def plot_receptive_fields(
    image: np.ndarray, fields: dict, strides: dict | None = None, panel_size: float = 2.8
) -> Figure:
    """Each stage's receptive field over ``image``: heat = gradient weight, box = the gradient's support.

    ``fields`` is :func:`receptive_field_maps`' output; ``strides`` (``{layer: stride}``) goes into
    the titles. The box bounds the non-zero gradient, a subset of the receptive field, and is
    clipped by the image border, so it can be smaller than the true field (titles say "≥").
    """
    figure = Figure(figsize=(panel_size * len(fields), panel_size + 0.6), layout="constrained")
    axes = figure.subplots(1, len(fields), squeeze=False)[0]
    grey = np.asarray(image, dtype=np.float32).mean(axis=2)
    for ax, (layer, field) in zip(axes, fields.items()):
        ax.imshow(grey, cmap="gray")
        weight = np.sqrt(field / max(field.max(), 1e-12))  # sqrt: the tails stay visible
        ax.imshow(np.ma.masked_less(weight, 0.02), cmap="inferno", alpha=0.75, vmin=0, vmax=1)
        rows, cols = np.nonzero(field > field.max() * 1e-6)
        y0, y1, x0, x1 = rows.min(), rows.max(), cols.min(), cols.max()
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="cyan", linewidth=1.2)
        )
        stride = f", stride {strides[layer]}" if strides and layer in strides else ""
        ax.set_title(f"{layer}{stride}\nnon-zero gradient {y1 - y0 + 1}×{x1 - x0 + 1} px\n(field ≥ that)", fontsize=9)
        ax.set_axis_off()
    return figure


def position_colours(rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """An RGB colour per grid position: red grows to the right, blue grows downwards."""
    h, w = grid
    x = np.asarray(cols, dtype=float) / max(w - 1, 1)
    y = np.asarray(rows, dtype=float) / max(h - 1, 1)
    return np.stack([0.15 + 0.85 * x, 0.35 * np.ones_like(x), 0.15 + 0.85 * y], axis=1)


def plot_patch_pca(
    coords: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    grid: tuple[int, int],
    groups: np.ndarray,
    nominal: str = "nominal",
) -> Figure:
    """Patch features in their first two principal components, coloured two ways.

    Left: by the patch's position on the feature grid (legend square in the corner). Right: by
    ``groups`` (a label per patch: ``nominal`` patches in grey, each defect type in its own colour,
    drawn on top). ``coords`` is ``(N, 2)``; ``rows``/``cols`` the patch positions on ``grid``.
    """
    figure = Figure(figsize=(11, 4.6), layout="constrained")
    by_position, by_group = figure.subplots(1, 2, sharex=True, sharey=True)
    by_position.scatter(coords[:, 0], coords[:, 1], c=position_colours(rows, cols, grid), s=4, linewidths=0)
    by_position.set_title("coloured by position on the feature grid")
    inset = by_position.inset_axes([0.80, 0.78, 0.18, 0.18])
    yy, xx = np.mgrid[0 : grid[0], 0 : grid[1]]
    inset.imshow(position_colours(yy.ravel(), xx.ravel(), grid).reshape(*grid, 3))
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_title("grid", fontsize=7, pad=2)

    groups = np.asarray(groups, dtype=str)
    others = [g for g in dict.fromkeys(groups) if g != nominal]
    palette = sns.color_palette("colorblind", max(len(others), 1))
    keep = groups == nominal
    by_group.scatter(coords[keep, 0], coords[keep, 1], s=4, color="0.75", linewidths=0, label=nominal)
    for colour, group in zip(palette, others):
        chosen = groups == group
        by_group.scatter(coords[chosen, 0], coords[chosen, 1], s=10, color=colour, linewidths=0, label=group)
    by_group.legend(markerscale=2.5, fontsize=8, loc="best")
    by_group.set_title("coloured by defect (patches inside the ground-truth mask)")
    for ax in (by_position, by_group):
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    return figure
