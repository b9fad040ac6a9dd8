"""The notebooks' data: the built-in demo data, or your own MVTec AD, MTD or image folder.

Every notebook in ``notebooks/`` starts the same way. Its parameters cell reads a few switches
from the environment (``PATCHCORE_KIT_FAST``, ``PATCHCORE_KIT_DATASET``, ``PATCHCORE_KIT_FORMAT``,
``PATCHCORE_KIT_CATEGORY``) and the next cell turns them into a :class:`~patchcore_kit.data.Split`
with :func:`notebook_dataset`: without a dataset folder it builds the demo data (small in FAST
mode, as the test suite runs it) and loads it; with one it loads that folder in the given format.
Either way the training pool can be cut to a seeded draw of ``n_train`` images.

This module holds the notebooks' conventions (where the demo data goes, how small FAST is), not a
dataset format; the formats themselves live in :mod:`patchcore_kit.data`.

Example:
    >>> from patchcore_kit.notebook import notebook_dataset
    >>> split = notebook_dataset(None, "mvtec", "brick", fast=True, n_train=10)   # doctest: +SKIP
    >>> split.name, len(split.train)                                              # doctest: +SKIP
    ('mvtec/brick', 10)
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .data import Split, load_dataset
from .data.demo import build_demo_dataset, default_data_dir
from .errors import InputError

__all__ = ["FAST_DEMO", "demo_root", "notebook_dataset", "notebook_datasets"]

#: The demo data in FAST mode: a few small images per category, built in seconds.
FAST_DEMO = {"n_train": 10, "n_test_good": 4, "n_test_per_defect": 2, "image_size": 128}


def demo_root(categories: Iterable[str], fast: bool = False) -> Path:
    """Build (or reuse) the notebooks' demo data holding ``categories``; return its folder.

    The full-size data go to ``<data dir>/demo`` and the FAST data to ``<data dir>/demo_fast``
    (:func:`~patchcore_kit.data.demo.default_data_dir`), so a FAST run never replaces the full one.
    """
    folder = default_data_dir() / ("demo_fast" if fast else "demo")
    return build_demo_dataset(folder, categories=list(categories), progress=False, **(FAST_DEMO if fast else {}))


def _categories(categories: str | Iterable[str]) -> list[str]:
    if isinstance(categories, str):
        categories = categories.split(",")
    names = [c.strip() for c in categories if c.strip()]
    if not names:
        raise InputError(f"{categories!r}: name at least one category")
    return names


def notebook_datasets(root: str | Path | None = None, format: str = "mvtec",
                      categories: str | Iterable[str] = "brick", *, fast: bool = False,
                      n_train: int | None = None, seed: int = 0) -> dict[str, Split]:
    """The notebook's dataset(s) by display name: one per category for MVTec AD, else one.

    ``root=None`` means the demo data, built with all ``categories`` at once (FAST size when
    ``fast``); it is in the MVTec AD layout, so ``format`` must then be ``"mvtec"``. ``categories``
    (a list, or names separated by commas) only applies to MVTec AD and the demo data; MTD and
    folder datasets are one split each. The names are ``"<dataset> / <category>"`` for MVTec AD
    (``"demo / brick"``), the split's own name otherwise. ``n_train`` keeps a seeded draw of that
    many training images (all of them when the pool is smaller); ``None`` keeps the whole pool.
    """
    format = str(format).lower()
    if format != "mvtec":
        if root is None:
            raise InputError(f"format {format!r} needs a dataset folder (PATCHCORE_KIT_DATASET); "
                             "the demo data is in the MVTec AD layout: use format 'mvtec'")
        splits = [load_dataset(root, format, seed=seed)]
        names = [splits[0].name]
    else:
        categories = _categories(categories)
        label = "demo" if root is None else Path(root).name
        if root is None:
            root = demo_root(categories, fast=fast)
        splits = [load_dataset(root, "mvtec", category) for category in categories]
        names = [f"{label} / {category}" for category in categories]
    if n_train is not None:
        splits = [split.with_shots(min(n_train, len(split.train)), seed=seed) for split in splits]
    return dict(zip(names, splits))


def notebook_dataset(root: str | Path | None = None, format: str = "mvtec", category: str = "brick", *,
                     fast: bool = False, n_train: int | None = None, seed: int = 0) -> Split:
    """The notebook's one dataset: :func:`notebook_datasets` with a single ``category``.

    >>> split = notebook_dataset(fast=True, n_train=5)   # 5 of the FAST demo's brick images  # doctest: +SKIP
    """
    if str(format).lower() == "mvtec" and "," in str(category):
        raise InputError(f"{category!r}: this notebook takes one category; notebook_datasets takes several")
    (split,) = notebook_datasets(root, format, [category], fast=fast, n_train=n_train, seed=seed).values()
    return split
