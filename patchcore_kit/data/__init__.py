"""Datasets: MVTec AD, Magnetic Tile Defects (split by tile) and plain folders of your own images.

Every loader returns a :class:`Split` (a nominal training pool and a test set of
:class:`Sample` s); :func:`load_dataset` picks the loader by name.

Example:
    >>> from patchcore_kit.data import load_dataset
    >>> split = load_dataset("../shared/data/mtd", "mtd", seed=0)   # doctest: +SKIP
    >>> split.with_shots(16, seed=0)                                # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import IMAGE_EXTENSIONS, Sample, Split, list_images, read_sample_mask
from .download import DownloadError, download_mtd, download_mvtec
from .folder import load_folder
from .mtd import load_mtd, tile_groups
from .mvtec import load_mvtec, mvtec_categories

LOADERS = {"mvtec": load_mvtec, "mtd": load_mtd, "folder": load_folder}

__all__ = [
    "DownloadError",
    "IMAGE_EXTENSIONS",
    "LOADERS",
    "Sample",
    "Split",
    "download_mtd",
    "download_mvtec",
    "list_images",
    "load_dataset",
    "load_folder",
    "load_mtd",
    "load_mvtec",
    "mvtec_categories",
    "read_sample_mask",
    "tile_groups",
]


def load_dataset(root: str | Path, format: str, category: str | None = None, seed: int = 0, **kwargs) -> Split:
    """Load the dataset at ``root`` in ``format`` (``"mvtec"``, ``"mtd"`` or ``"folder"``).

    ``category`` picks the MVTec AD category; ``seed`` fixes the random train/test split of the
    formats without an official one (MTD, folder). Other keyword arguments go to the loader, e.g.
    ``test_fraction=0.2`` or ``nominal="ok"``.
    """
    key = str(format).lower()
    if key not in LOADERS:
        raise InputError(f"{format!r}: unknown dataset format; choose one of {', '.join(LOADERS)}")
    if key == "mvtec":
        return load_mvtec(root, category, **kwargs)  # MVTec's split is given: no seed
    if category is not None:
        raise InputError(f"{root}: category={category!r} only applies to format 'mvtec', not {key!r}")
    return LOADERS[key](root, seed=seed, **kwargs)
