"""Evaluate an estimator on a dataset split: fit on the training pool, score the test set, measure.

:func:`evaluate` is the kit's one fit -> score -> measure loop: the command line, the demo report,
the sample-efficiency sweep, ``tune``, the notebooks and the widgets all call it, so a rule about
masks, metrics or timings lives here only.

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
    split: Split,
    scores: np.ndarray,
    maps: np.ndarray | None,
    masks: np.ndarray | PixelGroundTruth | None,
    per_defect: bool = True,
) -> dict:
    """Image AUROC, pixel AUROC and AUPRO (None without masks), overall and per defect type.

    ``masks``: the test masks, or a :class:`~patchcore_kit.metrics.PixelGroundTruth` of them,
    which a sweep prepares once for all its fits (the defect regions are labelled only once).
    ``per_defect=False`` leaves out the ``"per_defect"`` entry (it measures every defect type
    again, which a sweep of many fits does not need).
    """
    labels = split.test_labels
    pixel = masks is not None and maps is not None
    truth = None if not pixel else masks if isinstance(masks, PixelGroundTruth) else PixelGroundTruth(masks)
    pixel_auroc, pro = truth.metrics(maps) if pixel else (None, None)
    metrics = {"image_auroc": image_auroc(labels, scores), "pixel_auroc": pixel_auroc, "aupro": pro}
    if per_defect:
        metrics["per_defect"] = per_defect_metrics(
            labels, split.test_defect_types, scores, truth.masks if pixel else None, maps if pixel else None
        )
    return metrics


def evaluate(
    model,
    split: Split,
    *,
    fit: bool = True,
    masks: np.ndarray | PixelGroundTruth | None = None,
    pixel: bool = True,
    per_defect: bool = True,
) -> Evaluation:
    """Fit ``model`` on ``split.train`` (unless ``fit=False``), score ``split.test``, compute metrics.

    ``model`` is any estimator of the kit (``fit`` and ``score_images``). ``masks``: the test
    set's :func:`ground_truth_masks` (or a :class:`~patchcore_kit.metrics.PixelGroundTruth` of them),
    when the caller read them already (a sweep reads and labels them once for all its fits); None reads them here, *before* fitting, so that a missing or damaged mask
    fails at once. ``pixel=False`` skips the masks and the pixel metrics (they are None).
    ``per_defect=False`` skips the per-defect table.

    ``seconds``: ``masks``, ``fit`` (the whole ``fit`` call) and the model's own ``fit_*`` parts,
    ``infer`` (scoring the test set: image scores and anomaly maps) and ``metrics``.
    It is :func:`fit_and_score` followed by :meth:`Scored.measure`.
    """
    return fit_and_score(model, split, fit=fit, masks=masks, pixel=pixel).measure(per_defect)


@dataclass
class Scored:
    """A split's test set scored by a fitted model, not measured yet: what :func:`fit_and_score`
    returns. A sweep measures one cell while the next one is fitted and scored."""

    split: Split
    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray | PixelGroundTruth | None  # None when the pixel metrics are skipped
    seconds: dict

    def measure(self, per_defect: bool = True) -> Evaluation:
        """The metrics (see :func:`compute_metrics`) and their seconds: the :class:`Evaluation`."""
        start = time.perf_counter()
        metrics = compute_metrics(self.split, self.scores, self.maps, self.masks, per_defect=per_defect)
        seconds = {**self.seconds, "metrics": time.perf_counter() - start}
        masks = self.masks.masks if isinstance(self.masks, PixelGroundTruth) else self.masks
        return Evaluation(self.split, self.scores, self.maps, masks, metrics, seconds)


def fit_and_score(
    model,
    split: Split,
    *,
    fit: bool = True,
    masks: np.ndarray | PixelGroundTruth | None = None,
    pixel: bool = True,
) -> Scored:
    """The first half of :func:`evaluate` (same parameters): read the masks, fit, score the test set."""
    seconds = {}
    start = time.perf_counter()
    if pixel and masks is None:
        masks = ground_truth_masks(split, as_hw(model.image_size))
    seconds["masks"] = time.perf_counter() - start
    if fit:
        start = time.perf_counter()
        model.fit(split.train_paths)
        seconds["fit"] = time.perf_counter() - start
        seconds.update({f"fit_{k}" if not k.startswith("fit") else k: v for k, v in model.fit_seconds_.items()})
    start = time.perf_counter()
    scores, maps = model.score_images(split.test_paths)
    seconds["infer"] = time.perf_counter() - start
    return Scored(split, scores, maps, masks if pixel else None, seconds)
