"""From backbone feature maps to PatchCore's patch embeddings.

The pure functions below are the whole recipe of the paper's Section 3.1:

1. :func:`aggregate_local` — each position's feature is averaged over its p×p neighbourhood
   (p=3, stride 1), so a patch "sees" a little more context without losing resolution; or, as
   the official code does, :func:`unfold_neighbourhood` keeps the whole neighbourhood.
2. :func:`align_to` — deeper, coarser maps are bilinearly resized to the first layer's grid.
3. concatenate the layers along channels, and optionally :func:`reduce_channels` to a target
   dimension (the paper uses 1024 for WideResNet50) by adaptive average pooling over channels.

The stage maps come from :class:`~patchcore_kit.extractor.FeatureExtractor` (the backbone, batched,
with the on-disk :mod:`~patchcore_kit.feature_cache`); it and
:func:`~patchcore_kit.weights.weights_key` are importable from here too, as before.

>>> maps = [torch.randn(2, 40, 28, 28), torch.randn(2, 112, 14, 14)]
>>> patch_embeddings(maps, patch_size=3).shape
torch.Size([2, 152, 28, 28])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The extractor and the weights' names used to live here: importable from here as before.
from .extractor import FeatureExtractor
from .weights import weights_key

__all__ = [
    "AGGREGATIONS",
    "BORDERS",
    "OFFICIAL_DIM",
    "FeatureExtractor",
    "aggregate_local",
    "align_to",
    "border_ring",
    "flatten_patches",
    "patch_embeddings",
    "reduce_channels",
    "top_patch_on_border",
    "unfold_neighbourhood",
    "weights_key",
]

#: How a patch feature is built from its p×p neighbourhood (see :func:`patch_embeddings`).
AGGREGATIONS = ("mean", "unfold")
#: What stands beyond the feature map's edge when a border position's neighbourhood is built.
BORDERS = ("zeros", "reflect", "valid")
#: The official code's default channel sizes (``pretrain_embed_dimension`` and ``target_embed_dimension``).
OFFICIAL_DIM = 1024


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _pad(feature_map: torch.Tensor, radius: int, border: str) -> torch.Tensor:
    """Pad ``radius`` positions on every side: zeros, or the map mirrored at its edge."""
    if border == "zeros":
        return F.pad(feature_map, (radius,) * 4)
    # Mirroring needs a row beyond the edge row; a map thinner than that repeats its edge instead.
    mode = "reflect" if min(feature_map.shape[-2:]) > radius else "replicate"
    return F.pad(feature_map, (radius,) * 4, mode=mode)


def aggregate_local(feature_map: torch.Tensor, patch_size: int = 3, border: str = "zeros") -> torch.Tensor:
    """Average every position over its ``patch_size``×``patch_size`` neighbourhood (stride 1).

    ``border`` says what a border position averages (paper Eq. 1 leaves it open):

    * ``"valid"`` — only the neighbours that exist (4 of 9 in a corner). A border patch is then
      an average of fewer, differently placed features: it is built unlike an inner patch.
    * ``"zeros"`` — zero padding counted in the mean, as the official code's zero-padded unfold
      does: every patch averages 9 values, the missing ones as zeros.
    * ``"reflect"`` — the map mirrored at its edge: 9 real feature values everywhere.

    >>> aggregate_local(torch.ones(1, 1, 3, 3), 3, border="zeros")[0, 0, 0, 0].item()  # 4 of 9 exist
    0.4444444477558136
    """
    _check_choice("border", border, BORDERS)
    if patch_size <= 1:
        return feature_map
    if patch_size % 2 == 0:  # an even window has no centre: the grid would grow by one and shift
        raise ValueError(f"patch_size must be odd (a window centred on each position), got {patch_size}")
    radius = patch_size // 2
    if border == "valid":
        return F.avg_pool2d(feature_map, patch_size, stride=1, padding=radius, count_include_pad=False)
    return F.avg_pool2d(_pad(feature_map, radius, border), patch_size, stride=1)


def unfold_neighbourhood(feature_map: torch.Tensor, patch_size: int = 3, border: str = "zeros") -> torch.Tensor:
    """Each position's whole ``p×p×C`` neighbourhood as one vector: ``(B, C·p², H, W)``.

    The official code's ``PatchMaker.patchify`` (``torch.nn.Unfold`` with zero padding). Channel
    ``c·p² + i·p + j`` holds channel ``c`` of the neighbour at row offset ``i``, column offset ``j``:
    unlike the mean, the vector keeps *where* in the neighbourhood each feature was.
    """
    _check_choice("border", border, BORDERS)
    if border == "valid":
        raise ValueError(
            "border='valid' leaves neighbours out of a mean; unfold keeps every neighbour's slot, "
            "so use border='zeros' (the official code) or 'reflect'"
        )
    if patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd (a window centred on each position), got {patch_size}")
    b, c, h, w = feature_map.shape
    if patch_size <= 1:
        return feature_map
    padded = _pad(feature_map, patch_size // 2, border)
    return F.unfold(padded, patch_size).reshape(b, c * patch_size * patch_size, h, w)


def align_to(feature_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a (coarser) map to ``size = (H, W)``."""
    if tuple(feature_map.shape[-2:]) == tuple(size):
        return feature_map
    return F.interpolate(feature_map, size=size, mode="bilinear", align_corners=False)


