"""One cell of the sweep (fit, score, measure), and the one extraction pass that fills the cache."""
from __future__ import annotations

import time

import numpy as np

from ..data import Split
from ..evaluate import compute_metrics
from ..features import FeatureExtractor


def evaluate_once(model, split: Split, masks: np.ndarray | None) -> dict:
    """Fit ``model`` on ``split.train``, score ``split.test``: metrics and seconds for one row.

    ``masks`` are :func:`~patchcore_kit.evaluate.ground_truth_masks` of the test set, read once
    for the whole sweep; the metrics are :func:`~patchcore_kit.evaluate.compute_metrics`'.
    """
    start = time.perf_counter()
    model.fit(split.train_paths)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores, maps = model.score(split.test_paths)
    infer_s = time.perf_counter() - start
    return {**compute_metrics(split, scores, maps, masks, per_defect=False), "fit_s": fit_s, "infer_s": infer_s}


def extraction_pass(images: list, settings: dict, progress: bool = True) -> dict:
    """Run the backbone once over ``images`` into the cache; how long it took and how much was new.

    ``settings`` are the shared extractor settings (backbone, layers, image_size, weights,
    device, batch_size, feature_cache). ``computed`` counts images that were not cached yet: the
    seconds are one real extraction pass only when ``computed == images``.
    """
    extractor = FeatureExtractor(
        settings["backbone"], settings["layers"], settings["image_size"], weights=settings["weights"],
        device=settings["device"], batch_size=settings["batch_size"], cache_dir=settings["feature_cache"],
        progress=progress,
    )
    computed = sum(not extractor.is_cached(image) for image in images)
    start = time.perf_counter()
    for _ in extractor.iter_layer_maps(images, desc="features (one pass)"):
        pass
    return {"seconds": time.perf_counter() - start, "images": len(images), "computed": computed}

