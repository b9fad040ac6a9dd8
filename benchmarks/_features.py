"""Real PatchCore patch features for the benchmarks, extracted once and kept in a local cache.

The benchmarks need the matrices PatchCore really sees: efficientnet_lite0 stages 2+3 on MTD
training images at 224 px, p=3 aggregation -> 28×28 = 784 patches × 152 dims per image. They are
extracted with the kit's own :class:`~patchcore_kit.features.FeatureExtractor` and
:func:`~patchcore_kit.features.patch_embeddings` and saved as ``.npy`` under
``$PATCHCORE_KIT_BENCH_CACHE`` (default ``~/.cache/patchcore_kit/benchmarks``) so later runs start
at once. The cache lives outside the repository.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from patchcore_kit.data import load_dataset
from patchcore_kit.features import FeatureExtractor, flatten_patches, patch_embeddings

REPO_ROOT = Path(__file__).resolve().parents[1]


def mtd_root() -> Path:
    root = Path(os.environ.get("PATCHCORE_KIT_MTD", REPO_ROOT.parent / "shared" / "data" / "mtd"))
    if not (root / "MT_Free").is_dir():
        raise SystemExit(f"{root}: MTD not found (set PATCHCORE_KIT_MTD to the folder holding MT_Free/)")
    return root


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "patchcore_kit" / "benchmarks"
    path = Path(os.environ.get("PATCHCORE_KIT_BENCH_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def mtd_train_paths() -> list[Path]:
    """The MTD training pool (743 nominal images, tile-grouped split, seed 0)."""
    return load_dataset(mtd_root(), "mtd", seed=0).train_paths


def mtd_patch_features(n_images: int | None = None, verbose: bool = True) -> np.ndarray:
    """``(n_images * 784, 152)`` float32 patch features of the first ``n_images`` training images."""
    paths = mtd_train_paths()
    n_images = len(paths) if n_images is None else min(n_images, len(paths))
    full = cache_dir() / f"mtd_lite0_224_{len(paths)}.npy"
    if not full.is_file():
        start = time.perf_counter()
        extractor = FeatureExtractor("efficientnet_lite0", image_size=224, batch_size=16)
        chunks = [flatten_patches(patch_embeddings(maps, 3)).numpy() for maps in extractor.iter_layer_maps(paths)]
        partial = full.with_suffix(".partial.npy")
        np.save(partial, np.concatenate(chunks).astype(np.float32))
        partial.replace(full)
        if verbose:
            print(f"extracted {len(paths)} MTD images in {time.perf_counter() - start:.1f} s -> {full}")
    features = np.load(full, mmap_mode="r")
    per_image = len(features) // len(paths)
    return np.array(features[: n_images * per_image])  # a writable copy in memory


def lifted_features(n_points: int, dim: int = 1024, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Real 152-d features lifted to ``dim`` dims by a fixed random linear map plus small noise.

    PatchCore on WideResNet50 works with 1024-d patch features; efficientnet_lite0 gives 152. A
    seeded Gaussian lift keeps the real features' geometry (distances scale by about one), and
    noise of ``noise`` × the features' typical norm keeps duplicates from being exact.
    """
    base = torch.from_numpy(mtd_patch_features(None, verbose=True)[:n_points])
    generator = torch.Generator().manual_seed(seed)
    lift = torch.randn(base.shape[1], dim, generator=generator) / base.shape[1] ** 0.5
    lifted = base @ lift
    scale = noise * lifted.norm(dim=1).mean() / dim**0.5
    lifted += scale * torch.randn(lifted.shape, generator=generator)
    return lifted.numpy()
