"""A seeded 2-D UMAP of patch features, kept on disk under a key of the data and the settings.

UMAP takes tens of seconds (plus numba's compilation on first use); the cache makes a second run
of a notebook instant. The key hashes the feature bytes, so other data never reads a stale
embedding.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def umap_embedding(
    features,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """A seeded 2-D UMAP of ``features`` ``(N, D)``, stored in ``cache_dir`` under a key of data + settings."""
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    settings = (x.shape, n_neighbors, min_dist, n_epochs, seed)
    key = hashlib.sha256(repr(settings).encode() + x.tobytes()).hexdigest()[:24]
    path = Path(cache_dir) / f"umap_{key}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    import umap  # imported late: it loads numba, which takes a few seconds

    # A seed makes UMAP single-threaded anyway; saying so spares the notebook its warning about it.
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs, random_state=seed, n_jobs=1)
    embedding = reducer.fit_transform(x).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npy")
        np.save(partial, embedding)
        partial.replace(path)
    return embedding
