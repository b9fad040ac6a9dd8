"""Figures as pure functions returning a matplotlib Figure.

Each function takes data (arrays, tables) and returns a :class:`matplotlib.figure.Figure`; it
computes nothing expensive and writes no files, so notebooks, widgets, the report and the command
line draw the same figures. Pass ``ax=`` to draw into an existing axes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from scipy import ndimage


# --- sample efficiency (experiments.sample_efficiency) ----------------------------------------
#: The PatchCore paper's full-data results on MVTec AD (class averages, WideResNet-50 features):
#: Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022, Table 1 (image
#: AUROC: SPADE 85.5, PaDiM 95.3, PatchCore-10% 99.0; PatchCore-25% reaches 99.1, and PaDiM with
#: its task-selected EfficientNet-B5 backbone 97.9) and Table 2 (pixel AUROC / PRO: SPADE 96.0 /
#: 91.7, PaDiM 97.5 / 92.1, PatchCore-10% 98.1 / 93.5). Fractions, like the sweep's results.
PAPER_MVTEC_REFERENCE = {
    "patchcore": {"image_auroc": 0.990, "pixel_auroc": 0.981, "aupro": 0.935},
    "padim": {"image_auroc": 0.953, "pixel_auroc": 0.975, "aupro": 0.921},
    "spade": {"image_auroc": 0.855, "pixel_auroc": 0.960, "aupro": 0.917},
}
METHOD_LABELS = {"patchcore": "PatchCore", "padim": "PaDiM", "spade": "SPADE", "nearest_image": "1-NN"}
METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO (FPR ≤ 0.3)"}


def method_colours(methods) -> dict:
    """One fixed colour per method (colour-blind safe), the same in every figure."""
    palette = sns.color_palette("colorblind", 10)
    known = list(METHOD_LABELS)
    return {m: palette[known.index(m) if m in known else len(known) + i] for i, m in enumerate(methods)}


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

    >>> fig = plot_sample_efficiency(pd.read_csv("docs/sample_efficiency/results.csv"))  # doctest: +SKIP
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
        data=table, x="shots", y=metric, hue="label", hue_order=[METHOD_LABELS.get(m, m) for m in methods],
        palette=[colours[m] for m in methods], marker="o", ax=ax,
        errorbar="sd" if spread == "sd" else ("pi", 100), err_style="band",
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
                ax.scatter([x_reference], [value], marker="*", s=160, color=colours[method], edgecolor="black",
                           linewidth=0.6, zorder=4)
                drawn = True
        if drawn:
            ax.axvline(np.sqrt(shots[-1] * x_reference), color="0.75", linestyle=":", linewidth=1)
            ticks.append(x_reference)
            labels.append("full\n(paper)")
            handles.append(Line2D([], [], marker="*", linestyle="", markersize=11, color="0.6",
                                  markeredgecolor="black", markeredgewidth=0.6))
            names.append("paper, MVTec AD, full data")
    ax.set_xticks(ticks, labels)
    ax.minorticks_off()
    ax.set_xlabel("training images (shots, log scale)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    band = "± 1 sd" if spread == "sd" else "min–max"
    n_seeds = table.seed.nunique() if "seed" in table.columns else 1
    ax.legend(handles, names, title=f"mean over {n_seeds} seeds, band {band}", fontsize=8, title_fontsize=8,
              loc="best")
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
    axes[0].legend(title=f"mean ± 1 sd over {n_seeds} seed{'s' if n_seeds != 1 else ''}", fontsize=8,
                   title_fontsize=8, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


# --- notebooks: features (01), coreset (02), segmentation (04) --------------------------------
def _new_axes(ax, figsize):
    """``ax`` itself, or one new axes on a bare Figure (pyplot's figure list stays untouched)."""
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.add_subplot()


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


def receptive_field_maps(backbone, image: "torch.Tensor", layers) -> dict[str, np.ndarray]:
    """How strongly each input pixel moves the feature at the centre of each stage's map.

    ``image`` is one normalised image ``(1, 3, H, W)``. For each layer: the absolute gradient of
    the sum of the centre position's channels with respect to the input, summed over RGB, as
    ``(H, W)``. Its non-zero support lies *within* the theoretical receptive field and can be
    smaller (a ReLU that is off or a zero weight gives zero gradient inside the field), so it is a
    lower bound on the field; where the weight concentrates is the *effective* receptive field
    (Luo et al., NeurIPS 2016). One backward pass per layer.
    """
    import torch

    fields = {}
    for layer in layers:
        x = image.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = backbone.stem(x)
            for name, stage in backbone.stages.items():
                out = stage(out)
                if name == layer:
                    break
            cy, cx = out.shape[2] // 2, out.shape[3] // 2
            out[0, :, cy, cx].sum().backward()
        fields[layer] = x.grad[0].abs().sum(0).numpy()
    return fields


def plot_receptive_fields(image: np.ndarray, fields: dict, strides: dict | None = None,
                          panel_size: float = 2.8) -> Figure:
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
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="cyan",
                               linewidth=1.2))
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


