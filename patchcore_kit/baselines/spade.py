"""The methods that keep every training image: SPADE (Cohen & Hoshen, 2020) and 1-NN."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..base import AnomalyEstimator, upsample_and_smooth
from ..params import DEFAULT_BACKBONE
from .common import (
    aligned_features,
    global_features,
    knn_distance,
    nearest_images,
    nearest_in_each_image,
    positions_last,
)

#: The stages SPADE's paper uses (ResNet naming; see ``backbones`` for EfficientNet-Lite).
SPADE_LAYERS = ("layer1", "layer2", "layer3")
SPADE_GLOBAL_LAYER = "layer4"  # the final stage, average-pooled
#: How SPADE matches pixels: "aligned" (the kit: layers resized to the first one's grid and
#: concatenated, one search) or "per_layer" (SPADE's reference code: one search per layer at its
#: own grid, the distance maps resized to the first grid and averaged).
PIXEL_MATCHING = ("aligned", "per_layer")


def cat_positions(parts: list) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Concatenate batches of positions along the image axis (per layer for "per_layer")."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return tuple(torch.cat(layer) for layer in zip(*parts))


def take_images(positions, index) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``positions[index]`` on the image axis, for one tensor or a tuple of per-layer tensors."""
    if isinstance(positions, torch.Tensor):
        return positions[index]
    return tuple(layer[index] for layer in positions)


def average_layer_grids(minima: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``(B, Σ h_l w_l)`` per-layer distances -> ``(B, h_0, w_0)``: each layer's grid resized
    (bilinear) to the first layer's and the layers averaged. One layer: just the reshape."""
    parts = minima.split([h * w for h, w in shapes], dim=1)
    grids = [
        part.reshape(-1, h, w)
        if (h, w) == tuple(shapes[0])
        else F.interpolate(part.reshape(-1, 1, h, w), size=tuple(shapes[0]), mode="bilinear", align_corners=False)[:, 0]
        for part, (h, w) in zip(parts, shapes)
    ]
    return grids[0] if len(grids) == 1 else torch.stack(grids).mean(dim=0)


def spade_image_scores(
    test_global: torch.Tensor, train_global: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPADE's first stage: mean distance of each test image ``(B, D)`` to its ``k`` nearest training images.

    Returns the image scores ``(B,)`` and the indices ``(B, k)`` of those training images, nearest
    first (the second stage compares pixels with these images only); :func:`nearest_images` finds them.
    """
    nearest_d, nearest_i = nearest_images(test_global, train_global, k)
    return nearest_d.mean(dim=1), nearest_i


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
        self.train_positions_ = cat_positions(position_parts)  # (N, h*w, C), or one per layer
        self.pixel_shapes_ = self.pixel_shapes(layer_maps)
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
                self.train_global_[i : i + 1],
                take_images(self.train_positions_, slice(i, i + 1)),
                self.train_global_[others],
                take_images(self.train_positions_, others),
            )
            scores.append(float(score[0]))
            maxima.append(upsample_and_smooth(grid.reshape(1, *self.feature_shape_), self.image_size)[0].max())
        return np.asarray(scores), np.asarray(maxima)

    def pixel_shapes(self, layer_maps: list[torch.Tensor]) -> list[tuple[int, int]]:
        """The grid(s) the positions come on: the first layer's (aligned), or one per layer."""
        by_name = dict(zip(self._extract_layers(), layer_maps))
        matched = self.layers if getattr(self, "pixel_matching", "aligned") == "per_layer" else self.layers[:1]
        return [tuple(by_name[layer].shape[-2:]) for layer in matched]

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
    pixel_matching : ``"aligned"`` (default): the layers resized to the first layer's grid and
        concatenated, one search per position (the kit's reading of the paper's text);
        ``"per_layer"``: as SPADE's reference code, each layer searched at its own grid (layer1
        56², layer2 28², layer3 14² at 224 px) and the distance grids resized to the first
        layer's grid and averaged, about 6x fewer operations on EfficientNet-Lite0's stages.
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
        pixel_matching: str = "aligned",
        **shared,  # image_size, weights, ... progress: base.SHARED_PARAMETERS, keyword-only
    ):
        self._store(locals())

    def features(self, layer_maps: list[torch.Tensor]):
        """Global features ``(B, C_g)`` and positions: ``(B, h*w, C)`` aligned, or one
        ``(B, h_l*w_l, C_l)`` per layer with ``pixel_matching="per_layer"``."""
        if self.pixel_matching == "aligned":
            return super().features(layer_maps)
        by_name = dict(zip(self._extract_layers(), layer_maps))
        pixel = [by_name[layer] for layer in self.layers]
        pooled = (
            global_features(pixel, self.layers)
            if self.global_layer is None
            else by_name[self.global_layer].float().mean(dim=(2, 3))
        )
        return pooled, tuple(positions_last(m.float()) for m in pixel)

    def pair_minima(self, test_positions, train_positions, index=None, test_norms=None) -> torch.Tensor:
        """``(B, n, P)``: each test position's distance to the nearest position of each training
        image (``index``: which; default all), per layer side by side with "per_layer" (P = Σ P_l).
        With k = 1 the anomaly grid against a set of images is :meth:`grid_from_minima` of the
        minimum of these over the set: what the sweep's pair table stores and shares. ``test_norms``:
        the test positions' ``squared_norms`` (per layer with "per_layer"), if already computed."""
        if isinstance(test_positions, torch.Tensor):
            return nearest_in_each_image(test_positions, train_positions, index, query_norms=test_norms)
        norms = [None] * len(test_positions) if test_norms is None else test_norms
        return torch.cat(
            [
                nearest_in_each_image(t, g, index, query_norms=n)
                for t, g, n in zip(test_positions, train_positions, norms)
            ],
            dim=2,
        )

    def grid_from_minima(self, minima: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """``(B, P)`` per-position distances -> ``(B, h, w)`` anomaly grids on the first layer's grid."""
        return average_layer_grids(minima, shapes)

    def _score_against(self, test_global, test_positions, train_global, train_positions):
        if self.pixel_matching not in PIXEL_MATCHING:
            raise ValueError(f"pixel_matching must be one of {PIXEL_MATCHING}, got {self.pixel_matching!r}")
        image_scores, nearest_i = spade_image_scores(test_global, train_global, self.top_k_images)
        distances = []
        for t, chosen in enumerate(nearest_i):
            positions = take_images(test_positions, slice(t, t + 1))
            if self.k == 1:
                distances.append(self.pair_minima(positions, train_positions, chosen)[0].min(dim=0).values)
            else:
                per_layer = [positions] if isinstance(positions, torch.Tensor) else positions
                galleries = [train_positions] if isinstance(train_positions, torch.Tensor) else train_positions
                distances.append(
                    torch.cat(
                        [
                            knn_distance(
                                query[0], gallery[chosen].reshape(-1, gallery.shape[-1]), self.k
                            )  # K*h*w positions
                            for query, gallery in zip(per_layer, galleries)
                        ]
                    )
                )
        grids = self.grid_from_minima(torch.stack(distances), self.pixel_shapes_)
        return image_scores, grids.flatten(1)


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
        **shared,  # image_size, weights, ... progress: base.SHARED_PARAMETERS, keyword-only
    ):
        self._store(locals())

    def _score_against(self, test_global, test_positions, train_global, train_positions):
        nearest_d, nearest_i = nearest_images(test_global, train_global, 1)
        nearest_d, nearest_i = nearest_d[:, 0], nearest_i[:, 0]
        grids = torch.linalg.norm(test_positions - train_positions[nearest_i], dim=2)  # (B, P)
        return nearest_d, grids
