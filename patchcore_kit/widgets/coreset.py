"""Notebook 02's coreset view: greedy k-center's picks on a UMAP of the bank and in one image.

:func:`coreset_state` runs greedy k-center once up to the largest ratio shown (every smaller
coreset is a prefix of its pick order) and embeds the picks with a cached UMAP;
:func:`render_coreset_view` draws one ratio from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..coreset import coreset_size, covering_radius, greedy_coreset
from ..viz import plot_coreset_embedding, plot_patch_picks
from .umap_cache import umap_embedding


def patch_positions(indices, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices into a flattened bank -> ``(image, row, col)``: banks are image by image, row-major."""
    indices = np.asarray(indices, dtype=np.int64)
    h, w = grid
    return indices // (h * w), (indices % (h * w)) // w, indices % w


@dataclass
class CoresetState:
    """Everything :func:`render_coreset_view` needs; built by :func:`coreset_state`.

    ``order`` is greedy k-center's pick order: the coreset for *any* size ``n`` is ``order[:n]``,
    because the greedy rule never revisits a choice. ``radii[i]`` is the covering radius after
    ``i + 1`` picks. ``random_order`` is a seeded permutation: the random coreset of size ``n`` is
    its prefix. ``shown`` indexes the embedded patches — every pick of both samplers, plus a
    uniform random sample of the whole bank (``in_sample``) that shows where the bank is dense —
    and ``embedding`` holds their 2-D coordinates.
    """

    features: torch.Tensor  # (N, D) all training patches
    grid: tuple[int, int]
    images: np.ndarray  # (n_images, H, W, 3) the training images, for drawing picks
    order: np.ndarray
    radii: np.ndarray
    shown: np.ndarray
    in_sample: np.ndarray  # (len(shown),) bool: part of the uniform sample
    embedding: np.ndarray
    random_order: np.ndarray | None = None
    projection_dim: int | None = 128
    seed: int = 0

    @property
    def max_ratio(self) -> float:
        return len(self.order) / len(self.features)

    def coreset(self, ratio: float, sampler: str = "greedy") -> np.ndarray:
        """The ``sampler``'s coreset of ``ratio`` of all patches (a prefix of its pick order)."""
        n = coreset_size(len(self.features), ratio)
        if n > len(self.order):
            raise ValueError(
                f"ratio {ratio} needs {n} picks; this state holds {len(self.order)} (max_ratio {self.max_ratio:.3f})"
            )
        if sampler == "greedy":
            return self.order[:n]
        if sampler == "random" and self.random_order is not None:
            return self.random_order[:n]
        raise ValueError(f"sampler must be 'greedy' or 'random' (when the state holds random picks), got {sampler!r}")

    def radius(self, ratio: float, sampler: str = "greedy") -> float:
        """Covering radius of that coreset (in the projected space greedy k-center works in)."""
        if sampler == "greedy":
            return float(self.radii[len(self.coreset(ratio)) - 1])
        memo = self.__dict__.setdefault("_radius_memo", {})
        if (ratio, sampler) not in memo:
            memo[ratio, sampler] = covering_radius(
                self.features, self.coreset(ratio, sampler), self.projection_dim, self.seed
            )
        return memo[ratio, sampler]


def coreset_state(
    features,
    grid: tuple[int, int],
    images,
    max_ratio: float = 0.25,
    n_shown: int = 3000,
    projection_dim: int | None = 128,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    umap_params: dict | None = None,
    with_random: bool = True,
) -> CoresetState:
    """Run greedy k-center once up to ``max_ratio`` and embed the picks and a sample of the bank with UMAP.

    ``features`` ``(N, D)`` are all training patches, image by image on ``grid`` (e.g. the
    ``memory_bank_`` of a ``PatchCore(sampler="none")``); ``images`` the training images as arrays.
    The picks match ``PatchCore(coreset_ratio=r, projection_dim=projection_dim, seed=seed)``. UMAP
    sees all ``max_ratio * N`` picks plus ``n_shown`` uniformly drawn patches, so keep
    ``max_ratio`` to the ratios you want to look at. ``with_random`` also draws a random coreset
    of every size (a seeded permutation's prefix), to compare with greedy in the same picture.
    """
    features = torch.as_tensor(features).float()
    n_max = coreset_size(len(features), max_ratio)
    order, radii = greedy_coreset(features, n_max, projection_dim=projection_dim, seed=seed, return_radii=True)
    sample = np.random.default_rng(seed).choice(len(features), min(n_shown, len(features)), replace=False)
    random_order = np.random.default_rng(seed + 1).permutation(len(features))[:n_max] if with_random else None
    shown = np.union1d(order, sample) if random_order is None else np.union1d(np.union1d(order, sample), random_order)
    embedding = umap_embedding(features[shown].numpy(), seed=seed, cache_dir=cache_dir, **(umap_params or {}))
    return CoresetState(
        features,
        tuple(grid),
        np.asarray(images),
        order,
        radii,
        shown,
        np.isin(shown, sample),
        embedding,
        random_order,
        projection_dim,
        seed,
    )


def render_coreset_view(state: CoresetState, ratio: float, image_index: int = 0, sampler: str = "greedy") -> Figure:
    """Left: the UMAP of the bank with the ``sampler``'s coreset of ``ratio`` highlighted. Right: its picks in one image."""
    picks = state.coreset(ratio, sampler)
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1.25, 1])
    selected = np.isin(state.shown, picks)
    plot_coreset_embedding(
        state.embedding,
        selected,
        background=state.in_sample,
        ax=left,
        title=f"{sampler} coreset, ratio {ratio:g}: {len(picks)} of {len(state.features)} patches\n"
        f"coverage radius {state.radius(ratio, sampler):.1f} (in greedy's random projection)",
    )
    image, rows, cols = patch_positions(picks, state.grid)
    here = image == image_index
    plot_patch_picks(
        state.images[image_index],
        rows[here],
        cols[here],
        state.grid,
        ax=right,
        title=f"training image {image_index}: {int(here.sum())} of its {state.grid[0] * state.grid[1]} patches kept",
    )
    return figure
