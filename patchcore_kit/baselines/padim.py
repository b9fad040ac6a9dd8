"""PaDiM (Defard et al., 2020): one Gaussian per grid position, scored by Mahalanobis distance."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..base import EmbeddingScorer, upsample_and_smooth
from ..params import DEFAULT_BACKBONE
from .common import aligned_features, positions_last

#: The stages PaDiM's paper uses (ResNet naming; see ``backbones`` for EfficientNet-Lite).
PADIM_LAYERS = ("layer1", "layer2", "layer3")
#: PaDiM's channel subset on WRN50: 550 of layer1 + 2 + 3's 1,792 channels. Other widths keep this share.
PADIM_SHARE = (550, 1792)


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


class PaDiM(EmbeddingScorer):
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
        **shared,  # image_size, weights, ... progress: base.SHARED_PARAMETERS, keyword-only
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
                self.channel_index_ = random_channels(
                    n_channels, padim_feature_count(n_channels, self.n_features), self.seed
                )
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

    # The test images' aligned features (every channel, float32, channels first: (B, C, h*w)) do not
    # depend on the fit, only the channel subset does: a sweep computes them once
    # (EmbeddingScorer.embed_images) for all its cells. Channels first, because picking the subset is
    # then a copy of whole rows (3x faster than picking along the last axis). Kept in float32: the fit's
    # float64 features (``embed``) are these numbers exactly, and ``_grid`` scores in float32 anyway.
    def _embed_test(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        return aligned_features(layer_maps).flatten(2).float()

    def _score_block(self, embeddings: torch.Tensor) -> tuple[None, torch.Tensor]:
        positions = embeddings.index_select(1, self.channel_index_).transpose(1, 2).contiguous()  # (B, h*w, d)
        return None, self._grid(positions, self.mean_, self.precision_)  # image score: the map's maximum (_collect)

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
