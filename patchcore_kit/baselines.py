"""The methods PatchCore is compared with, on the same backbone features and the same API.

All three read the backbone stage maps that :class:`~patchcore_kit.patchcore.PatchCore` reads
(same ``backbone``, ``layers`` and ``image_size``, so a feature cache serves all of them) and
follow the estimator contract of :mod:`patchcore_kit.base`: ``fit`` / ``decision_function`` /
``anomaly_map`` / ``predict``, higher = more anomalous.

* :class:`PaDiM` (Defard et al., 2020): one Gaussian *per grid position*. Fit: the mean and the
  covariance (plus ``epsilon * I``) of a random subset of the concatenated layer channels at each
  position; score: the Mahalanobis distance of each test position to its position's Gaussian.
* :class:`SPADE` (Cohen & Hoshen, 2020): first find the ``top_k_images`` training images nearest
  to the test image in a global feature; the image score is the mean distance to them. Then every
  test position is compared with *all* positions of those images (``k``-NN): the anomaly map.
* :class:`NearestImage`: the plainest baseline, the distance to the single nearest training
  image in the global feature.

The "pixel" features of PaDiM and SPADE are the layer maps aligned to the first layer's grid and
concatenated, *without* PatchCore's local p×p aggregation; that aggregation is one of the things
PatchCore adds. The global feature of SPADE and NearestImage is the average-pooled *deepest
extracted layer* (the paper pools the final ResNet stage); reusing a stage that is already
extracted is what lets one cached extraction pass serve every method.

>>> model = PaDiM(backbone="efficientnet_lite0").fit(train_paths)    # doctest: +SKIP
>>> model.decision_function(test_paths)                               # doctest: +SKIP
>>> SPADE(top_k_images=50, k=1).fit(train_paths).anomaly_map(test_paths)   # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import Iterable, Sequence

import numpy as np
import torch

from .backbones import DEFAULT_LAYERS, STAGES
from .base import AnomalyEstimator, upsample_and_smooth
from .features import patch_embeddings

#: Constructor parameters every baseline shares with PatchCore.
_SHARED = ("image_size", "weights", "device", "batch_size", "seed", "threshold_quantile", "calibrate",
           "feature_cache", "progress")


# --- pure functions ---------------------------------------------------------------------------
def aligned_features(layer_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Layer maps resized to the first layer's grid and concatenated: ``(B, C, h, w)``.

    This is :func:`~patchcore_kit.features.patch_embeddings` with ``patch_size=1``: no local
    neighbourhood averaging, as in PaDiM and SPADE.
    """
    return patch_embeddings(layer_maps, patch_size=1)


def global_features(layer_maps: Sequence[torch.Tensor], layers: Sequence[str]) -> torch.Tensor:
    """Global average pool of the deepest of ``layers``: one vector ``(B, C)`` per image."""
    deepest = max(range(len(layers)), key=lambda i: STAGES.index(layers[i]))
    return layer_maps[deepest].float().mean(dim=(2, 3))


def positions_last(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h*w, C)``: one row per grid position, row-major."""
    b, c, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(b, h * w, c)


def random_channels(n_channels: int, n_features: int | None, seed: int) -> torch.Tensor:
    """A seeded, sorted subset of ``n_features`` channel indices (all channels when None or more)."""
    if n_features is None or n_features >= n_channels:
        return torch.arange(n_channels)
    if n_features < 1:
        raise ValueError(f"n_features must be at least 1, got {n_features}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_channels, generator=generator)[:n_features].sort().values


def gaussian_from_sums(
    total: torch.Tensor, outer: torch.Tensor, n: int, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position mean ``(P, d)`` and regularised covariance ``(P, d, d)`` from running sums.

    ``total = Σ x`` ``(P, d)`` and ``outer = Σ x xᵀ`` ``(P, d, d)`` over ``n`` images. The
    covariance is the unbiased sample covariance plus ``epsilon * I`` (PaDiM: 0.01). With one or
    two images the sample covariance has rank ≤ 1 and would be singular; the ``epsilon * I`` term
    keeps it invertible (with one image it *is* ``epsilon * I``: a Euclidean distance, scaled).
    """
    mean = total / n
    scatter = outer - n * mean[:, :, None] * mean[:, None, :]
    if n == 1:
        # Exactly zero. The rounding noise (~1e-17) left by the subtraction would multiply into
        # subnormal numbers in the inverse, which the CPU handles a hundred times more slowly.
        scatter = torch.zeros_like(scatter)
    covariance = scatter / max(n - 1, 1)
    covariance = covariance + epsilon * torch.eye(total.shape[1], dtype=total.dtype)
    return mean, covariance.contiguous()  # one d×d block after another: what LAPACK is fast on