def plot_patch_pca(coords: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int],
                   groups: np.ndarray, nominal: str = "nominal") -> Figure:
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


def plot_coreset_embedding(embedding: np.ndarray, selected: np.ndarray, title: str | None = None, ax=None,
                           background: np.ndarray | None = None) -> Figure:
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
    ax.scatter(embedding[selected, 0], embedding[selected, 1], s=9, color="#d55e00", linewidths=0,
               label=f"coreset ({int(selected.sum())})")
    ax.legend(loc="lower right", fontsize=8, markerscale=2.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return figure


def plot_patch_picks(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int],
                     title: str | None = None, ax=None) -> Figure:
    """``image`` with a square around each chosen patch (positions on the feature ``grid``)."""
    figure, ax = _new_axes(ax, (4.5, 4.5))
    ax.imshow(image)
    h, w = np.asarray(image).shape[:2]
    step_y, step_x = h / grid[0], w / grid[1]
    for r, c in zip(rows, cols):
        ax.add_patch(Rectangle((c * step_x, r * step_y), step_x, step_y, fill=False, edgecolor="#d55e00",
                               linewidth=1.0))
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


def plot_coreset_curves(table: pd.DataFrame, metrics=("radius", "image_auroc"), x: str = "ratio",
                        hue: str = "sampler", labels: dict | None = None) -> Figure:
    """One panel per metric against the coreset ratio (log scale), one line per sampler."""
    labels = {"radius": "coverage radius (max distance to the coreset)", **METRIC_LABELS, **(labels or {})}
    table = pd.DataFrame(table)
    figure = Figure(figsize=(5.2 * len(metrics), 4), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        sns.lineplot(data=table.dropna(subset=[metric]), x=x, y=metric, hue=hue, marker="o", ax=ax,
                     palette="colorblind")
        ax.set_xscale("log")
        ax.set_xlabel("coreset ratio (fraction of all patches kept)")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(True, alpha=0.3)
    return figure


# --- demo report: overlays, score histograms, galleries, tables --------------------------------
def _as_float_rgb(image) -> np.ndarray:
    """uint8 or float RGB (or grey) ``(H, W[, 3])`` -> float RGB in [0, 1]."""
    image = np.asarray(image)
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    rgb = rgb.astype(np.float64)
    return rgb / 255.0 if np.asarray(image).dtype == np.uint8 or rgb.max() > 1.0 else rgb


def mask_outline(mask, thickness: int = 1) -> np.ndarray:
    """The boundary of a boolean mask: mask pixels within ``thickness`` of a pixel outside it.

    The image border counts as outside, so a region cut by the border gets a closed outline.

    >>> square = np.zeros((7, 7), bool); square[1:6, 1:6] = True
    >>> int(mask_outline(square).sum()), bool(mask_outline(square)[3, 3])
    (16, False)
    """
    mask = np.asarray(mask, dtype=bool)
    if thickness < 1:
        raise ValueError(f"thickness must be at least 1, got {thickness}")
    inner = ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    return mask & ~inner


def paint_mask(image, mask, colour=(0.0, 0.9, 0.2), alpha: float = 1.0) -> np.ndarray:
    """``image`` as float RGB in [0, 1] with the pixels of ``mask`` blended towards ``colour``.

    ``alpha=1`` paints them solid (an outline), ``alpha=0.5`` tints them (a predicted region).
    """
    rgb = _as_float_rgb(image).copy()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour, dtype=np.float64)
    return rgb


