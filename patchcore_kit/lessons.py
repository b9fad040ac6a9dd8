"""What the lessons (the numbered notebooks in ``notebooks/``) share: their data and their checks.

(Named ``lessons``, not ``notebook``: a module ``notebook.py`` beside the folder ``notebooks/``
read as if it were one of them, and ``lessons`` pairs with :mod:`patchcore_kit.exercises`.)

Every notebook in ``notebooks/`` starts the same way. Its parameters cell reads a few switches
from the environment (``PATCHCORE_KIT_FAST``, ``PATCHCORE_KIT_DATASET``, ``PATCHCORE_KIT_FORMAT``,
``PATCHCORE_KIT_CATEGORY``) and the next cell turns them into a :class:`~patchcore_kit.data.Split`
with :func:`notebook_dataset`: without a dataset folder it builds the demo data (small in FAST
mode, as the test suite runs it) and loads it; with one it loads that folder in the given format.
Either way the training pool can be cut to a seeded draw of ``n_train`` images.

This module holds the notebooks' conventions (which demo data, how small FAST is), not a dataset
format; the formats live in :mod:`patchcore_kit.data`, the default folders in :mod:`patchcore_kit.paths`.

Example:
    >>> from patchcore_kit.lessons import notebook_dataset
    >>> split = notebook_dataset(None, "mvtec", "brick", fast=True, n_train=10)   # doctest: +SKIP
    >>> split.name, len(split.train)                                              # doctest: +SKIP
    ('mvtec/brick', 10)
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .data import Split, load_dataset
from .data.demo import build_demo_dataset
from .errors import InputError
from .paths import demo_data_dir, own_images_demo_dir

__all__ = [
    "FAST_DEMO",
    "demo_root",
    "notebook_dataset",
    "notebook_datasets",
    "demo_image_folder",
    "development_split",
    "expect",
]

#: The demo data in FAST mode: a few small images per category, built in seconds.
FAST_DEMO = {"n_train": 10, "n_test_good": 4, "n_test_per_defect": 2, "image_size": 128}


def demo_root(categories: Iterable[str], fast: bool = False) -> Path:
    """Build (or reuse) the notebooks' demo data holding ``categories``; return its folder.

    The full-size data go to ``<data dir>/demo`` and the FAST data to a folder named after their
    size (:func:`~patchcore_kit.paths.demo_data_dir`), so a FAST run never replaces the full one,
    nor the FAST demo report's smaller build.
    """
    folder = demo_data_dir(FAST_DEMO if fast else None)
    return build_demo_dataset(folder, categories=list(categories), progress=False, **(FAST_DEMO if fast else {}))


def _categories(categories: str | Iterable[str]) -> list[str]:
    if isinstance(categories, str):
        categories = categories.split(",")
    names = [c.strip() for c in categories if c.strip()]
    if not names:
        raise InputError(f"{categories!r}: name at least one category")
    return names


def notebook_datasets(
    root: str | Path | None = None,
    format: str = "mvtec",
    categories: str | Iterable[str] = "brick",
    *,
    fast: bool = False,
    n_train: int | None = None,
    seed: int = 0,
) -> dict[str, Split]:
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
            raise InputError(
                f"format {format!r} needs a dataset folder (PATCHCORE_KIT_DATASET); "
                "the demo data is in the MVTec AD layout: use format 'mvtec'"
            )
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


def notebook_dataset(
    root: str | Path | None = None,
    format: str = "mvtec",
    category: str = "brick",
    *,
    fast: bool = False,
    n_train: int | None = None,
    seed: int = 0,
) -> Split:
    """The notebook's one dataset: :func:`notebook_datasets` with a single ``category``.

    >>> split = notebook_dataset(fast=True, n_train=5)   # 5 of the FAST demo's brick images  # doctest: +SKIP
    """
    if str(format).lower() == "mvtec" and "," in str(category):
        raise InputError(f"{category!r}: this notebook takes one category; notebook_datasets takes several")
    (split,) = notebook_datasets(root, format, [category], fast=fast, n_train=n_train, seed=seed).values()
    return split


def demo_image_folder(category: str = "brick", fast: bool = False, n_defective: int | None = None) -> Path:
    """The demo data laid out like a student's own photographs: ``good/`` and one folder per defect.

    Copies the demo category's nominal images (training and test) into ``<data dir>/own_images_demo
    [_<size>]/<category>/good/`` (:func:`~patchcore_kit.paths.own_images_demo_dir`) and its defective
    test images into ``.../<defect type>/`` (at most
    ``n_defective`` per type), the ``folder`` format of :func:`~patchcore_kit.data.load_dataset`.
    Notebook 06 reads it when no folder of your own is given. Made once; reused after.
    """
    source = demo_root([category], fast=fast) / category
    target = own_images_demo_dir(FAST_DEMO if fast else None) / category
    done = target / ".complete"
    if done.is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    for folder in sorted((source / "test").iterdir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if folder.name != "good" and n_defective is not None:
            files = files[:n_defective]
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy(path, target / folder.name / f"test_{path.name}")
    for path in sorted((source / "train" / "good").iterdir()):
        shutil.copy(path, target / "good" / f"train_{path.name}")
    done.touch()
    return target


def development_split(split: Split, fraction: float = 0.5, seed: int = 0) -> tuple[Split, Split]:
    """Cut the test set in two: a *development* set to choose settings on, and a test set kept apart.

    Each defect type and the nominal test images are halved separately (``fraction`` of each goes
    to development, seeded), so both halves see every type. Settings chosen on the development
    half and measured once on the other half give an honest number; the training pool is
    untouched. A type with a single image goes to the test half.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"fraction: expected a number in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    development, test = [], []
    for kind in sorted({s.defect_type for s in split.test}):
        samples = [s for s in split.test if s.defect_type == kind]
        order = rng.permutation(len(samples))
        n_dev = int(np.floor(fraction * len(samples))) if len(samples) > 1 else 0
        development += [samples[i] for i in sorted(order[:n_dev])]
        test += [samples[i] for i in sorted(order[n_dev:])]
    return (
        dataclasses.replace(split, name=f"{split.name} (development)", test=development),
        dataclasses.replace(split, name=f"{split.name} (test)", test=test),
    )


def expect(condition: bool, message: str, strict: bool = True) -> bool:
    """A notebook's check on data-dependent results: an ``AssertionError`` when ``strict``, else a warning.

    On the demo data (what the tests run) a failed expectation is a bug and must stop the
    notebook; on a student's own images it is news about their data, and the notebook goes on.
    """
    if condition:
        return True
    if strict:
        raise AssertionError(message)
    warnings.warn(message, stacklevel=2)
    return False
