"""Anomaly maps over images: mask outlines, tints, heat-map overlays and the gallery of test images."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from scipy import ndimage

__all__ = ["mask_outline", "overlay_anomaly_map", "paint_mask", "plot_gallery"]


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


def overlay_anomaly_map(
    image,
    anomaly_map,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "inferno",
    alpha: float = 0.7,
    fade: bool = True,
) -> np.ndarray:
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


_GALLERY_ROWS = {
    "image": "image + ground truth",
    "overlay": "anomaly heat map",
    "thresholded": "thresholded map",
}


def gallery_views(
    image,
    mask=None,
    flagged=None,
    truth_colour=(0.0, 0.9, 0.2),
    prediction_colour=(0.9, 0.1, 0.1),
    outline_thickness: int = 1,
) -> dict[str, np.ndarray]:
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


def plot_gallery(
    images,
    masks,
    maps,
    thresholded=None,
    titles=None,
    cmap: str = "inferno",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.65,
    truth_colour=(0.0, 0.9, 0.2),
    prediction_colour=(0.9, 0.1, 0.1),
    outline_thickness: int = 1,
    panel_size: float = 1.9,
    fontsize: float = 9,
    colorbar: bool = True,
    colorbar_label: str = "anomaly score",
    threshold: float | None = None,
) -> Figure:
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
        raise ValueError(
            f"images, masks, maps: expected equally many (>= 1), got {len(images)}, {len(masks)}, {len(maps)}"
        )
    if thresholded is not None and len(thresholded) != len(images):
        raise ValueError(f"thresholded: expected {len(images)} masks, got {len(thresholded)}")
    low = min(float(m.min()) for m in maps) if vmin is None else float(vmin)
    high = max(float(m.max()) for m in maps) if vmax is None else float(vmax)

    figure = Figure(
        figsize=(panel_size * len(images) + 0.9, panel_size * len(rows) + (0.75 if colorbar else 0.3)),
        layout="constrained",
    )
    axes = figure.subplots(len(rows), len(images), squeeze=False)
    for column, (image, mask, anomaly_map) in enumerate(zip(images, masks, maps)):
        views = gallery_views(
            image,
            mask,
            None if thresholded is None else thresholded[column],
            truth_colour,
            prediction_colour,
            outline_thickness,
        )
        for row, view in enumerate(rows):
            ax = axes[row, column]
            ax.imshow(
                views[view],
                interpolation="nearest",
                **({"cmap": "gray", "vmin": 0, "vmax": 1} if np.ndim(views[view]) == 2 else {}),
            )
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
            bar.ax.annotate(
                "threshold",
                xy=(threshold, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=fontsize - 1,
                color="#c44e52",
            )
    return figure