def overlay_anomaly_map(image, anomaly_map, vmin: float | None = None, vmax: float | None = None,
                        cmap: str = "inferno", alpha: float = 0.7, fade: bool = True) -> np.ndarray:
    """Blend an anomaly map, coloured by ``cmap``, onto ``image``; float RGB ``(H, W, 3)`` in [0, 1].

    The map is scaled to [0, 1] between ``vmin`` and ``vmax`` (default: its own range; give the
    same values to every image of a gallery so colours compare). With ``fade`` each pixel's opacity
    is ``alpha`` times its scaled score, so nominal regions show the image and only high scores
    show colour; without it the whole map is blended at ``alpha``.

    >>> image = np.zeros((2, 2, 3), np.uint8); amap = np.array([[0.0, 0.0], [0.0, 1.0]])
    >>> out = overlay_anomaly_map(image, amap, vmin=0, vmax=1, cmap="gray", alpha=1.0)
    >>> out[0, 0].tolist(), out[1, 1].tolist()
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    """
    rgb = _as_float_rgb(image)
    anomaly_map = np.asarray(anomaly_map, dtype=np.float64)
    if anomaly_map.shape != rgb.shape[:2]:
        raise ValueError(f"anomaly map shape {anomaly_map.shape} does not match image shape {rgb.shape[:2]}")
    low = float(anomaly_map.min()) if vmin is None else float(vmin)
    high = float(anomaly_map.max()) if vmax is None else float(vmax)
    scaled = np.clip((anomaly_map - low) / max(high - low, 1e-12), 0.0, 1.0)
    colours = colormaps[cmap](scaled)[..., :3]
    weight = (alpha * scaled if fade else np.full_like(scaled, alpha))[..., None]
    return (1.0 - weight) * rgb + weight * colours