def outer_products(x: torch.Tensor) -> torch.Tensor:
    """``Σ_b x_b x_bᵀ`` per position: ``(B, P, d)`` -> ``(P, d, d)``, contiguous."""
    per_position = x.transpose(0, 1)  # (P, B, d)
    return per_position.mT @ per_position


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Distance of ``x`` ``(B, P, d)`` to per-position Gaussians: ``sqrt((x-μ)ᵀ Σ⁻¹ (x-μ))`` ``(B, P)``."""
    delta = (x - mean).transpose(0, 1)  # (P, B, d): one small matrix product per position
    squared = (torch.bmm(delta, precision) * delta).sum(-1).T
    return squared.clamp_min(0.0).sqrt()


def knn_distance(queries: torch.Tensor, gallery: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Mean Euclidean distance of each query ``(Q, D)`` to its ``k`` nearest gallery rows: ``(Q,)``.

    SPADE searches a new gallery for every test image, so there is no index worth building: one
    fused ``addmm`` gives ``|g|² - 2 q·g`` for all pairs, and ``min`` (k=1) or ``topk`` picks the
    nearest before ``|q|²`` is added and the square root taken, on ``Q × k`` numbers only.
    """
    partial = torch.addmm((gallery * gallery).sum(1), queries, gallery.T, beta=1, alpha=-2)
    if k == 1:
        nearest = partial.min(dim=1, keepdim=True).values
    else:
        nearest = torch.topk(partial, min(k, len(gallery)), dim=1, largest=False).values
    squared = nearest + (queries * queries).sum(1, keepdim=True)
    return squared.clamp_min_(0.0).sqrt_().mean(dim=1)


