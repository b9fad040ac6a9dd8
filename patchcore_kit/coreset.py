"""Coreset subsampling of the memory bank: greedy k-center (paper Algorithm 1), random, none.

A memory bank of every training patch is large (one MVTec category at 224 px: ~160k patches)
and very redundant. Greedy k-center picks the patch farthest from everything chosen so far, again
and again, so the chosen subset *covers* the bank: every patch lies within the covering radius of
some chosen one. Distances are taken on a seeded random projection (128 dims by default, as in
the paper), which keeps them almost unchanged (Johnson–Lindenstrauss) and makes each step cheap.

Two implementations make exactly the same choices:

* :func:`greedy_coreset_plain` is the textbook loop (what the reference code does): after each
  pick, recompute the distance of *every* point to the new centre. Read this one first.
* :func:`greedy_coreset` (the one the kit uses) skips points that provably cannot move closer.
  Every point belongs to its nearest centre's cluster; a cluster ``j`` of radius ``r_j`` cannot
  contain a point that the new centre ``c`` would capture when ``d(c, c_j) >= 2 r_j`` (triangle
  inequality). And because ``c`` was the farthest point, ``d(c, c_j) >= r_max`` for every centre,
  so only clusters with ``r_j > r_max / 2`` need even that check. Late in the run almost every
  cluster is skipped, and the work per step falls from N points to a few hundred.

>>> x = torch.randn(1000, 64)
>>> picks = greedy_coreset(x, 50, seed=0)
>>> bool((picks == greedy_coreset_plain(x, 50, seed=0)).all())
True
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

# Relative slack on the pruning test so floating-point rounding can never skip a point that the
# plain loop would update.
_SAFETY = 1e-5


def random_projection(features: torch.Tensor, dim: int | None = 128, seed: int = 0) -> torch.Tensor:
    """Project ``(N, D)`` features to ``dim`` dimensions with a seeded Gaussian matrix.

    ``dim=None`` or ``dim >= D`` returns the features unchanged (as float32).
    """
    features = torch.as_tensor(features).float()
    if dim is None or dim >= features.shape[1]:
        return features
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator) / dim**0.5
    return features @ matrix.to(features.device)


def _start_index(n_points: int, seed: int, start: int | None) -> int:
    if start is not None:
        if not 0 <= start < n_points:
            raise ValueError(f"start index {start} outside 0..{n_points - 1}")
        return int(start)
    return int(np.random.default_rng(seed).integers(n_points))


def _check_size(n: int, n_points: int) -> int:
    if n < 1:
        raise ValueError(f"coreset size must be at least 1, got {n}")
    return min(int(n), n_points)


def greedy_coreset_plain(
    features: torch.Tensor, n: int, projection_dim: int | None = 128, seed: int = 0, start: int | None = None
) -> np.ndarray:
    """The plain greedy k-center loop; ``n`` indices, the start point first."""
    x = random_projection(features, projection_dim, seed)
    n = _check_size(n, len(x))
    chosen = [_start_index(len(x), seed, start)]
    min_dist = torch.linalg.norm(x - x[chosen[0]], dim=1)
    for _ in range(n - 1):
        index = int(torch.argmax(min_dist))
        chosen.append(index)
        min_dist = torch.minimum(min_dist, torch.linalg.norm(x - x[index], dim=1))
    return np.asarray(chosen, dtype=np.int64)


def greedy_coreset(
    features: torch.Tensor,
    n: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    start: int | None = None,
    progress: bool = False,
    return_radii: bool = False,
):
    """Greedy k-center with triangle-inequality pruning: the plain loop's choices, far less work.

    Returns ``n`` indices into ``features`` (the start point first). With ``return_radii`` also the
    covering radius after each pick (``radii[i]`` = max distance of any point to the first ``i+1``
    centres), which is what the paper's coverage argument is about.
    """
    x = random_projection(features, projection_dim, seed)
    n = _check_size(n, len(x))
    device = x.device
    first = _start_index(len(x), seed, start)

    centres = torch.empty(n, x.shape[1], dtype=x.dtype, device=device)
    radius = torch.zeros(n, dtype=x.dtype, device=device)  # per cluster: max distance to its centre
    min_dist = torch.linalg.norm(x - x[first], dim=1)  # each point's distance to its nearest centre
    owner = torch.zeros(len(x), dtype=torch.long, device=device)  # which centre that is
    centres[0], radius[0] = x[first], min_dist.max()
    chosen = [first]
    radii = [float(radius[0])]

    for k in tqdm(range(1, n), desc="coreset", disable=not progress, leave=False):
        index = int(torch.argmax(min_dist))
        r_max = min_dist[index]
        centre = x[index]
        chosen.append(index)
        centres[k] = centre

        # Clusters that could lose points: r_j > r_max/2 and d(c, c_j) < 2 r_j.
        candidates = torch.nonzero(radius[:k] * 2 > r_max * (1 - _SAFETY)).squeeze(1)
        centre_dist = torch.linalg.norm(centres[candidates] - centre, dim=1)
        affected = candidates[centre_dist < 2 * radius[candidates] * (1 + _SAFETY)]

        flag = torch.zeros(n, dtype=torch.bool, device=device)
        flag[affected] = True
        members = torch.nonzero(flag[owner]).squeeze(1)
        new_dist = torch.linalg.norm(x[members] - centre, dim=1)
        closer = new_dist < min_dist[members]
        moved = members[closer]
        min_dist[moved] = new_dist[closer]
        owner[moved] = k

        # Radii of the clusters that changed; the new cluster's radius from the points it took.
        radius[k] = min_dist[moved].max() if len(moved) else 0.0
        radius[affected] = 0.0
        stay = members[~closer]
        radius.scatter_reduce_(0, owner[stay], min_dist[stay], reduce="amax")
        if return_radii:
            radii.append(float(radius[: k + 1].max()))

    indices = np.asarray(chosen, dtype=np.int64)
    return (indices, np.asarray(radii)) if return_radii else indices


def covering_radius(features: torch.Tensor, indices, projection_dim: int | None = None, seed: int = 0) -> float:
    """Largest distance from any point to its nearest chosen point (the k-center objective)."""
    from .neighbours import nearest_neighbours

    x = random_projection(features, projection_dim, seed)
    distances, _ = nearest_neighbours(x, x[torch.as_tensor(np.asarray(indices))], k=1)
    return float(distances.max())


def random_coreset(features: torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct indices drawn uniformly (seeded): the baseline greedy must beat."""
    n = _check_size(n, len(features))
    return np.sort(np.random.default_rng(seed).choice(len(features), size=n, replace=False))


def coreset_size(n_points: int, ratio: float | int) -> int:
    """A ratio in (0, 1] -> that fraction of ``n_points`` (at least 1); an int > 1 -> a count."""
    if isinstance(ratio, (int, np.integer)) and not isinstance(ratio, bool) and ratio > 1:
        return min(int(ratio), n_points)
    if not 0 < ratio <= 1:
        raise ValueError(f"coreset ratio must be in (0, 1] or a count > 1, got {ratio}")
    return max(1, int(round(n_points * ratio)))


def select_coreset(features: torch.Tensor, sampler: str, n: int, projection_dim: int | None = 128,
                   seed: int = 0, progress: bool = False) -> np.ndarray:
    """Dispatch by name: ``"greedy"``, ``"random"`` or ``"none"`` (keep everything)."""
    if sampler == "greedy":
        return greedy_coreset(features, n, projection_dim=projection_dim, seed=seed, progress=progress)
    if sampler == "random":
        return random_coreset(features, n, seed=seed)
    if sampler == "none":
        return np.arange(len(features))
    raise ValueError(f"unknown sampler {sampler!r}; choose 'greedy', 'random' or 'none'")
