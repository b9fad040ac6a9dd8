"""Validation anomalies for development folds, two ways.

* ``real`` — the dataset's own defective images, halved per defect type by whole groups (seeded):
  one half is scored in every fold, the other half is never looked at while tuning and, with the
  test split's nominal images, gives an honest figure for the chosen setting afterwards.
* ``synthetic`` — no real defect needed (the cold-start case PatchCore is for): every nominal pool
  image gets one defect painted on a copy of it by the demo generator's painters (scratch, hole,
  stain, Perlin patch, colour shift, missing chunk; :mod:`patchcore_kit.data.demo`), with its mask.
  A fold is scored on its own nominal images and their defected copies, so each paste is judged
  against the very image it was pasted on. Copies are written once (PNG, the source's size, so they
  pass through the same resizing as the nominal images) and reused by every candidate and on resume.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..atomic import atomic_path
from ..data.base import Sample, Split
from ..data.demo import DEFECT_TYPES, DEFECTS
from ..errors import InputError
from ..images import read_image

VALIDATIONS = ("real", "synthetic")
_MANIFEST = "synthetic.json"


def halve_by_group(samples: list[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """Two halves of whole groups, per defect type, seeded: (used for tuning, held out).

    With an odd number of groups the held-out half gets the extra one.
    """
    rng = np.random.default_rng(seed)
    first, second = [], []
    for defect in sorted({s.defect_type for s in samples}):
        groups = sorted({s.group for s in samples if s.defect_type == defect})
        chosen = set(rng.permutation(groups)[: len(groups) // 2])
        for s in samples:
            if s.defect_type == defect:
                (first if s.group in chosen else second).append(s)
    return first, second


def real_anomalies(split: Split, seed: int, where: str) -> tuple[list[Sample], list[Sample]]:
    """The defective half used for tuning (the same in every fold) and the held-out half."""
    defective = [s for s in split.test if s.label]
    if not defective:
        raise InputError(
            f"{where}: no defective images, so --validation real has nothing to validate on; use --validation synthetic"
        )
    used, held_out = halve_by_group(defective, seed)
    if not used:  # every defect type has a single object: halving leaves nothing to tune on
        raise InputError(
            f"{where}: too few defective images to halve for --validation real "
            f"({len(defective)} found); use --validation synthetic"
        )
    return used, held_out


def _image_rng(seed: int, name: str) -> np.random.Generator:
    """One generator per (seed, image): the same paste whatever else the pool holds or the order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def paint_one(image: np.ndarray, defect: str, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The painter ``defect`` applied to a uint8 RGB ``image``: (defected image, boolean mask)."""
    return DEFECTS[defect](image, _image_rng(seed, f"{defect}/{name}"))


def synthetic_plan(split: Split, seed: int) -> list[tuple[Sample, str, str]]:
    """Which defect each pool image gets, and the copy's file stem: types dealt out evenly, seeded."""
    n = len(split.train)
    order = np.random.default_rng(seed + 2000).permutation(n)
    plan = []
    for slot, index in enumerate(order):
        sample = split.train[index]
        plan.append((sample, DEFECT_TYPES[slot % len(DEFECT_TYPES)], f"{index:05d}_{sample.path.stem}"))
    return sorted(plan, key=lambda item: item[2])


def synthetic_anomalies(split: Split, folder: str | Path, seed: int, progress: bool = True) -> list[Sample]:
    """One defected copy of every pool image, written under ``folder`` (``<defect>/<stem>.png`` and
    ``masks/<defect>/<stem>.png``); returns them as anomalous samples in their source's group."""
    folder = Path(folder)
    manifest = {
        "seed": int(seed),
        "painters": list(DEFECT_TYPES),
        "pool": [split.relative(s.path) for s in split.train],
    }
    manifest_path = folder / _MANIFEST
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) != manifest:
        raise InputError(
            f"{folder}: holds synthetic anomalies of another pool or seed; remove it or choose another output folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest))
    samples = []
    for source, defect, stem in tqdm(
        synthetic_plan(split, seed), desc="synthetic anomalies", unit="img", disable=not progress, leave=False
    ):
        path, mask_path = folder / defect / f"{stem}.png", folder / "masks" / defect / f"{stem}.png"
        if not (path.is_file() and mask_path.is_file()):  # written last, so present means complete
            image = np.asarray(read_image(source.path))
            defected, mask = paint_one(image, defect, seed, stem)
            _save_png(mask.astype(np.uint8) * 255, mask_path)
            _save_png(defected, path)
        samples.append(Sample(path, 1, defect, mask_path, source.group))
    return samples


def _save_png(array: np.ndarray, path: Path) -> None:
    """Atomic: an interrupted tune never leaves a half-written image that a resume would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        # Fastest zlib level: the same pixels, ~3x quicker to write than Pillow's default (level 6)
        Image.fromarray(array).save(partial, format="PNG", compress_level=1)