def spade_image_scores(test_global: torch.Tensor, train_global: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SPADE's first stage: mean distance of each test image ``(B, D)`` to its ``k`` nearest training images.

    Returns the image scores ``(B,)`` and the indices ``(B, k)`` of those training images, nearest
    first (the second stage compares pixels with these images only).
    """
    k = min(int(k), len(train_global))
    nearest_d, nearest_i = torch.topk(torch.cdist(test_global, train_global), k, dim=1, largest=False)
    return nearest_d.mean(dim=1), nearest_i


# --- PaDiM ------------------------------------------------------------------------------------
class PaDiM(AnomalyEstimator):
    """PaDiM: a multivariate Gaussian per patch position, scored by Mahalanobis distance.

    Parameters
    ----------
    backbone, layers, weights : as for :class:`~patchcore_kit.patchcore.PatchCore` (same cache).
    n_features : size of the random channel subset (paper: 100 of 448 channels for ResNet18,
        550 of 1792 for WRN50). The default 100 keeps two thirds of EfficientNet-Lite0's 152
        channels (layer2 + layer3); None keeps all.
    epsilon : ``epsilon * I`` is added to every covariance (paper: 0.01); it is what makes the
        model work from a single training image.
    image_size, device, batch_size, seed, threshold_quantile, calibrate, feature_cache, progress :
        as for PatchCore; ``seed`` picks the channel subset.

    The image score is the maximum of the upsampled, σ=4-smoothed anomaly map, as in the PaDiM
    paper (the maximum of the raw grid would let one noisy position decide).

    >>> model = PaDiM(n_features=100, epsilon=0.01).fit(train_paths)   # doctest: +SKIP
    """

    _param_names = ("backbone", "layers", "n_features", "epsilon") + _SHARED

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[str] = DEFAULT_LAYERS,
        n_features: int | None = 100,
        epsilon: float = 0.01,
        image_size: int | Sequence[int] = 224,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        seed: int = 0,
        threshold_quantile: float = 0.99,
        calibrate: bool = True,
        feature_cache: str | None = None,
        progress: bool = False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.n_features = n_features
        self.epsilon = epsilon
        self.image_size = image_size
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.threshold_quantile = threshold_quantile
        self.calibrate = calibrate
        self.feature_cache = feature_cache
        self.progress = progress

    def embed(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        """Stage maps -> the chosen channels per position ``(B, h*w, d)``, in float64 for the sums."""
        return positions_last(aligned_features(layer_maps)[:, self.channel_index_]).double()

    def _fit_maps(self, batches: Iterable[list[torch.Tensor]], n_images: int, timings: dict) -> None:
        start = time.perf_counter()
        total = outer = None
        for layer_maps in batches:
            if total is None:  # the first batch tells the channel count and the grid
                n_channels = sum(m.shape[1] for m in layer_maps)
                self.channel_index_ = random_channels(n_channels, self.n_features, self.seed)
                self.feature_shape_ = tuple(layer_maps[0].shape[-2:])
            x = self.embed(layer_maps)
            if total is None:
                total = torch.zeros(x.shape[1:], dtype=torch.float64)
                outer = torch.zeros(x.shape[1], x.shape[2], x.shape[2], dtype=torch.float64)
            total += x.sum(0)
            outer += outer_products(x)
        timings["features"] = time.perf_counter() - start
        start = time.perf_counter()
        self.mean_, self.precision_ = self._gaussians(total, outer, n_images)
        timings["gaussians"] = time.perf_counter() - start

    def _gaussians(self, total: torch.Tensor, outer: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(P, d)`` and inverse covariance ``(P, d, d)`` (P inverses, each d×d), float32."""
        mean, covariance = gaussian_from_sums(total, outer, n, self.epsilon)
        # Σ = L Lᵀ (Cholesky), so Σ⁻¹ = Wᵀ W with W = L⁻¹ from a triangular solve: stabler than a
        # general inverse, and on CPU much faster than torch.linalg.inv or cholesky_inverse.
        lower = torch.linalg.cholesky(covariance)
        identity = torch.eye(lower.shape[-1], dtype=lower.dtype).expand_as(lower)
        whitening = torch.linalg.solve_triangular(lower, identity, upper=False)
        precision = whitening.mT @ whitening
        # Entries too small for float32 would become subnormal (slow) numbers: they are zeros.
        precision = precision.masked_fill(precision.abs() < torch.finfo(torch.float32).tiny, 0.0)
        return mean.float(), precision.float()

    def _grid(self, x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
        return mahalanobis(x.float(), mean, precision).reshape(-1, *self.feature_shape_)

    def _score_maps(self, layer_maps: list[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        grid = self._grid(self.embed(layer_maps), self.mean_, self.precision_)
        image_scores = upsample_and_smooth(grid, self.image_size).max(axis=(1, 2))
        return image_scores.astype(np.float64), grid

    def _leave_one_out_scores(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        # Each image is scored by the Gaussians of the others: subtract its share of the sums.
        batches = self._extractor().iter_layer_maps(images, desc="calibrate")
        features = torch.cat([self.embed(maps) for maps in batches])  # (N, P, d)
        total, outer = features.sum(0), outer_products(features)
        maxima = []
        for x in features:
            mean, precision = self._gaussians(total - x, outer - outer_products(x[None]), len(features) - 1)
            maxima.append(upsample_and_smooth(self._grid(x[None], mean, precision), self.image_size)[0].max())
        maxima = np.asarray(maxima, dtype=np.float64)
        return maxima, maxima  # the image score *is* the map maximum


# --- methods that keep every training image: SPADE and 1-NN ----------------------------------
class _ImageMemory(AnomalyEstimator):
    """Shared by SPADE and NearestImage: keep each training image's global and positional features.

    Subclasses implement ``_score_against(test_global, test_positions, train_global,
    train_positions) -> (image_scores (B,), grids (B, P))``; leave-one-out calibration then scores
    each training image against the stored features of all the others (no new extraction).
    """

    def _fit_maps(self, batches: Iterable[list[torch.Tensor]], n_images: int, timings: dict) -> None:
        start = time.perf_counter()
        global_parts, position_parts = [], []
        for layer_maps in batches:
            features = aligned_features(layer_maps)
            self.feature_shape_ = tuple(features.shape[-2:])
            global_parts.append(global_features(layer_maps, self.layers))
            position_parts.append(positions_last(features))
        self.train_global_ = torch.cat(global_parts)  # (N, C_deep)
        self.train_positions_ = torch.cat(position_parts)  # (N, h*w, C)
        timings["features"] = time.perf_counter() - start

    def _score_maps(self, layer_maps: list[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        test_global = global_features(layer_maps, self.layers)
        test_positions = positions_last(aligned_features(layer_maps))
        scores, grids = self._score_against(test_global, test_positions, self.train_global_, self.train_positions_)
        return scores.numpy().astype(np.float64), grids.reshape(-1, *self.feature_shape_)

    def _leave_one_out_scores(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.train_global_)
        scores, maxima = [], []
        for i in range(n):
            others = torch.arange(n) != i
            score, grid = self._score_against(
                self.train_global_[i : i + 1], self.train_positions_[i : i + 1],
                self.train_global_[others], self.train_positions_[others],
            )
            scores.append(float(score[0]))
            maxima.append(upsample_and_smooth(grid.reshape(1, *self.feature_shape_), self.image_size)[0].max())
        return np.asarray(scores), np.asarray(maxima)

    def _score_against(self, test_global, test_positions, train_global, train_positions):
        raise NotImplementedError


class SPADE(_ImageMemory):
    """SPADE: image-level kNN to pick similar training images, then pixel-level kNN against them.

    Parameters
    ----------
    top_k_images : K, how many nearest training images (by global feature) to use (paper: 50;
        with fewer training images, all of them).
    k : how many nearest positions average into a position's anomaly score (paper: 1).
    backbone, layers, image_size, ... : as for :class:`~patchcore_kit.patchcore.PatchCore`.

    Image score: the mean Euclidean distance to the K nearest training images (the paper's score).
    Anomaly map: each test position's mean distance to its ``k`` nearest positions among *all*
    positions of those K images (the "feature pyramid correspondence").

    >>> model = SPADE(top_k_images=50, k=1).fit(train_paths)   # doctest: +SKIP
    """

    _param_names = ("backbone", "layers", "top_k_images", "k") + _SHARED

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[str] = DEFAULT_LAYERS,
        top_k_images: int = 50,
        k: int = 1,
        image_size: int | Sequence[int] = 224,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        seed: int = 0,
        threshold_quantile: float = 0.99,
        calibrate: bool = True,
        feature_cache: str | None = None,
        progress: bool = False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.top_k_images = top_k_images
        self.k = k
        self.image_size = image_size
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self.seed = seed  # nothing in SPADE is random; kept for a uniform constructor
        self.threshold_quantile = threshold_quantile
        self.calibrate = calibrate
        self.feature_cache = feature_cache
        self.progress = progress

    def _score_against(self, test_global, test_positions, train_global, train_positions):
        image_scores, nearest_i = spade_image_scores(test_global, train_global, self.top_k_images)
        grids = []
        for positions, chosen in zip(test_positions, nearest_i):
            gallery = train_positions[chosen].reshape(-1, train_positions.shape[-1])  # K*h*w positions
            grids.append(knn_distance(positions, gallery, self.k))
        return image_scores, torch.stack(grids)


class NearestImage(_ImageMemory):
    """1-NN: the distance to the nearest training image in the global (pooled) feature.

    The anomaly map is the per-position Euclidean distance between the test image's aligned
    features and those of that nearest training image *at the same position*: no search over
    positions, so it localises only as well as the two images are aligned.

    >>> NearestImage().fit(train_paths).decision_function(test_paths)   # doctest: +SKIP
    """

    _param_names = ("backbone", "layers") + _SHARED

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[str] = DEFAULT_LAYERS,
        image_size: int | Sequence[int] = 224,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        seed: int = 0,
        threshold_quantile: float = 0.99,
        calibrate: bool = True,
        feature_cache: str | None = None,
        progress: bool = False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.image_size = image_size
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self.seed = seed  # nothing here is random; kept for a uniform constructor
        self.threshold_quantile = threshold_quantile
        self.calibrate = calibrate
        self.feature_cache = feature_cache
        self.progress = progress

    def _score_against(self, test_global, test_positions, train_global, train_positions):
        nearest_d, nearest_i = torch.cdist(test_global, train_global).min(dim=1)
        grids = torch.linalg.norm(test_positions - train_positions[nearest_i], dim=2)  # (B, P)
        return nearest_d, grids
