"""Notebook 04's segmentation gallery: maps next to the ground truth, defect type by defect type.

:class:`GalleryState` holds the test images and masks at the model's resolution on top of
:class:`~patchcore_kit.widgets.fits.MemoisedFits`; :func:`render_gallery` draws one defect type
and :func:`gallery_metrics` measures every type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data import Split
from ..evaluate import ground_truth_masks
from ..images import as_hw, display_image
from ..metrics import mask_iou, per_defect_metrics
from ..patchcore import PatchCore
from ..viz import METRIC_LABELS, plot_gallery
from .fits import MemoisedFits


class GalleryState(MemoisedFits):
    """A test set with its pictures and masks, and memoised PatchCore fits on cached features.

    Changing the coreset ratio, the patch size or the aggregation refits from the feature cache
    (no backbone pass); changing the number of neighbours b only re-weighs stored numbers: the
    test set is scored once per fit with the distances of each image's worst patch to its
    ``max_neighbors`` nearest bank entries kept, and Eq. 7 for any smaller b reads a prefix of them
    (:func:`~patchcore_kit.patchcore.image_scores_for`). Threshold and colour map only re-draw.
    ``warm()`` computes every combination up front, so the controls then respond at once.

    With ``calibrate=True`` (a PatchCore parameter) every fit also sets its pixel threshold from
    leave-one-out scores of the *nominal training images*, and :meth:`normalised_maps` are in
    units of that threshold: 1.0 is the decision threshold, chosen without looking at the test
    set. Without calibration the maps are divided by the test set's largest value, which is fine
    for a picture but is not a threshold (it depends on the test images, defects included).

    Extra PatchCore settings (``patch_size``, ``layers``, ...) go into :meth:`result` as keywords;
    each combination is fitted once.

    >>> state = GalleryState(split, image_size=224, feature_cache="data/feature_cache")   # doctest: +SKIP
    >>> scores, maps = state.result(coreset_ratio=0.1, num_neighbors=9)                   # doctest: +SKIP
    """

    def __init__(self, split: Split, max_neighbors: int = 9, **patchcore_params):
        super().__init__(split, max_neighbors, **patchcore_params)
        self.image_size = as_hw(PatchCore(**self.params).image_size)
        self.images = np.stack([display_image(path, self.image_size) for path in split.test_paths])
        self.masks = ground_truth_masks(split, self.image_size)
        self.labels = split.test_labels
        self.defect_types = np.asarray(split.test_defect_types, dtype=str)
        self._normalised: dict = {}  # per fit: maps / map_scale, kept for re-drawing
        self._metrics: dict = {}  # per fit (pixel metrics) and per fit and b (image AUROC)

    def map_scale(self, coreset_ratio: float, num_neighbors: int = 1, **settings) -> float:
        """What :meth:`normalised_maps` divides by: the calibrated pixel threshold, else the test maximum."""
        threshold = getattr(self.model(coreset_ratio, **settings), "pixel_threshold_", None)
        if self.calibrated and threshold:
            return float(threshold)
        return max(float(self.result(coreset_ratio, num_neighbors, **settings)[1].max()), 1e-12)

    def normalised_maps(self, coreset_ratio: float, num_neighbors: int, **settings) -> np.ndarray:
        """Anomaly maps divided by :meth:`map_scale`: with calibration 1.0 is the nominal pixel threshold.

        Neither the maps nor the scale depend on b, so the division is done once per fit and kept
        (read-only: copy before changing it).
        """
        key = self._key(coreset_ratio, settings)
        if key not in self._normalised:
            maps = self.result(coreset_ratio, num_neighbors, **settings)[1]
            normalised = maps / self.map_scale(coreset_ratio, num_neighbors, **settings)
            normalised.flags.writeable = False
            self._normalised[key] = normalised
        return self._normalised[key]

    def defect_metrics(self, coreset_ratio: float, num_neighbors: int, **settings) -> dict[str, dict]:
        """:func:`~patchcore_kit.metrics.per_defect_metrics` of this fit and b, measured once and kept.

        Pixel AUROC and AUPRO depend on the maps alone, so they are measured once per fit; image
        AUROC once per fit and b.
        """
        key = self._key(coreset_ratio, settings)
        scores, maps = self.result(coreset_ratio, num_neighbors, **settings)
        if key not in self._metrics:
            self._metrics[key] = per_defect_metrics(
                self.labels, self.defect_types, scores, self.masks, maps if self.masks is not None else None
            )
        if (key, num_neighbors) not in self._metrics:
            image = per_defect_metrics(self.labels, self.defect_types, scores)
            self._metrics[key, num_neighbors] = {
                defect: {**row, "image_auroc": image[defect]["image_auroc"]}
                for defect, row in self._metrics[key].items()
            }
        return self._metrics[key, num_neighbors]

    def warm(self, ratios: Sequence[float], num_neighbors: Sequence[int], **settings) -> GalleryState:
        """Fit, score, normalise and measure every ratio and b up front: the controls then only re-draw."""
        super().warm(ratios, num_neighbors, **settings)
        for ratio in ratios:
            self.normalised_maps(ratio, num_neighbors[0], **settings)
            for k in num_neighbors:
                self.defect_metrics(ratio, k, **settings)
        return self

    @property
    def defect_choices(self) -> list[str]:
        kinds = {str(d) for d in self.defect_types}
        return sorted(kinds - {"good"}) + (["good"] if "good" in kinds else [])

    def default_threshold(self) -> float:
        """1.0 (the calibrated pixel threshold) with calibration, else half the test set's largest value."""
        return 1.0 if self.calibrated else 0.5