def reduce_channels(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Adaptive average pooling over the channel axis of ``(B, C, H, W)`` down (or up) to ``dim``."""
    b, c, h, w = features.shape
    if c == dim:
        return features
    flat = features.permute(0, 2, 3, 1).reshape(-1, 1, c)
    pooled = F.adaptive_avg_pool1d(flat, dim)
    return pooled.reshape(b, h, w, dim).permute(0, 3, 1, 2)


def patch_embeddings(
    layer_maps: Sequence[torch.Tensor],
    patch_size: int = 3,
    target_dim: int | None = None,
    aggregation: str = "mean",
    border: str = "zeros",
    pretrain_dim: int | None = None,
) -> torch.Tensor:
    """PatchCore's locally aware patch features ``(B, D, H, W)`` on the first layer's grid.

    Two recipes, both PatchCore's (they differ where the paper's text and the official code differ):

    * ``aggregation="mean"`` (the paper, Eq. 1): each layer's p×p neighbourhood is *averaged*
      (:func:`aggregate_local`), aligned to the first layer's grid and concatenated; D is the sum of
      the layers' channels. With ``target_dim`` each layer is first pooled to an equal share of it.
    * ``aggregation="unfold"`` (the official code): each layer's p×p×C neighbourhood is *kept whole*
      (:func:`unfold_neighbourhood`), aligned, adaptive-average-pooled to ``pretrain_dim`` per layer
      (default 1024), and the layers' vectors, concatenated, pooled to ``target_dim`` (default 1024).
      For WRN50 (512·9 and 1024·9 values per layer) the pooling averages neighbouring channels; for a
      narrow backbone (EfficientNet-Lite0: 40·9 = 360 and 112·9 = 1008) it *stretches* each vector to
      1024, so the whole neighbourhood survives with its positions.
    """
    _check_choice("aggregation", aggregation, AGGREGATIONS)
    grid = tuple(layer_maps[0].shape[-2:])
    if aggregation == "unfold":
        b = layer_maps[0].shape[0]
        pooled = []
        for fmap in layer_maps:
            neighbourhoods = align_to(unfold_neighbourhood(fmap.float(), patch_size, border), grid)
            rows = neighbourhoods.permute(0, 2, 3, 1).reshape(-1, 1, neighbourhoods.shape[1])
            pooled.append(F.adaptive_avg_pool1d(rows, pretrain_dim or OFFICIAL_DIM))
        joined = F.adaptive_avg_pool1d(torch.cat(pooled, dim=2), target_dim or OFFICIAL_DIM)
        return joined.reshape(b, *grid, -1).permute(0, 3, 1, 2)
    parts = []
    for index, fmap in enumerate(layer_maps):
        part = align_to(aggregate_local(fmap.float(), patch_size, border), grid)
        if target_dim is not None:
            share = target_dim // len(layer_maps) + (index < target_dim % len(layer_maps))
            part = reduce_channels(part, share)
        parts.append(part)
    return torch.cat(parts, dim=1)


def border_ring(grid: tuple[int, int], width: int = 1) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of the positions within ``width`` of the grid's edge."""
    h, w = grid
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[width : h - width, width : w - width] = False
    return ring


def top_patch_on_border(patch_scores: torch.Tensor, width: int = 1) -> float:
    """Share of images ``(N, H, W)`` whose highest-scoring patch lies on the grid's outer ring.

    A diagnostic for border handling: the ring of a 28×28 grid is 14 % of its patches, so a share far
    above that on nominal images means border patches are built unlike inner ones.
    """
    n, h, w = patch_scores.shape
    top = patch_scores.reshape(n, -1).argmax(dim=1)
    return float(border_ring((h, w), width).reshape(-1)[top].float().mean())


def flatten_patches(embeddings: torch.Tensor) -> torch.Tensor:
    """``(B, D, H, W)`` -> ``(B*H*W, D)``: one row per patch, image by image, row-major."""
    return embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
