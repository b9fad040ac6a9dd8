"""Writing the demo dataset: the MVTec AD layout, a manifest that decides reuse, an atomic build.

The result is written in the MVTec AD layout and read with :func:`patchcore_kit.data.load_mvtec`::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png      (0 / 255)
    <root>/demo_manifest.json                                 (parameters: decides cache reuse)

Everything follows from ``seed``: the same seed gives byte-identical PNG files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ...errors import InputError
from ...paths import default_demo_root
from .painters import DEFECT_TYPES, DEFECTS
from .tiles import _TEXTURES, DEMO_CATEGORIES, random_tile, texture_image

__all__ = ["GENERATOR_VERSION", "MANIFEST_NAME", "build_demo_dataset"]

# Bump when the generated images change for the same parameters: old caches are then rebuilt.
# 1: train tiles from the left 64 % of a photograph, test tiles from the rest.
# 2: train and test tiles from the two colours of a chessboard of interleaved stripes.
GENERATOR_VERSION = 2
MANIFEST_NAME = "demo_manifest.json"
_GENERATOR = "patchcore_kit.data.demo"  # marks a folder as ours to replace


def _image_rng(seed: int, category: str, part: int, index: int) -> np.random.Generator:
    """One generator per image, keyed by name rather than order: a category's images do not
    depend on which other categories are built, nor on the counts of the other parts."""
    return np.random.default_rng([seed, zlib.crc32(category.encode()), part, index])


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _write_category(folder: Path, category: str, parameters: dict, bar: tqdm) -> None:
    texture = texture_image(category)
    seed, size = parameters["seed"], parameters["image_size"]

    def tiles(part: int, count: int, region: str) -> Iterable[tuple[int, np.random.Generator, np.ndarray]]:
        for index in range(count):
            rng = _image_rng(seed, category, part, index)
            yield index, rng, random_tile(texture, rng, size, region)

    nominal = [("train", 0, parameters["n_train"], "train"), ("test", 1, parameters["n_test_good"], "test")]
    for subset, part, count, region in nominal:
        target = folder / subset / "good"
        target.mkdir(parents=True)
        for index, _, tile in tiles(part, count, region):
            _save_png(tile, target / f"{index:03d}.png")
            bar.update()

    for offset, defect_type in enumerate(parameters["defect_types"]):
        images, masks = folder / "test" / defect_type, folder / "ground_truth" / defect_type
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        add_defect = DEFECTS[defect_type]
        for index, rng, tile in tiles(2 + offset, parameters["n_test_per_defect"], "test"):
            defected, mask = add_defect(tile, rng)
            _save_png(defected, images / f"{index:03d}.png")
            _save_png(mask.astype(np.uint8) * 255, masks / f"{index:03d}_mask.png")
            bar.update()


def _read_manifest(root: Path) -> dict | None:
    """The manifest of a demo build at ``root``, or None when there is none (or not ours)."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == _GENERATOR else None


def _is_complete(root: Path, parameters: dict, categories: tuple[str, ...]) -> bool:
    """True when ``root`` holds a demo build with these parameters and all wanted categories."""
    manifest = _read_manifest(root)
    if manifest is None or manifest.get("parameters") != parameters:
        return False
    if not set(categories) <= set(manifest.get("categories", [])):
        return False
    expected = {"train/good": parameters["n_train"], "test/good": parameters["n_test_good"]}
    for defect_type in parameters["defect_types"]:
        for subfolder in ("test", "ground_truth"):
            expected[f"{subfolder}/{defect_type}"] = parameters["n_test_per_defect"]
    for category in categories:
        for subfolder, count in expected.items():
            folder = root / category / subfolder
            if not folder.is_dir() or len(list(folder.glob("*.png"))) != count:
                return False
    return True


def _check_arguments(root: Path, categories: tuple[str, ...], counts: dict, image_size: int, seed: int) -> None:
    unknown = [c for c in categories if c not in _TEXTURES]
    if unknown or not categories:
        choices = ", ".join(DEMO_CATEGORIES)
        raise InputError(f"{root}: unknown demo categories {unknown}; choose from {choices}")
    for name, value in counts.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{root}: {name} must be a positive integer, got {value!r}")
    if not isinstance(image_size, (int, np.integer)) or not 32 <= image_size <= 1024:
        raise InputError(f"{root}: image_size must be an integer between 32 and 1024, got {image_size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{root}: seed must be a non-negative integer, got {seed!r}")


def build_demo_dataset(
    root: str | Path | None = None,
    categories: Iterable[str] = DEMO_CATEGORIES,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_per_defect: int = 4,
    image_size: int = 256,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the demo dataset in the MVTec AD layout under ``root`` (if needed) and return ``root``.

    Each category gets ``n_train`` training tiles, ``n_test_good`` nominal test tiles and
    ``n_test_per_defect`` tiles of each of the :data:`DEFECT_TYPES`, all ``image_size`` pixels
    square. An existing build is reused when its manifest shows the same parameters and
    generator version and it holds the wanted categories; ``force=True`` rebuilds regardless.
    The build goes to a temporary folder beside ``root`` and is renamed into place at the end, so
    an interrupted build never leaves half a dataset. A folder at ``root`` that is not a demo
    build is never touched.

    Example:
        >>> import tempfile
        >>> root = build_demo_dataset(Path(tempfile.mkdtemp()) / "demo", categories=("gravel",), n_train=2,
        ...                           n_test_good=1, n_test_per_defect=1, image_size=32, progress=False)
        >>> from patchcore_kit.data import load_mvtec
        >>> split = load_mvtec(root, "gravel")
        >>> len(split.train), len(split.test), split.has_masks   # 1 nominal + one of each of the 6 defects
        (2, 7, True)
    """
    root = Path(root).expanduser() if root is not None else default_demo_root()
    categories = tuple(dict.fromkeys(categories))  # unique, order kept
    counts = {"n_train": n_train, "n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect}
    _check_arguments(root, categories, counts, image_size, seed)
    parameters = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        **{name: int(value) for name, value in counts.items()},
        "defect_types": list(DEFECT_TYPES),
    }
    if not force and _is_complete(root, parameters, categories):
        return root
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder; choose another demo root")
    if root.is_dir() and any(root.iterdir()) and _read_manifest(root) is None:
        raise InputError(f"{root}: folder exists and is not a demo dataset (no {MANIFEST_NAME}); choose another root")

    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    building.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the dataset should not be
    try:
        total = len(categories) * (n_train + n_test_good + len(DEFECT_TYPES) * n_test_per_defect)
        with tqdm(total=total, desc=f"demo dataset -> {root}", unit="img", disable=not progress) as bar:
            for category in categories:
                bar.set_postfix_str(category)
                _write_category(building / category, category, parameters, bar)
        manifest = {
            "generator": _GENERATOR,
            "parameters": parameters,
            "categories": list(categories),
            "sources": {category: _TEXTURES[category][3] for category in categories},
        }
        # Written last: a folder with a manifest is a finished build.
        (building / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(building, root)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return root


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(building: Path, root: Path) -> None:
    """Replace ``root`` by the finished build; the old build (ours, checked) is removed afterwards."""
    if not root.exists():
        building.rename(root)
        return
    retired = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
    root.rename(retired)
    building.rename(root)
    shutil.rmtree(retired, ignore_errors=True)