@dataclass
class GalleryPanels:
    """What one gallery shows: the chosen test images (indices), their titles, maps and masks."""

    chosen: np.ndarray
    titles: list[str]
    maps: np.ndarray  # normalised
    masks: np.ndarray | None
    threshold: float

    @property
    def flagged(self) -> np.ndarray:
        return self.maps > self.threshold


def gallery_panels(
    state: GalleryState,
    defect_type: str,
    threshold: float | None = None,
    coreset_ratio: float = 0.1,
    num_neighbors: int = 9,
    max_images: int = 4,
    **settings,
) -> GalleryPanels:
    """The first ``max_images`` test images of ``defect_type``, from the stored results of this fit and b."""
    threshold = state.default_threshold() if threshold is None else float(threshold)
    scores, _ = state.result(coreset_ratio, num_neighbors, **settings)
    maps = state.normalised_maps(coreset_ratio, num_neighbors, **settings)
    chosen = np.flatnonzero(state.defect_types == defect_type)[:max_images]
    if len(chosen) == 0:
        raise ValueError(f"no test images of defect type {defect_type!r}; choose from {state.defect_choices}")
    rank = np.argsort(np.argsort(-scores)) + 1
    titles = [f"{defect_type} #{i}\nscore {scores[i]:.2f}, rank {rank[i]}/{len(scores)}" for i in chosen]
    masks = None if state.masks is None else state.masks[chosen]
    return GalleryPanels(chosen, titles, maps[chosen], masks, threshold)


def gallery_scale(state: GalleryState) -> tuple[float, float, str]:
    """The colour bar's range and label: 0..2 thresholds with calibration, else 0..1 of the test maximum."""
    if state.calibrated:
        return 0.0, 2.0, "anomaly score / nominal pixel threshold"
    return 0.0, 1.0, "anomaly score / test-set maximum"


def render_gallery(
    state: GalleryState,
    defect_type: str,
    threshold: float | None = None,
    coreset_ratio: float = 0.1,
    num_neighbors: int = 9,
    cmap: str = "inferno",
    max_images: int = 4,
    **settings,
) -> Figure:
    """Images of one defect type: ground truth, anomaly map, and the map above ``threshold``.

    One column per image (:func:`~patchcore_kit.viz.plot_gallery`): the image with the ground truth
    outlined, the anomaly map as a heat map with its colour bar, the pixels above ``threshold``.
    Maps are :meth:`GalleryState.normalised_maps`: with a calibrated state ``threshold`` is a
    multiple of the pixel threshold set on nominal training images (default 1.0, that threshold
    itself; the colour bar runs from 0 to 2); without calibration it is a fraction of the test
    set's largest value (default 0.5). Titles give the image score and its rank among all test
    images (1 = most anomalous). ``settings`` (patch_size, layers, ...) choose the fit.

    A new figure each call; :class:`~patchcore_kit.widgets.gallery_figure.GalleryFigure` keeps one
    and updates it in place (what the explorer does).
    """
    panels = gallery_panels(state, defect_type, threshold, coreset_ratio, num_neighbors, max_images, **settings)
    low, high, label = gallery_scale(state)
    return plot_gallery(
        state.images[panels.chosen],
        panels.masks,
        panels.maps,
        thresholded=panels.flagged,
        titles=panels.titles,
        cmap=cmap,
        vmin=low,
        vmax=high,
        panel_size=2.4,
        colorbar_label=label,
        threshold=panels.threshold,
    )


def gallery_metrics(
    state: GalleryState, coreset_ratio: float = 0.1, num_neighbors: int = 9, threshold: float | None = None, **settings
) -> pd.DataFrame:
    """Per defect type: image AUROC, pixel AUROC, AUPRO (threshold-free) and IoU at ``threshold``.

    IoU pools the pixels of all images of a type (:func:`~patchcore_kit.metrics.mask_iou`), with
    the prediction ``normalised map > threshold`` (default as in :func:`render_gallery`). The
    threshold-free metrics are measured once per fit and b (:meth:`GalleryState.defect_metrics`).
    """
    threshold = state.default_threshold() if threshold is None else threshold
    table = pd.DataFrame(state.defect_metrics(coreset_ratio, num_neighbors, **settings)).T
    if state.masks is not None:
        predicted = state.normalised_maps(coreset_ratio, num_neighbors, **settings) > threshold
        iou = {
            defect: mask_iou(state.masks[state.defect_types == defect], predicted[state.defect_types == defect])
            for defect in table.index
        }
        table[f"IoU @ {threshold:.2f}"] = pd.Series(iou)
    table = table.rename(columns={**METRIC_LABELS, "n_images": "images"})
    table.index.name = "defect type"
    return table.astype(float).round(3).astype({"images": int})
