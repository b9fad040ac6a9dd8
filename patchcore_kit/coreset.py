"""Coreset subsampling of the memory bank: greedy k-center (paper Algorithm 1), random, none.

A memory bank of every training patch is large (one MVTec category at 224 px: ~160k patches)
and very redundant. Greedy k-center picks the patch farthest from everything chosen so far, again
and again, so the chosen subset *covers* the bank: every patch lies within the covering radius of
some chosen one. Distances are taken on a seeded random projection (128 dims by default, as in
the paper), which makes each step cheaper and changes them by a known amount: a squared
distance moves by about ``sqrt(2 / dim)`` of itself (12.5 % at 128 dims; Johnson–Lindenstrauss,
:func:`projection_distortion` measures it). With the narrow EfficientNet-Lite0 features (152
dims) the projection to 128 saves almost nothing.

Two implementations make exactly the same choices:

* :func:`greedy_coreset_plain` is the textbook loop (what the reference code does): after each
  pick, recompute the distance of *every* point to the new centre. Read this one first.
* :func:`greedy_coreset` (the one the kit uses) is *lazy*. Distances to the nearest centre only
  ever shrink, so a block of points whose largest distance, as last computed, is already below the
  best up-to-date candidate cannot hold the farthest point — it can wait. Only the block that
  might hold the farthest point is brought up to date, against all centres added since its last
  update at once, with one matrix multiplication instead of one pass over memory per centre.
  Every few hundred steps the points are regrouped into blocks of similar distance, so that the
  points already well covered stop being dragged along by a far one in their block.

Why not prune with the triangle inequality? On real patch features (hundreds of dimensions,
clusters of similar size) a new centre lies within twice the radius of most other clusters, so
"this cluster cannot change" rarely holds: measured on MTD features, a pruned loop still had to
look at a third or more of all points at every step. Laziness plus matrix products wins instead,
and the choices stay exactly those of the plain loop: the matrix product only *screens* (it is
rounded, so it gets a generous slack), and every distance that can change a choice is computed
exactly as the plain loop computes it. ``docs/benchmarks.md`` has the measurements.

>>> x = torch.randn(1000, 64)
>>> picks = greedy_coreset(x, 50, seed=0)
>>> bool((picks == greedy_coreset_plain(x, 50, seed=0)).all())
True
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .params import problem
from .threads import at_most_threads

#: Points per block of the lazy greedy search (measured: 256–1024 are equally fast).
BLOCK_SIZE = 1024
#: Steps between two regroupings of the points by distance (see :meth:`_LazyDistances.regroup`).
REGROUP_EVERY = 500
#: torch threads for the lazy loop on CPU. Its operations are small (a block of 1024 points), so
#: threads gain little, and on a busy machine every hand-off waits for a descheduled thread:
#: measured on 2 shared cores, the loop ran about 7x slower with 2 threads than with 1.
LOOP_THREADS = 1
#: Slack of the matrix-product screen, relative to the squared size of the data. float32
#: rounding of a D-dimensional product is about D × 6e-8 of it; the slack stays far above that.
_SLACK = 1e-3
#: Rows per chunk when a statistic is taken over all points (bounds temporary memory to a few MiB).
_CHUNK = 8192
#: Largest (points × centres) screen computed at once: 2**20 floats = 4 MiB.
_TILE = 2**20


def random_projection(features: torch.Tensor, dim: int | None = 128, seed: int = 0) -> torch.Tensor:
    """Project ``(N, D)`` features to ``dim`` dimensions with a seeded Gaussian matrix.

    ``dim=None`` or ``dim >= D`` returns the features unchanged (as float32, no copy when they
    already are).
    """
    features = torch.as_tensor(features).float()
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D (points, dims) matrix, got shape {tuple(features.shape)}")
    if dim is None or dim >= features.shape[1]:
        return features
    if dim < 1:
        raise ValueError(f"projection_dim must be at least 1 or None, got {dim}")
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator) / dim**0.5
    return features @ matrix.to(features.device)


def projection_distortion(features, dim: int | None, n_pairs: int = 5000, seed: int = 0) -> np.ndarray:
    """How much :func:`random_projection` to ``dim`` changes squared distances, pair by pair.

    Returns ``|Px - Py|^2 / |x - y|^2`` for ``n_pairs`` random pairs of rows of ``features``
    (pairs drawn with ``seed``; the projection is ``random_projection(features, dim, seed)``). For
    a Gaussian projection the ratio has mean 1 and standard deviation about ``sqrt(2 / dim)``
    whatever the data (Johnson-Lindenstrauss): 0.35 at 16 dims, 0.25 at 32, 0.18 at 64, 0.125 at
    128. Ratios of exactly 1 mean no projection (``dim`` None or not below the feature depth).

    >>> ratios = projection_distortion(torch.randn(2000, 512), 128)
    >>> 0.10 < float(ratios.std()) < 0.15
    True
    """
    x = torch.as_tensor(features).float()
    projected = random_projection(x, dim, seed)
    rng = np.random.default_rng(seed)
    a = torch.from_numpy(rng.integers(len(x), size=n_pairs))
    b = torch.from_numpy(rng.integers(len(x), size=n_pairs))
    keep = a != b
    a, b = a[keep], b[keep]
    before = ((x[a] - x[b]) ** 2).sum(1)
    after = ((projected[a] - projected[b]) ** 2).sum(1)
    keep = before > 0
    return (after[keep] / before[keep]).double().numpy()


def _start_index(n_points: int, seed: int, start: int | None) -> int:
    if start is not None:
        if not 0 <= start < n_points:
            raise ValueError(f"start index {start} outside 0..{n_points - 1}")
        return int(start)
    return int(np.random.default_rng(seed).integers(n_points))


def _check_size(n: int, n_points: int) -> int:
    if n_points < 1:
        raise ValueError("cannot choose a coreset from an empty feature matrix")
    if n < 1:
        raise ValueError(f"coreset size must be at least 1, got {n}")
    return min(int(n), n_points)


def greedy_coreset_plain(
    features: torch.Tensor,
    n: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    start: int | None = None,
    return_radii: bool = False,
):
    """The plain greedy k-center loop; ``n`` indices, the start point first.

    ``return_radii`` also returns the covering radius after each pick (as :func:`greedy_coreset`).
    """
    x = random_projection(features, projection_dim, seed)
    n = _check_size(n, len(x))
    chosen = [_start_index(len(x), seed, start)]
    min_dist = torch.linalg.norm(x - x[chosen[0]], dim=1)
    radii = [float(min_dist.max())]
    for _ in range(n - 1):
        index = int(torch.argmax(min_dist))
        chosen.append(index)
        min_dist = torch.minimum(min_dist, torch.linalg.norm(x - x[index], dim=1))
        if return_radii:
            radii.append(float(min_dist.max()))
    indices = np.asarray(chosen, dtype=np.int64)
    return (indices, np.asarray(radii)) if return_radii else indices


class _LazyDistances:
    """Each point's distance to its nearest centre, brought up to date block by block on demand.

    Points are cut into blocks of ``block_size``. A block remembers how many centres it has seen
    (``seen``) and its largest distance at that time (``bound``). Because a distance can only
    shrink as centres are added, ``bound`` stays an upper bound; a block is up to date when it has
    seen every centre.

    Blocks are formed from *positions*; ``order`` maps each position to its row of ``x``. Now and
    then (:meth:`regroup`) the points are sorted by their distance as last computed, so that a
    block holds points of similar distance: points well inside the covered region then sit in
    blocks whose bound stays below the covering radius for longer, instead of being caught up
    each time one far point in their block could be the farthest (on MTD features: about a quarter
    fewer distances). Regrouping only moves N-long vectors (positions, distances); the features
    stay in place.
    """

    def __init__(self, x: torch.Tensor, first: int, n_centres: int, block_size: int):
        self.x, self.block_size = x, block_size
        n_points, dim = x.shape
        device = x.device
        # The screen in _catch_up works with centred centres (c - mean); `slack` covers its float32
        # rounding, which grows with the data's spread and size.
        self.mean = x.mean(0)
        self.centred_sq = self._chunked_norms(self.mean) ** 2
        spread = float(self.centred_sq.max()) ** 0.5
        size = max(float(torch.linalg.norm(x[a : a + _CHUNK], dim=1).max()) for a in range(0, n_points, _CHUNK))
        self.slack = max(_SLACK, 20 * dim * 6e-8) * spread * (spread + size)

        self.centres = torch.empty(n_centres, dtype=torch.long, device=device)  # point index of each centre
        self.centred = torch.empty(n_centres, dim, dtype=x.dtype, device=device)  # centre - mean
        self.offset_c = torch.empty(n_centres, dtype=x.dtype, device=device)
        self.n_centres = 0
        self.add_centre(first)

        # The first centre is applied to every point directly (as the plain loop does, in chunks).
        self.order = torch.arange(n_points, device=device)  # position -> row of x
        # The points and their centred squared norms in position order, so that a block is a slice
        # rather than a gather at every catch-up; copied again only when the points are regrouped.
        self.x_by_position, self.centred_sq_by_position = x, self.centred_sq
        self.min_dist = self._chunked_norms(x[first])
        n_blocks = -(-n_points // block_size)
        self.bound = np.array([float(self.min_dist[self._rows(b)].max()) for b in range(n_blocks)])
        self.seen = np.ones(n_blocks, dtype=np.int64)

    def _chunked_norms(self, point: torch.Tensor) -> torch.Tensor:
        """``|x - point|`` for every row, as the plain loop computes it, through one reused chunk buffer."""
        x = self.x
        out = torch.empty(len(x), dtype=x.dtype, device=x.device)
        buffer = torch.empty(min(_CHUNK, len(x)), x.shape[1], dtype=x.dtype, device=x.device)
        for a in range(0, len(x), _CHUNK):
            chunk = buffer[: len(x[a : a + _CHUNK])]
            torch.sub(x[a : a + _CHUNK], point, out=chunk)
            out[a : a + len(chunk)] = torch.linalg.norm(chunk, dim=1)
        return out

    def _rows(self, block: int) -> slice:
        return slice(block * self.block_size, (block + 1) * self.block_size)

    def add_centre(self, index: int) -> None:
        k = self.n_centres
        self.centres[k] = index
        self.centred[k] = self.x[index] - self.mean
        # |c-mean|^2 + 2 mean.(c-mean): the screen below then needs no centred copy of the points
        self.offset_c[k] = self.centred_sq[index] + 2 * (self.mean @ self.centred[k])
        self.n_centres += 1

    def farthest(self) -> tuple[int, float]:
        """The point farthest from all centres (lowest index among ties) and its distance."""
        while True:
            fresh = self.seen == self.n_centres
            best = self.bound[fresh].max() if fresh.any() else -np.inf
            stale = np.where(fresh, -np.inf, self.bound)
            block = int(np.argmax(stale))
            if stale[block] < best:  # no stale block can hold a point as far as the best one
                break
            self._catch_up(block)
        # every point at distance `best` (usually one) is in a fresh block whose bound is `best`
        ties = [
            self.order[self._rows(b)][self.min_dist[self._rows(b)] == best]
            for b in np.flatnonzero(fresh & (self.bound == best))
        ]
        return int(torch.cat(ties).min()), float(best)

    def _catch_up(self, block: int) -> None:
        """Apply every centre this block has not seen yet."""
        rows, new = self._rows(block), slice(int(self.seen[block]), self.n_centres)
        min_dist = self.min_dist[rows]  # a view: updating it updates self.min_dist
        points = self.x_by_position[rows]  # the rows self.order[rows] of x
        centred_sq = self.centred_sq_by_position[rows]
        step = max(1, _TILE // len(points))  # a block long left behind has many centres to see: in tiles
        for c0 in range(new.start, new.stop, step):
            new_c = slice(c0, min(c0 + step, new.stop))
            # Screen: |x-c|^2 - |x-mean|^2 = |c-mean|^2 + 2 mean.(c-mean) - 2 x.(c-mean), all pairs at once.
            partial = torch.addmm(self.offset_c[new_c], points, self.centred[new_c].T, alpha=-2)
            limit = min_dist * min_dist + self.slack - centred_sq
            row, col = torch.nonzero(partial < limit[:, None], as_tuple=True)
            if len(row):
                # Exact distances for the few pairs that may move a point, computed as the plain loop does.
                centres = self.x.index_select(0, self.centres[new_c].index_select(0, col))
                exact = torch.linalg.norm(points.index_select(0, row) - centres, dim=1)
                closer = exact < min_dist.index_select(0, row)
                min_dist.scatter_reduce_(0, row[closer], exact[closer], reduce="amin")
        self.bound[block] = float(min_dist.max())
        self.seen[block] = self.n_centres

    def regroup(self) -> None:
        """Sort the points by their distance as last computed (farthest first) and re-form the blocks.

        A new block has seen as many centres as the least up-to-date of its points (applying a
        centre twice changes nothing), and its bound is its largest distance.
        """
        n_points, size = len(self.min_dist), self.block_size
        seen = torch.from_numpy(np.repeat(self.seen, size)[:n_points]).to(self.min_dist.device)
        perm = torch.sort(self.min_dist, descending=True, stable=True).indices
        self.order, self.min_dist, seen = self.order[perm], self.min_dist[perm], seen[perm]
        self.x_by_position = self.x.index_select(0, self.order)
        self.centred_sq_by_position = self.centred_sq.index_select(0, self.order)
        pad = (-n_points) % size
        self.bound = self.min_dist[::size].double().cpu().numpy()  # sorted: each block's first is its largest
        self.seen = torch.cat([seen, seen.new_full((pad,), self.n_centres)]).view(-1, size).min(1).values.cpu().numpy()


def greedy_coreset(
    features: torch.Tensor,
    n: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    start: int | None = None,
    progress: bool = False,
    return_radii: bool = False,
):
    """Greedy k-center, lazily evaluated: the plain loop's choices at a fraction of the work.

    Returns ``n`` indices into ``features`` (the start point first). With ``return_radii`` also the
    covering radius after each pick (``radii[i]`` = max distance of any point to the first ``i+1``
    centres), which is what the paper's coverage argument is about. ``start`` fixes the first
    point (default: drawn with ``seed``); ``projection_dim=None`` works on the features as given.
    Runs on the features' device.
    """
    x = random_projection(features, projection_dim, seed)
    n = _check_size(n, len(x))
    first = _start_index(len(x), seed, start)
    distances = _LazyDistances(x, first, n, BLOCK_SIZE)
    chosen = [first]
    radii = []
    with at_most_threads(LOOP_THREADS if x.device.type == "cpu" else None):
        for step in tqdm(range(1, n), desc="coreset", disable=not progress, leave=False):
            if step % REGROUP_EVERY == 0:
                distances.regroup()
            index, radius = distances.farthest()
            radii.append(radius)
            chosen.append(index)
            distances.add_centre(index)
        if return_radii:
            radii.append(distances.farthest()[1])
    indices = np.asarray(chosen, dtype=np.int64)
    return (indices, np.asarray(radii)) if return_radii else indices


def covering_radius(features: torch.Tensor, indices, projection_dim: int | None = None, seed: int = 0) -> float:
    """Largest distance from any point to its nearest chosen point (the k-center objective)."""
    from .neighbors import nearest_neighbors

    x = random_projection(features, projection_dim, seed)
    distances, _ = nearest_neighbors(x, x[torch.as_tensor(np.asarray(indices))], k=1)
    return float(distances.max())


def random_coreset(features: torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct indices drawn uniformly (seeded): the baseline greedy must beat."""
    n = _check_size(n, len(features))
    return np.sort(np.random.default_rng(seed).choice(len(features), size=n, replace=False))


def coreset_size(n_points: int, ratio: float | int) -> int:
    """A ratio in (0, 1] -> that fraction of ``n_points`` (at least 1); a whole number > 1 -> a count.

    What ``ratio`` may be is the one rule of :data:`patchcore_kit.params.RULES` (also the CLI's).

    >>> coreset_size(1000, 0.1), coreset_size(1000, 25), coreset_size(10, 25.0)
    (100, 25, 10)
    """
    text = problem("coreset_ratio", ratio)
    if text is not None:
        raise ValueError(f"coreset_ratio {text}")
    if ratio > 1:
        return min(int(ratio), n_points)
    return max(1, int(round(n_points * ratio)))


def select_coreset(
    features: torch.Tensor,
    sampler: str,
    n: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Dispatch by name: ``"greedy"``, ``"random"`` or ``"none"`` (keep everything)."""
    if sampler == "greedy":
        return greedy_coreset(features, n, projection_dim=projection_dim, seed=seed, progress=progress)
    if sampler == "random":
        return random_coreset(features, n, seed=seed)
    if sampler == "none":
        return np.arange(len(features))
    raise ValueError(f"unknown sampler {sampler!r}; choose 'greedy', 'random' or 'none'")
