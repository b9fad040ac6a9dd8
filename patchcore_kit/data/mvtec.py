"""The MVTec AD layout: a given train/test split with pixel-level ground truth.

::

    <root>/<category>/train/good/000.png            nominal training images
    <root>/<category>/test/good/000.png             nominal test images (no mask: nothing is defective)
    <root>/<category>/test/<defect>/000.png         anomalous test images, one folder per defect type
    <root>/<category>/ground_truth/<defect>/000_mask.png

``root`` may also point at the category folder itself. Datasets in this layout without a
``ground_truth`` folder still load (``has_masks=False``): image-level metrics work, pixel-level
ones are reported as missing.

Example:
    >>> split = load_mvtec("data/mvtec", "bottle")   # doctest: +SKIP
    >>> split                                        # doctest: +SKIP
    Split(name='mvtec/bottle', train=209, test=20 nominal + 63 anomalous, has_masks=True)
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import Sample, Split, find_mask, list_subfolders, require_folder, require_images

NOMINAL = "good"


def mvtec_categories(root: str | Path) -> list[str]:
    """The category folders under ``root`` (those holding a ``train`` folder), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p.name for p in list_subfolders(root) if (p / "train").is_dir()]


def _category_folder(root: Path, category: str | None) -> Path:
    require_folder(root, "the MVTec AD root")
    is_category = (root / "train").is_dir()
    if category is None:
        if is_category:
            return root
        found = mvtec_categories(root)
        if len(found) == 1:
            return root / found[0]
        if not found:
            raise InputError(f"{root}: not an MVTec AD folder (expected <category>/train/good/ or train/good/)")
        raise InputError(f"{root}: holds several categories, choose one of: {', '.join(found)}")
    if (root / category / "train").is_dir():
        return root / category
    if is_category and root.name == category:
        return root
    found = mvtec_categories(root)
    choices = ", ".join(found) if found else "none found"
    raise InputError(f"{root}: unknown category {category!r}; available categories: {choices}")


def load_mvtec(root: str | Path, category: str | None = None) -> Split:
    """Load one MVTec AD category as a :class:`Split` (the official split, masks where present)."""
    root = Path(root).expanduser()
    folder = _category_folder(root, category)
    name = folder.name

    train = [
        Sample(path, 0, NOMINAL, None, f"train/{NOMINAL}/{path.stem}")
        for path in require_images(folder / "train" / NOMINAL, "nominal training images")
    ]

    test_folder = require_folder(folder / "test", "the test images")
    ground_truth = folder / "ground_truth"
    has_masks = ground_truth.is_dir()
    test: list[Sample] = []
    # Nominal test images first, then the defect types in name order: a fixed, readable order.
    defect_folders = sorted(list_subfolders(test_folder), key=lambda p: (p.name != NOMINAL, p.name))
    for defect_folder in defect_folders:
        defect_type = defect_folder.name
        label = int(defect_type != NOMINAL)
        for path in require_images(defect_folder, f"test images of type {defect_type!r}"):
            mask = find_mask(ground_truth / defect_type, path) if (label and has_masks) else None
            test.append(Sample(path, label, defect_type, mask, f"test/{defect_type}/{path.stem}"))
    if not test:
        raise InputError(f"{test_folder}: no test folders found (expected test/good/ and test/<defect>/)")
    return Split(name=f"mvtec/{name}", train=train, test=test, has_masks=has_masks, root=folder)
