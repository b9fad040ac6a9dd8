"""Kernels PaDiM, SPADE and 1-NN share: aligned pixel features, pooled global features, and the
exact, block-wise nearest-neighbour searches SPADE's maps are made of.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backbones import STAGES
from ..features import patch_embeddings
from ..threads import map_blocks

#: Bound on the distance block SPADE's pixel search holds at once (bytes): the search is chunked,
#: and exact, whatever the gallery's size. Small on purpose: at SPADE's 176 channels the product is
#: cheap next to writing and reducing its result, so a block that is reduced while it is still in
#: the cache runs about twice as fast as one of 512 MiB (docs/benchmarks.md, "SPADE's pixel search").
SPADE_CHUNK_BYTES = 8 * 2**20


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
            best = partial.amin(dim=1, keepdim=True)  # amin: no indices to write
        else:  # the first blocks may hold fewer than k rows
            best = torch.topk(partial, min(k, partial.shape[1]), dim=1, largest=False).values
    squared = best + (queries * queries).sum(1, keepdim=True)
    return squared.clamp_min_(0.0).sqrt_().mean(dim=1)


def squared_norms(positions: torch.Tensor) -> torch.Tensor:
    """``(B, P, D)`` -> ``(B, P, 1)``: each position's squared length (the ``|q|²`` of a distance)."""
    return (positions * positions).sum(-1, keepdim=True)


def nearest_in_each_image(
    queries: torch.Tensor,
    train_positions: torch.Tensor,
    index: Sequence[int] | torch.Tensor | None = None,
    max_bytes: int = SPADE_CHUNK_BYTES,
    query_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distance of every query position to the nearest position of each training image.

    ``queries`` ``(B, P, D)`` (test images' positions), ``train_positions`` ``(N, P', D)``, ``index``
    the training images to compare with (default: all). Returns ``(B, n, P)``: for each test image,
    each chosen training image and each test position, the Euclidean distance to that image's
    nearest position. SPADE's k=1 anomaly map against a set of images is the minimum of these over
    the set, so one such table serves every training set drawn from the same images (the sweep's
    shot counts and seeds). Computed in blocks of at most ``max_bytes`` of distances, exactly.
    ``query_norms`` ``(B, P, 1)``: the queries' :func:`squared_norms`, when the caller keeps them
    (the sweep's pair table sends the same test images for every training image).
    """
    index = torch.arange(len(train_positions)) if index is None else torch.as_tensor(index, dtype=torch.long)
    b, p, d = queries.shape
    flat = queries.reshape(-1, d)
    query_norms = (squared_norms(queries) if query_norms is None else query_norms).reshape(-1, 1)
    p_train = train_positions.shape[1]
    # Blocks of training images, and of query rows when one image against all queries is too much.
    rows = _distance_blocks(len(flat), 4 * p_train, max_bytes)
    images = _distance_blocks(len(index), 4 * p_train * rows, max_bytes)
    out = torch.empty(len(flat), len(index))
    galleries = {}
    for first in range(0, len(index), images):
        gallery = train_positions[index[first : first + images]].reshape(-1, d)
        galleries[first] = (gallery, (gallery * gallery).sum(1))

    def block(where: tuple[int, int]) -> None:
        first, row = where
        gallery, gallery_norms = galleries[first]
        partial = torch.addmm(gallery_norms, flat[row : row + rows], gallery.T, beta=1, alpha=-2)
        n_images = len(gallery) // p_train
        out[row : row + rows, first : first + n_images] = partial.view(-1, n_images, p_train).amin(dim=2)

    # Independent blocks, each single-threaded, in a pool of threads (see threads.py: on a busy
    # machine torch's own threads wait on each other at every one of these small products).
    map_blocks(block, [(first, row) for first in galleries for row in range(0, len(flat), rows)])
    out = (out + query_norms).clamp_min_(0.0).sqrt_()
    return out.view(b, p, len(index)).permute(0, 2, 1)


def nearest_images(
    test_global: torch.Tensor, train_global: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances ``(B, K)`` and indices ``(B, K)`` of the ``K = min(top_k, N)`` nearest training images."""
    # Without the matrix-product shortcut cdist takes for larger inputs, each distance is the same
    # whatever else is in the batch: the chosen images never depend on how the test set is batched.
    image_distances = torch.cdist(test_global, train_global, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.topk(image_distances, min(top_k, len(train_global)), dim=1, largest=False)
