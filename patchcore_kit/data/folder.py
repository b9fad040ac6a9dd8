"""Your own images in plain folders: one folder of nominal images, one folder per defect type.

Two layouts are understood::

    <root>/good/*.png              nominal images (the name is the ``nominal`` argument)
    <root>/<defect>/*.png          anomalous images, one folder per defect type
    <root>/<masks>/<defect>/<stem>.png or <stem>_mask.png    optional masks (``masks="masks"``)

Here a seeded ``test_fraction`` of the nominal images joins all anomalous images in the test set
and the remaining nominal images form the training pool. If ``<root>`` instead holds ``train/`` and
``test/`` folders, that split is used as given: ``train/<nominal>/`` (or images directly in
``train/``) is the training pool and ``test/`` is laid out like ``<root>`` above.

Each image is its own group (its path stem). If you photographed one object several times, put
those shots in a ``train/`` / ``test/`` split yourself so they cannot land on both sides.

Example:
    >>> split = load_folder("my_parts", nominal="ok", masks="masks")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import (
    Sample,
    Split,
    find_mask,
    fraction_to_count,
    list_images,
    list_subfolders,
    require_folder,
    require_images,
)


def _anomalous(test_root: Path, nominal: str, skip: set[str], mask_root: Path | None) -> list[Sample]:
    samples = []
    for folder in list_subfolders(test_root):
        if folder.name == nominal or folder.name in skip:
            continue
        for path in require_images(folder, f"anomalous images of type {folder.name!r}"):
            mask = find_mask(mask_root / folder.name, path) if mask_root is not None else None
            samples.append(Sample(path, 1, folder.name, mask, f"{folder.name}/{path.stem}"))
    if not samples:
        raise InputError(
            f"{test_root}: no anomalous images found; put them in sub-folders next to "
            f"'{nominal}/' (one per defect type), e.g. {test_root / 'scratch'}/"
        )
    return samples


def _nominal(folder: Path, what: str, prefix: str) -> list[Sample]:
    return [Sample(p, 0, "good", None, f"{prefix}/{p.stem}") for p in require_images(folder, what)]


def load_folder(
    root: str | Path,
    nominal: str = "good",
    test_fraction: float = 0.2,
    seed: int = 0,
    masks: str | None = None,
) -> Split:
    """Load a folder dataset (see the module docstring for the layouts) as a :class:`Split`."""
    root = require_folder(Path(root).expanduser(), "the dataset folder")
    mask_root, not_defects = None, {masks} if masks else set()  # the masks folder is no defect type
    if masks is not None:
        mask_root = require_folder(root / masks, "the masks folder given by masks=")

    given = [(root / part).is_dir() for part in ("train", "test")]
    if any(given) and not all(given):
        present, missing = ("train", "test") if given[0] else ("test", "train")
        raise InputError(f"{root}: has {present}/ but no {missing}/ (a given split needs both)")
    if all(given):
        train_folder = root / "train" / nominal
        if not train_folder.is_dir() and list_images(root / "train"):
            train_folder = root / "train"
        train = _nominal(train_folder, "nominal training images", "train")
        test_root = root / "test"
        has_nominal_test = (test_root / nominal).is_dir()
        test = _nominal(test_root / nominal, "nominal test images", "test") if has_nominal_test else []
        test += _anomalous(test_root, nominal, not_defects, mask_root)
    else:
        pool = _nominal(root / nominal, f"nominal images (nominal={nominal!r})", nominal)
        n_test = fraction_to_count(test_fraction, len(pool), str(root / nominal))
        in_test = set(np.random.default_rng(seed).choice(len(pool), size=n_test, replace=False).tolist())
        train = [s for i, s in enumerate(pool) if i not in in_test]
        test = [s for i, s in enumerate(pool) if i in in_test]
        test += _anomalous(root, nominal, not_defects, mask_root)
    return Split(name=f"folder/{root.name}", train=train, test=test, has_masks=mask_root is not None, root=root)
