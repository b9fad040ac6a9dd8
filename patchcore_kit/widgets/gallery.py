"""Notebook 04's segmentation gallery: maps next to the ground truth, defect type by defect type.

:class:`GalleryState` holds the test images and masks at the model's resolution on top of
:class:`~patchcore_kit.widgets.fits.MemoisedFits`; :func:`render_gallery` draws one defect type
and :func:`gallery_metrics` measures every type.
"""
from __future__ import annotations

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


    def map_scale(self, coreset_ratio: float, num_neighbors: int = 1, **settings) -> float:
        """What :meth:`normalised_maps` divides by: the calibrated pixel threshold, else the test maximum."""
        threshold = getattr(self.model(coreset_ratio, **settings), "pixel_threshold_", None)
        if self.calibrated and threshold:
            return float(threshold)
        return max(float(self.result(coreset_ratio, num_neighbors, **settings)[1].max()), 1e-12)

    def normalised_maps(self, coreset_ratio: float, num_neighbors: int, **settings) -> np.ndarray:
        """Anomaly maps divided by :meth:`map_scale`: with calibration 1.0 is the nominal pixel threshold."""
        maps = self.result(coreset_ratio, num_neighbors, **settings)[1]
        return maps / self.map_scale(coreset_ratio, num_neighbors, **settings)

    @property
    def defect_choices(self) -> list[str]:
        kinds = {str(d) for d in self.defect_types}
        return sorted(kinds - {"good"}) + (["good"] if "good" in kinds else [])


def render_gallery(state: GalleryState, defect_type: str, threshold: float | None = None, coreset_ratio: float = 0.1,
                   num_neighbors: int = 9, cmap: str = "inferno", max_images: int = 4, **settings) -> Figure:
    """Images of one defect type: ground truth, anomaly map, and the map above ``threshold``.

    One column per image (:func:`~patchcore_kit.viz.plot_gallery`): the image with the ground truth
    outlined, the anomaly map as a heat map with its colour bar, the pixels above ``threshold``.
    Maps are :meth:`GalleryState.normalised_maps`: with a calibrated state ``threshold`` is a
    multiple of the pixel threshold set on nominal training images (default 1.0, that threshold
    itself; the colour bar runs from 0 to 2); without calibration it is a fraction of the test
    set's largest value (default 0.5). Titles give the image score and its rank among all test
    images (1 = most anomalous). ``settings`` (patch_size, layers, ...) choose the fit.
    """
    if threshold is None:
        threshold = 1.0 if state.calibrated else 0.5
    scores, _ = state.result(coreset_ratio, num_neighbors, **settings)
    maps = state.normalised_maps(coreset_ratio, num_neighbors, **settings)
    chosen = np.flatnonzero(state.defect_types == defect_type)[:max_images]
    if len(chosen) == 0:
        raise ValueError(f"no test images of defect type {defect_type!r}; choose from {state.defect_choices}")
    rank = np.argsort(np.argsort(-scores)) + 1
    titles = [f"{defect_type} #{i}\nscore {scores[i]:.2f}, rank {rank[i]}/{len(scores)}" for i in chosen]
    masks = None if state.masks is None else state.masks[chosen]
    high = 2.0 if state.calibrated else 1.0
    label = "anomaly score / nominal pixel threshold" if state.calibrated else "anomaly score / test-set maximum"
    return plot_gallery(state.images[chosen], masks, maps[chosen], thresholded=maps[chosen] > threshold,
                        titles=titles, cmap=cmap, vmin=0.0, vmax=high, panel_size=2.4, colorbar_label=label,
                        threshold=threshold)


def gallery_metrics(state: GalleryState, coreset_ratio: float = 0.1, num_neighbors: int = 9,
                    threshold: float | None = None, **settings) -> pd.DataFrame:
    """Per defect type: image AUROC, pixel AUROC, AUPRO (threshold-free) and IoU at ``threshold``.

    IoU pools the pixels of all images of a type: |predicted ∩ truth| / |predicted ∪ truth|, with
    the prediction ``normalised map > threshold`` (default as in :func:`render_gallery`).
    """
    if threshold is None:
        threshold = 1.0 if state.calibrated else 0.5
    scores, maps = state.result(coreset_ratio, num_neighbors, **settings)
    table = pd.DataFrame(per_defect_metrics(state.labels, state.defect_types, scores, state.masks,
                                            maps if state.masks is not None else None)).T
    if state.masks is not None:
        predicted = state.normalised_maps(coreset_ratio, num_neighbors, **settings) > threshold
        iou = {defect: mask_iou(state.masks[state.defect_types == defect],
                                predicted[state.defect_types == defect]) for defect in table.index}
        table[f"IoU @ {threshold:.2f}"] = pd.Series(iou)
    table = table.rename(columns={**METRIC_LABELS, "n_images": "images"})
    table.index.name = "defect type"
    return table.astype(float).round(3).astype({"images": int})

