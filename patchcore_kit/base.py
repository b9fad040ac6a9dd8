"""What every anomaly estimator in the kit shares (PatchCore, PaDiM, SPADE, 1-NN).

The contract follows scikit-learn and pyod: parameters are stored untouched in ``__init__``,
``fit(images)`` does the work and returns ``self``, fitted state ends in ``_``, and
``decision_function`` is *higher = more anomalous*. Subclasses implement two methods:

* ``_fit_maps(layer_maps_batches, n_images)`` — learn from the training images' stage maps;
* ``_score_maps(layer_maps) -> (image_scores, patch_score_grid)`` — score one batch.

The rest lives here: turning any image input into backbone maps (through a
:class:`~patchcore_kit.features.FeatureExtractor`, optionally cached), upsampling patch scores to
the image size and smoothing them with a Gaussian of σ=4 (paper, Sec. 3.3), and ``predict`` with
a threshold learned from nominal training images only.
"""
from __future__ import annotations

import time
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from .features import FeatureExtractor
from .images import ImageLike, as_hw

MAP_SIGMA = 4.0


def upsample_and_smooth(patch_scores: torch.Tensor, image_size, sigma: float = MAP_SIGMA) -> np.ndarray:
    """``(B, h, w)`` patch scores -> ``(B, H, W)`` anomaly maps: bilinear upsampling, then Gaussian."""
    maps = F.interpolate(patch_scores[:, None].float(), size=as_hw(image_size), mode="bilinear", align_corners=False)
    maps = maps[:, 0].numpy()
    if sigma > 0:
        maps = np.stack([gaussian_filter(m, sigma=sigma) for m in maps])
    return maps


class AnomalyEstimator:
    """Base class: image input, feature extraction, maps, thresholds. Not used on its own."""

    #: names of the constructor parameters (for get_params / save)
    _param_names: tuple[str, ...] = ()

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self._param_names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- features -------------------------------------------------------------------------------
    def _extract_layers(self) -> tuple[str, ...]:
        """The backbone stages this estimator reads, in the order ``_fit_maps`` / ``_score_maps`` get them.

        ``layers`` here; an estimator that also pools a stage of its own (SPADE's global feature)
        asks for the union, so that one extraction (one cache entry per image) serves both.
        """
        return tuple(self.layers)

    def _extractor(self) -> FeatureExtractor:
        layers = self._extract_layers()
        settings = (self.backbone, layers, as_hw(self.image_size), self.weights, self.device,
                    self.batch_size, self.feature_cache, self.progress)
        if getattr(self, "_extractor_cache", (None, None))[0] != settings:
            extractor = FeatureExtractor(
                self.backbone, layers, self.image_size, weights=self.weights, device=self.device,
                batch_size=self.batch_size, cache_dir=self.feature_cache, progress=self.progress,
            )
            self._extractor_cache = (settings, extractor)
        return self._extractor_cache[1]

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_train_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(images) first")

    # -- the public API ---------------------------------------------------------------------------
    def fit(self, images: Sequence[ImageLike]):
        """Learn what nominal looks like from ``images`` (nominal only). Returns ``self``."""
        images = _as_list(images)  # one path or array is one image, not a sequence of characters or rows
        if not images:
            raise ValueError("fit needs at least one nominal image")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        self._fit_maps(self._extractor().iter_layer_maps(images, desc="fit"), len(images), timings)
        self.n_train_ = len(images)
        timings["fit_total"] = time.perf_counter() - start
        self.fit_seconds_ = timings
        self.threshold_, self.pixel_threshold_ = self._calibrate(images)
        return self

    def score(self, images: Sequence[ImageLike] | ImageLike) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(N,)`` and anomaly maps ``(N, H, W)`` in one pass over the images."""
        self._check_fitted()
        images = _as_list(images)
        scores, maps = [], []
        for layer_maps in self._extractor().iter_layer_maps(images, desc="score"):
            batch_scores, patch_scores = self._score_maps(layer_maps)
            scores.append(np.asarray(batch_scores, dtype=np.float64))
            maps.append(upsample_and_smooth(patch_scores, self.image_size))
        return np.concatenate(scores), np.concatenate(maps)

    def decision_function(self, images) -> np.ndarray:
        """Anomaly score per image: higher = more anomalous."""
        return self.score(images)[0]

    def anomaly_map(self, images) -> np.ndarray:
        """Per-pixel anomaly scores ``(N, H, W)`` at the model's ``image_size``."""
        return self.score(images)[1]

    def predict(self, images) -> np.ndarray:
        """1 = anomalous, 0 = nominal, by the threshold learned from nominal training data."""
        self._check_fitted()
        if self.threshold_ is None:
            raise RuntimeError(
                "no threshold: it is calibrated on held-out nominal training images, which needs at least "
                "2 training images and calibrate=True"
            )
        return (self.decision_function(images) > self.threshold_).astype(int)

    # -- thresholds from nominal data only --------------------------------------------------------
    def _calibrate(self, images: list) -> tuple[float | None, float | None]:
        """Threshold = a high quantile of *leave-one-out* scores of the nominal training images.

        Scoring a training image against a model that contains it gives ~0, so each image is
        scored by a model that excludes it (subclasses implement ``_leave_one_out_scores``). The
        test set is never looked at.
        """
        if not getattr(self, "calibrate", True) or len(images) < 2:
            return None, None
        start = time.perf_counter()
        scores, map_maxima = self._leave_one_out_scores(images)
        self.fit_seconds_["calibration"] = time.perf_counter() - start
        q = self.threshold_quantile
        return float(np.quantile(scores, q)), float(np.quantile(map_maxima, q))

    def _leave_one_out_scores(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _fit_maps(self, batches: Iterable[list[torch.Tensor]], n_images: int, timings: dict) -> None:
        raise NotImplementedError

    def _score_maps(self, layer_maps: list[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        raise NotImplementedError


def _as_list(images) -> list:
    from PIL import Image
    from pathlib import Path

    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    return list(images)
