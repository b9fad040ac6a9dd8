"""Evaluate an estimator on a dataset split: fit on the training pool, score the test set, measure.

This is the one loop that the command line, the demo report and the notebooks share:

>>> split = load_dataset("../shared/data/mtd", "mtd").with_shots(100, seed=0)   # doctest: +SKIP
>>> result = evaluate(PatchCore(), split)                                          # doctest: +SKIP
>>> result.metrics["image_auroc"]                                                  # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .data.base import Split, read_sample_mask
from .images import as_hw, resize_mask
from .metrics import PixelGroundTruth, image_auroc, per_defect_metrics


def ground_truth_masks(split: Split, image_size) -> np.ndarray | None:
    """The test masks resized to the model's map size ``(N, H, W)``; None without pixel ground truth."""
    if not split.has_masks:
        return None
    return np.stack([resize_mask(read_sample_mask(sample), image_size) for sample in split.test])


@dataclass
class Evaluation:
    """Everything an evaluation produced, kept together for reports and figures."""

    split: Split
    scores: np.ndarray  # (N,) image scores of the test set
    maps: np.ndarray  # (N, H, W) anomaly maps at the model's image size
    masks: np.ndarray | None  # (N, H, W) ground truth, or None
    metrics: dict
    seconds: dict = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.split.test_labels

    def score_rows(self) -> list[dict]:
        """One row per test image for ``scores.csv``."""
        return [
            {"path": self.split.relative(s.path), "label": s.label, "defect_type": s.defect_type, "score": float(score)}
            for s, score in zip(self.split.test, self.scores)
        ]


def compute_metrics(
    split: Split, scores: np.ndarray, maps: np.ndarray, masks: np.ndarray | PixelGroundTruth | None,
    per_defect: bool = True,
) -> dict:
    """Image AUROC, pixel AUROC and AUPRO (None without masks), overall and per defect type.

    ``masks``: the test masks, or a :class:`~patchcore_kit.metrics.PixelGroundTruth` of them,
    which a sweep prepares once for all its fits (the defect regions are labelled only once).
    ``per_defect=False`` leaves out the ``"per_defect"`` entry (it measures every defect type
    again, which a sweep of many fits does not need).
    """
    labels = split.test_labels
    truth = masks if isinstance(masks, PixelGroundTruth) or masks is None else PixelGroundTruth(masks)
    pixel, pro = truth.metrics(maps) if truth is not None else (None, None)
    metrics = {"image_auroc": image_auroc(labels, scores), "pixel_auroc": pixel, "aupro": pro}
    if per_defect:
        metrics["per_defect"] = per_defect_metrics(
            labels, split.test_defect_types, scores, None if truth is None else truth.masks,
            maps if truth is not None else None,
        )
    return metrics


def evaluate(model, split: Split, fit: bool = True) -> Evaluation:
    """Fit ``model`` on ``split.train`` (unless ``fit=False``), score ``split.test``, compute metrics."""
    seconds = {}
    start = time.perf_counter()
    # Masks first: a missing, damaged or wrongly sized mask fails now, not after fitting and scoring.
    masks = ground_truth_masks(split, as_hw(model.image_size))
    seconds["masks"] = time.perf_counter() - start
    if fit:
        model.fit(split.train_paths)
        seconds.update({f"fit_{k}" if not k.startswith("fit") else k: v for k, v in model.fit_seconds_.items()})
    start = time.perf_counter()
    scores, maps = model.score(split.test_paths)
    seconds["score"] = time.perf_counter() - start
    start = time.perf_counter()
    metrics = compute_metrics(split, scores, maps, masks)
    seconds["metrics"] = time.perf_counter() - start
    return Evaluation(split, scores, maps, masks, metrics, seconds)
