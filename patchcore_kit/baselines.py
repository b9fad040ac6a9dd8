"""The methods PatchCore is compared with, on the same backbone and the same API.

Each baseline reads the stages its own paper sets, from the same backbone as PatchCore (the
PatchCore paper reimplements PaDiM and SPADE "with WideResNet50 for comparability"), and follows
the estimator contract of :mod:`patchcore_kit.base`: ``fit`` / ``decision_function`` /
``anomaly_map`` / ``predict``, higher = more anomalous. All stages come out of one feature cache,
which stores every stage of an image in one entry, so a sweep still runs the backbone once.

* :class:`PaDiM` (Defard et al., 2020): one Gaussian *per grid position*. Fit: the mean and the
  covariance (plus ``epsilon * I``) of a seeded random subset of the channels of layer1 + 2 + 3
  (WRN50: 550 of 1,792) at each position; score: the Mahalanobis distance of each test position
  to its position's Gaussian.
* :class:`SPADE` (Cohen & Hoshen, 2020): first find the ``top_k_images`` (50) training images
  nearest to the test image in the average-pooled final stage (layer4); the image score is the
  mean distance to them. Then every test position is compared with *all* positions of those
  images in the layer1 + 2 + 3 pixel features (``k``-NN): the anomaly map.
* :class:`NearestImage`: the plainest baseline, the distance to the single nearest training
  image in the same global feature as SPADE.

The "pixel" features of PaDiM and SPADE are the layer maps aligned to the first layer's grid and
concatenated, *without* PatchCore's local p×p aggregation; that aggregation is one of the things
PatchCore adds. ``layers=PatchCore's layers, global_layer=None`` (global = deepest of them) is the
"shared stages" setting of earlier versions of the kit, kept as the sweep's
``baseline_stages="shared"``.

>>> model = PaDiM(backbone="efficientnet_lite0").fit(train_paths)    # doctest: +SKIP
>>> model.decision_function(test_paths)                               # doctest: +SKIP
>>> SPADE(top_k_images=50, k=1).fit(train_paths).anomaly_map(test_paths)   # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import Iterable, Sequence

import numpy as np
import torch

from .backbones import STAGES
from .base import AnomalyEstimator, upsample_and_smooth
from .features import patch_embeddings
from .params import DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE

#: The stages each baseline's paper uses (ResNet naming; see ``backbones`` for EfficientNet-Lite).
PADIM_LAYERS = ("layer1", "layer2", "layer3")
SPADE_LAYERS = ("layer1", "layer2", "layer3")
SPADE_GLOBAL_LAYER = "layer4"  # the final stage, average-pooled
#: PaDiM's channel subset on WRN50: 550 of layer1 + 2 + 3's 1,792 channels. Other widths keep this share.
PADIM_SHARE = (550, 1792)
#: Bound on the distance block SPADE's pixel search holds at once (bytes): the search is chunked,
#: and exact, whatever the gallery's size.
SPADE_CHUNK_BYTES = 512 * 2**20


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


def padim_feature_count(n_channels: int, n_features: int | str | None = "auto") -> int:
    """How many channels PaDiM keeps out of ``n_channels``.

    ``"auto"`` keeps the share the PaDiM paper keeps on WideResNet-50, 550 of 1,792 (layer1 + 2 + 3),
    rounded: ``round(n_channels * 550 / 1792)``. That gives 550 for WRN50, 138 for ResNet18's 448
    (the PaDiM paper used 100 there: its ResNet18 share is smaller) and 54 for EfficientNet-Lite0's
    layer1 + 2 + 3 (24 + 40 + 112 = 176). An int is taken as it is (capped at ``n_channels``);
    ``None`` keeps every channel.
    """
    if n_features is None:
        return n_channels
    if isinstance(n_features, str):
        if n_features != "auto":
            raise ValueError(f"n_features must be an int, None or 'auto', got {n_features!r}")
        return max(1, round(n_channels * PADIM_SHARE[0] / PADIM_SHARE[1]))
    return min(int(n_features), n_channels)


def _distance_blocks(n_rows: int, row_bytes: int, max_bytes: int) -> int:
    """How many of ``n_rows`` rows of ``row_bytes`` each fit in ``max_bytes`` (at least one)."""
    return max(1, min(n_rows, max_bytes // max(row_bytes, 1)))


def knn_distance(
    queries: torch.Tensor, gallery: torch.Tensor, k: int = 1, max_bytes: int = SPADE_CHUNK_BYTES
) -> torch.Tensor:
    """Mean Euclidean distance of each query ``(Q, D)`` to its ``k`` nearest gallery rows: ``(Q,)``.

    SPADE searches a new gallery for every test image, so there is no index worth building: one
    fused ``addmm`` gives ``|g|² - 2 q·g`` for all pairs, and ``min`` (k=1) or ``topk`` picks the
    nearest before ``|q|²`` is added and the square root taken, on ``Q × k`` numbers only. The
    gallery is walked in blocks of at most ``max_bytes`` of distances, keeping the ``k`` best so far:
    memory stays bounded and the answer is the same as in one block.
    """
    k = min(k, len(gallery))
    step = _distance_blocks(len(gallery), 4 * len(queries), max_bytes)
    best = None
    for start in range(0, len(gallery), step):
        block = gallery[start : start + step]
        partial = torch.addmm((block * block).sum(1), queries, block.T, beta=1, alpha=-2)
        if best is not None:
            partial = torch.cat([best, partial], dim=1)
        if k == 1:
            best = partial.min(dim=1, keepdim=True).values
        else:  # the first blocks may hold fewer than k rows
            best = torch.topk(partial, min(k, partial.shape[1]), dim=1, largest=False).values
    squared = best + (queries * queries).sum(1, keepdim=True)
    return squared.clamp_min_(0.0).sqrt_().mean(dim=1)


def nearest_in_each_image(
    queries: torch.Tensor, train_positions: torch.Tensor, index: Sequence[int] | torch.Tensor | None = None,
    max_bytes: int = SPADE_CHUNK_BYTES,
) -> torch.Tensor:
    """Distance of every query position to the nearest position of each training image.

    ``queries`` ``(B, P, D)`` (test images' positions), ``train_positions`` ``(N, P', D)``, ``index``
    the training images to compare with (default: all). Returns ``(B, n, P)``: for each test image,
    each chosen training image and each test position, the Euclidean distance to that image's
    nearest position. SPADE's k=1 anomaly map against a set of images is the minimum of these over
    the set, so one such table serves every training set drawn from the same images (the sweep's
    shot counts and seeds). Computed in blocks of at most ``max_bytes`` of distances, exactly.
    """
    index = torch.arange(len(train_positions)) if index is None else torch.as_tensor(index, dtype=torch.long)
    b, p, d = queries.shape
    flat = queries.reshape(-1, d)
    query_norms = (flat * flat).sum(1, keepdim=True)
    p_train = train_positions.shape[1]
    # Blocks of training images, and of query rows when one image against all queries is too much.
    rows = _distance_blocks(len(flat), 4 * p_train, max_bytes)
    images = _distance_blocks(len(index), 4 * p_train * rows, max_bytes)
    out = torch.empty(len(flat), len(index))
    for first in range(0, len(index), images):
        chosen = index[first : first + images]
        gallery = train_positions[chosen].reshape(-1, d)
        gallery_norms = (gallery * gallery).sum(1)
        for row in range(0, len(flat), rows):
            partial = torch.addmm(gallery_norms, flat[row : row + rows], gallery.T, beta=1, alpha=-2)
            out[row : row + rows, first : first + len(chosen)] = partial.view(-1, len(chosen), p_train).min(dim=2).values
    out = (out + query_norms).clamp_min_(0.0).sqrt_()
    return out.view(b, p, len(index)).permute(0, 2, 1)


def nearest_images(test_global: torch.Tensor, train_global: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances ``(B, K)`` and indices ``(B, K)`` of the ``K = min(top_k, N)`` nearest training images."""
    # Without the matrix-product shortcut cdist takes for larger inputs, each distance is the same
    # whatever else is in the batch: the chosen images never depend on how the test set is batched.
    image_distances = torch.cdist(test_global, train_global, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.topk(image_distances, min(top_k, len(train_global)), dim=1, largest=False)


def spade_image_scores(test_global: torch.Tensor, train_global: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SPADE's first stage: mean distance of each test image ``(B, D)`` to its ``k`` nearest training images.

    Returns the image scores ``(B,)`` and the indices ``(B, k)`` of those training images, nearest
    first (the second stage compares pixels with these images only); :func:`nearest_images` finds them.
    """
    nearest_d, nearest_i = nearest_images(test_global, train_global, k)
    return nearest_d.mean(dim=1), nearest_i


# --- PaDiM ------------------------------------------------------------------------------------
class PaDiM(AnomalyEstimator):
    """PaDiM: a multivariate Gaussian per patch position, scored by Mahalanobis distance.

    Parameters
    ----------
    backbone, weights : as for :class:`~patchcore_kit.patchcore.PatchCore` (same cache).
    layers : the stages concatenated per position (paper: layer1 + 2 + 3).
    n_features : size of the seeded random channel subset. ``"auto"`` (default) keeps the paper's
        WRN50 share, ``round(C * 550 / 1792)`` of the ``C`` channels of ``layers``: 550 for WRN50,
        54 for EfficientNet-Lite0 (176 channels), 138 for ResNet18 (448; the PaDiM paper used 100
        there). An int keeps that many; None keeps all. See :func:`padim_feature_count`.
    epsilon : ``epsilon * I`` is added to every covariance (paper: 0.01); it is what makes the
        model work from a single training image.
    image_size, device, batch_size, seed, threshold_quantile, calibrate, feature_cache, progress :
        as for PatchCore; ``seed`` picks the channel subset.

    The image score is the maximum of the upsampled, σ=4-smoothed anomaly map, as in the PaDiM
    paper (the maximum of the raw grid would let one noisy position decide).

    >>> model = PaDiM(n_features=100, epsilon=0.01).fit(train_paths)   # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = PADIM_LAYERS,
        n_features: int | str | None = "auto",
        epsilon: float = 0.01,
        *,  # below: what every estimator of the kit shares (see base.AnomalyEstimator)
        image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, weights: str | None = None, device: str = "cpu",
        batch_size: int = 8, seed: int = 0, threshold_quantile: float = 0.99, calibrate: bool = True,
        feature_cache: str | None = None, progress: bool = False,
    ):
        self._store(locals())

    def embed(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        """Stage maps -> the chosen channels per position ``(B, h*w, d)``, in float64 for the sums."""
        return positions_last(aligned_features(layer_maps)[:, self.channel_index_]).double()

    def _fit_maps(self, batches: Iterable[list[torch.Tensor]], n_images: int, timings: dict) -> None:
        start = time.perf_counter()
        total = outer = None
        for layer_maps in batches:
            if total is None:  # the first batch tells the channel count and the grid
                n_channels = sum(m.shape[1] for m in layer_maps)
                self.channel_index_ = random_channels(n_channels, padim_feature_count(n_channels, self.n_features), self.seed)
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

    def _extract_layers(self) -> tuple[str, ...]:
        """The pixel stages, then the global one when it is not among them (one extraction for both)."""
        extra = () if self.global_layer is None or self.global_layer in self.layers else (self.global_layer,)
        return tuple(self.layers) + extra

    def features(self, layer_maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps of ``_extract_layers()`` -> global features ``(B, C_g)`` and positions ``(B, h*w, C)``."""
        by_name = dict(zip(self._extract_layers(), layer_maps))
        pixel = [by_name[layer] for layer in self.layers]
        if self.global_layer is None:  # the "shared stages" setting: pool the deepest pixel stage
            pooled = global_features(pixel, self.layers)
        else:
            pooled = by_name[self.global_layer].float().mean(dim=(2, 3))
        return pooled, positions_last(aligned_features(pixel))

    def _fit_maps(self, batches: Iterable[list[torch.Tensor]], n_images: int, timings: dict) -> None:
        start = time.perf_counter()
        global_parts, position_parts = [], []
        for layer_maps in batches:
            pooled, positions = self.features(layer_maps)
            self.feature_shape_ = tuple(layer_maps[self._extract_layers().index(self.layers[0])].shape[-2:])
            global_parts.append(pooled)
            position_parts.append(positions)
        self.train_global_ = torch.cat(global_parts)  # (N, C_global)
        self.train_positions_ = torch.cat(position_parts)  # (N, h*w, C)
        timings["features"] = time.perf_counter() - start

    def _score_maps(self, layer_maps: list[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        test_global, test_positions = self.features(layer_maps)
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
    layers : the pixel-feature stages, aligned and concatenated (paper: layer1 + 2 + 3).
    global_layer : the stage whose average pool is the image-level feature (paper: the final
        stage, ``"layer4"``); None pools the deepest of ``layers`` (the kit's older "shared
        stages" setting, which needs no stage PatchCore does not read).
    backbone, image_size, ... : as for :class:`~patchcore_kit.patchcore.PatchCore`.

    Image score: the mean Euclidean distance to the K nearest training images (the paper's score).
    Anomaly map: each test position's mean distance to its ``k`` nearest positions among *all*
    positions of those K images (the "feature pyramid correspondence"). At 224 px layer1 is a
    56 × 56 grid, so one test image meets up to 50 × 3,136 gallery rows: the search runs in blocks
    of at most ``SPADE_CHUNK_BYTES`` of distances (exact). With k = 1 it is the minimum over the K
    images of the per-image nearest distance (:func:`nearest_in_each_image`), which the sweep
    shares between its shot counts and seeds.

    >>> model = SPADE(top_k_images=50, k=1).fit(train_paths)   # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = SPADE_LAYERS,
        global_layer: str | None = SPADE_GLOBAL_LAYER,
        top_k_images: int = 50,
        k: int = 1,
        *,  # below: what every estimator of the kit shares (see base.AnomalyEstimator)
        image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, weights: str | None = None, device: str = "cpu",
        batch_size: int = 8, seed: int = 0, threshold_quantile: float = 0.99, calibrate: bool = True,
        feature_cache: str | None = None, progress: bool = False,
    ):
        self._store(locals())

    def _score_against(self, test_global, test_positions, train_global, train_positions):
        image_scores, nearest_i = spade_image_scores(test_global, train_global, self.top_k_images)
        grids = []
        for positions, chosen in zip(test_positions, nearest_i):
            if self.k == 1:
                per_image = nearest_in_each_image(positions[None], train_positions, chosen)[0]  # (K, P)
                grids.append(per_image.min(dim=0).values)
            else:
                gallery = train_positions[chosen].reshape(-1, train_positions.shape[-1])  # K*h*w positions
                grids.append(knn_distance(positions, gallery, self.k))
        return image_scores, torch.stack(grids)


class NearestImage(_ImageMemory):
    """1-NN: the distance to the nearest training image in the global (pooled) feature.

    The anomaly map is the per-position Euclidean distance between the test image's aligned
    features and those of that nearest training image *at the same position*: no search over
    positions, so it localises only as well as the two images are aligned. ``layers`` and
    ``global_layer`` as for :class:`SPADE` (same defaults).

    >>> NearestImage().fit(train_paths).decision_function(test_paths)   # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = SPADE_LAYERS,
        global_layer: str | None = SPADE_GLOBAL_LAYER,
        *,  # below: what every estimator of the kit shares (see base.AnomalyEstimator)
        image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, weights: str | None = None, device: str = "cpu",
        batch_size: int = 8, seed: int = 0, threshold_quantile: float = 0.99, calibrate: bool = True,
        feature_cache: str | None = None, progress: bool = False,
    ):
        self._store(locals())

    def _score_against(self, test_global, test_positions, train_global, train_positions):
        nearest_d, nearest_i = nearest_images(test_global, train_global, 1)
        nearest_d, nearest_i = nearest_d[:, 0], nearest_i[:, 0]
        grids = torch.linalg.norm(test_positions - train_positions[nearest_i], dim=2)  # (B, P)
        return nearest_d, grids