def plot_score_histogram(scores, labels, threshold: float | None = None, title: str | None = None,
                         ax=None, bins: int | str = 20,
                         names: tuple[str, str] = ("nominal", "anomalous")) -> Figure:
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
        raise ValueError(f"scores and labels: expected two 1-D arrays of one length, got {scores.shape}, {labels.shape}")
    figure, ax = _new_axes(ax, (5.2, 3.4))
    table = pd.DataFrame({"score": scores, "class": np.where(labels == 1, names[1], names[0])})
    present = [name for name in names if name in set(table["class"])]
    edges = np.histogram_bin_edges(scores, bins=bins)
    palette = {names[0]: "#4c72b0", names[1]: "#dd8452"}
    sns.histplot(data=table, x="score", hue="class", hue_order=present, bins=edges, palette=palette,
                 multiple="layer", alpha=0.55, edgecolor="white", linewidth=0.5, ax=ax)
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1.5)
        ax.annotate("threshold", xy=(threshold, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", ha="left", va="top", fontsize=8, color="#c44e52")
    ax.set_xlabel("image anomaly score")
    ax.set_ylabel("images")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title=None, frameon=False, fontsize=8)
    return figure


_GALLERY_ROWS = {
    "image": "image + ground truth",
    "overlay": "anomaly heat map",
    "thresholded": "thresholded map",
}


def gallery_views(image, mask=None, flagged=None, truth_colour=(0.0, 0.9, 0.2), prediction_colour=(0.9, 0.1, 0.1),
                  outline_thickness: int = 1) -> dict[str, np.ndarray]:
    """One column of :func:`plot_gallery` as arrays: ``{"image", "overlay", "thresholded"}``.

    ``image`` with the ground-truth outline of ``mask``; a grey copy (under the heat map) with the
    same outline; and, when ``flagged`` (a boolean mask) is given, the image with ``flagged`` tinted
    and outlined. A gallery that updates in place draws the same arrays as a fresh one.
    """
    outline = None if mask is None or not np.any(mask) else mask_outline(mask, outline_thickness)
    grey = _as_float_rgb(image).mean(axis=2)
    views = {
        "image": image if outline is None else paint_mask(image, outline, truth_colour),
        "overlay": grey if outline is None else paint_mask(grey, outline, truth_colour),
    }
    if flagged is not None:
        flagged = np.asarray(flagged, dtype=bool)
        predicted = paint_mask(image, flagged, prediction_colour, alpha=0.45)
        # the outline keeps the prediction visible on dark defects, where a tint is lost
        predicted = paint_mask(predicted, mask_outline(flagged, outline_thickness), prediction_colour)
        views["thresholded"] = predicted if outline is None else paint_mask(predicted, outline, truth_colour)
    return views


def plot_gallery(images, masks, maps, thresholded=None, titles=None, cmap: str = "inferno",
                 vmin: float | None = None, vmax: float | None = None, alpha: float = 0.65,
                 truth_colour=(0.0, 0.9, 0.2), prediction_colour=(0.9, 0.1, 0.1), outline_thickness: int = 1,
                 panel_size: float = 1.9, fontsize: float = 9, colorbar: bool = True,
                 colorbar_label: str = "anomaly score", threshold: float | None = None) -> Figure:
    """A gallery of test images: one column per image, three rows of views.

    1. the image with the ground-truth outline (``masks``; ``None`` entries = no defect);
    2. the anomaly map (``maps``) as a heat map in ``cmap`` over a grey copy of the image, at
       opacity ``alpha`` everywhere, so every score has its colour and the colour bar reads it;
    3. the thresholded map (``thresholded``: boolean masks, e.g. ``maps > model.pixel_threshold_``)
       tinted and outlined red, with the ground-truth outline on top; the row is left out when
       ``thresholded`` is None.

    All maps share one colour scale ``vmin``..``vmax`` (default: their joint range), so columns
    compare; ``colorbar`` adds its legend below the last row (``colorbar_label``), with a line at
    ``threshold`` when given. Outlines are ``outline_thickness`` pixels wide (2 stays visible when
    a large image is shown small).

    >>> images, maps = np.zeros((2, 8, 8, 3), np.uint8), np.random.rand(2, 8, 8)
    >>> fig = plot_gallery(images, [None, maps[1] > 0.5], maps, thresholded=maps > 0.9)
    >>> len(fig.axes)   # 3 rows x 2 images + the colour bar
    7
    """
    images = list(images)
    maps = [np.asarray(m, dtype=np.float64) for m in maps]
    masks = [None] * len(images) if masks is None else list(masks)
    rows = ["image", "overlay"] + ([] if thresholded is None else ["thresholded"])
    if not images or not (len(images) == len(maps) == len(masks)):
        raise ValueError(f"images, masks, maps: expected equally many (>= 1), got {len(images)}, {len(masks)}, {len(maps)}")
    if thresholded is not None and len(thresholded) != len(images):
        raise ValueError(f"thresholded: expected {len(images)} masks, got {len(thresholded)}")
    low = min(float(m.min()) for m in maps) if vmin is None else float(vmin)
    high = max(float(m.max()) for m in maps) if vmax is None else float(vmax)

    figure = Figure(figsize=(panel_size * len(images) + 0.9, panel_size * len(rows) + (0.75 if colorbar else 0.3)),
                    layout="constrained")
    axes = figure.subplots(len(rows), len(images), squeeze=False)
    for column, (image, mask, anomaly_map) in enumerate(zip(images, masks, maps)):
        views = gallery_views(image, mask, None if thresholded is None else thresholded[column], truth_colour,
                              prediction_colour, outline_thickness)
        for row, view in enumerate(rows):
            ax = axes[row, column]
            ax.imshow(views[view], interpolation="nearest", **({"cmap": "gray", "vmin": 0, "vmax": 1}
                                                                 if np.ndim(views[view]) == 2 else {}))
            if view == "overlay":  # the heat map itself, on the colour bar's scale
                ax.imshow(anomaly_map, cmap=cmap, vmin=low, vmax=high, alpha=alpha, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(_GALLERY_ROWS[view], fontsize=fontsize)
        if titles is not None:
            axes[0, column].set_title(titles[column], fontsize=fontsize)
    if colorbar:
        scale = ScalarMappable(norm=Normalize(low, high), cmap=cmap)
        bar = figure.colorbar(scale, ax=axes[-1, :].tolist(), location="bottom", shrink=0.7, aspect=30)
        bar.set_label(colorbar_label, fontsize=fontsize)
        bar.ax.tick_params(labelsize=fontsize)
        if threshold is not None and low <= threshold <= high:
            bar.ax.axvline(threshold, color="#c44e52" if cmap != "jet" else "white", linewidth=2)
            bar.ax.annotate("threshold", xy=(threshold, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=fontsize - 1,
                            color="#c44e52")
    return figure


def metric_colour(value: float | None, low: float = 0.5, high: float = 1.0) -> tuple:
    """A background colour for a score in [low, high]: red (poor) through yellow to green (good)."""
    if value is None or not np.isfinite(value):
        return (0.92, 0.92, 0.92, 1.0)
    scaled = float(np.clip((value - low) / (high - low), 0.0, 1.0))
    red, alpha = colormaps["RdYlGn"](scaled), 0.55
    return tuple((1 - alpha) + alpha * np.asarray(red[:3])) + (1.0,)


def plot_metrics_table(table: pd.DataFrame, score_columns=("image_auroc", "pixel_auroc", "aupro"),
                       formats: dict | None = None, title: str | None = None) -> Figure:
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
    colours = [[(1, 1, 1, 1)] + [metric_colour(row[c]) if c in score_columns else (1, 1, 1, 1)
                                  for c in table.columns] for _, row in table.iterrows()]
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


def plot_shots_curve(table: pd.DataFrame, metric: str = "image_auroc", hue: str = "category",
                     x: str = "shots", ax=None) -> Figure:
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
