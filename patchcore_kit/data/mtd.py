"""Magnetic Tile Defects (MTD) in its original layout, split by *tile* so no tile leaks into training.

Layout (the public repository abin24/Magnetic-tile-defect-datasets.)::

    <root>/MT_Free/Imgs/exp1_num_10181.jpg      nominal image
    <root>/MT_Free/Imgs/exp1_num_10181.png      its mask (empty for every MT_Free image)
    <root>/MT_Blowhole/Imgs/...                 defect classes: Blowhole, Break, Crack, Fray, Uneven

Every ``MT_<Class>`` folder other than ``MT_Free`` is a defect type, named by its lowercased class
(``MT_Blowhole`` -> ``"blowhole"``). A few defect masks are empty; those images stay in the test
set, anomalous at image level.

**Tile groups.** The same physical tile was photographed at several exposures, and the file names
``exp<K>_num_<N>`` give the exposure ``K`` and a running number ``N`` that stays close for shots of
one tile. Within one class folder the images are sorted by ``N`` and a new group starts whenever
``N`` jumps by more than :data:`TILE_GAP` (200) from the previous image. On the released data this
gives 150 groups in MT_Free, most of them six images with six different exposures. When the shots
of two tiles interleave, they end up in one group: merging tiles is harmless (both go to the same
side), splitting one would leak. Files whose name does not follow the pattern form a group each.

**Protocol.** MTD has no official split. A seeded ``test_fraction`` (20 %) of the nominal *groups*
goes to the test set together with every defective image; the other nominal images form the
training pool. No group has images on both sides.

Example:
    >>> split = load_mtd("../shared/data/mtd", seed=0)   # doctest: +SKIP
    >>> split                                            # doctest: +SKIP
    Split(name='mtd', train=743, test=209 nominal + 392 anomalous, has_masks=True)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import Sample, Split, fraction_to_count, is_image_file, list_subfolders, require_folder

NOMINAL_CLASS = "MT_Free"
#: A new tile starts when the running number jumps by more than this (checked on the real data).
TILE_GAP = 200
_NAME = re.compile(r"exp(\d+)_num_(\d+)", re.IGNORECASE)


def defect_type_of(class_folder: str) -> str:
    """``"MT_Blowhole"`` -> ``"blowhole"``; ``"MT_Free"`` -> ``"good"``."""
    if class_folder == NOMINAL_CLASS:
        return "good"
    return class_folder[3:].lower() if class_folder.startswith("MT_") else class_folder.lower()


def tile_groups(stems: list[str], prefix: str, gap: int = TILE_GAP) -> dict[str, str]:
    """Map each file stem of one class folder to its tile group id, e.g. ``"free/0007"``.

    Example:
        >>> tile_groups(["exp1_num_10", "exp2_num_40", "exp1_num_900", "odd"], "free")
        {'exp1_num_10': 'free/0000', 'exp2_num_40': 'free/0000', 'exp1_num_900': 'free/0001', 'odd': 'free/name-odd'}
    """
    numbered = []
    groups: dict[str, str] = {}
    for stem in stems:
        match = _NAME.fullmatch(stem)
        if match:
            numbered.append((int(match.group(2)), stem))
        else:
            groups[stem] = f"{prefix}/name-{stem}"  # unknown naming: its own group, never merged
    index, previous = -1, None
    for number, stem in sorted(numbered):
        if previous is None or number - previous > gap:
            index += 1
        groups[stem] = f"{prefix}/{index:04d}"
        previous = number
    return {stem: groups[stem] for stem in stems}  # in the order given


def _find_root(root: Path) -> Path:
    """``root`` itself, or the single folder inside it holding ``MT_Free`` (an unpacked GitHub zip)."""
    require_folder(root, "the MTD root")
    if (root / NOMINAL_CLASS).is_dir():
        return root
    inner = [p for p in list_subfolders(root) if (p / NOMINAL_CLASS).is_dir()]
    if len(inner) == 1:
        return inner[0]
    raise InputError(f"{root}: no {NOMINAL_CLASS} folder found (expected the MTD layout MT_<Class>/Imgs/)")


def _class_samples(class_folder: Path) -> list[Sample]:
    """All images of one ``MT_<Class>`` folder, with masks and tile groups."""
    images_folder = class_folder / "Imgs"
    if not images_folder.is_dir():
        images_folder = class_folder  # tolerate a flattened copy without the Imgs level
    # Images are the non-PNG files; the PNG with the same stem beside each one is its mask.
    images = sorted(p for p in images_folder.iterdir() if is_image_file(p) and p.suffix.lower() != ".png")
    defect_type = defect_type_of(class_folder.name)
    label = int(defect_type != "good")
    groups = tile_groups([p.stem for p in images], prefix=defect_type)
    samples = []
    for path in images:
        mask = None
        if label:
            mask = path.with_suffix(".png")
            if not mask.is_file():
                raise InputError(f"{mask}: missing ground-truth mask for {path}")
        samples.append(Sample(path, label, defect_type, mask, groups[path.stem]))
    return samples


def load_mtd(root: str | Path, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Load MTD and split it by tile: ``test_fraction`` of the nominal tiles plus all defects to test."""
    root = _find_root(Path(root).expanduser())
    class_folders = [p for p in list_subfolders(root) if p.name.startswith("MT_")]
    nominal = _class_samples(root / NOMINAL_CLASS)
    if not nominal:
        raise InputError(f"{root / NOMINAL_CLASS}: no images found")
    defective = [s for folder in class_folders if folder.name != NOMINAL_CLASS for s in _class_samples(folder)]
    if not defective:
        raise InputError(f"{root}: no defect classes found (expected MT_Blowhole/, MT_Crack/, ...)")

    group_ids = sorted({s.group for s in nominal})
    n_test = fraction_to_count(test_fraction, len(group_ids), str(root))
    rng = np.random.default_rng(seed)
    test_groups = {group_ids[i] for i in rng.choice(len(group_ids), size=n_test, replace=False)}

    train = [s for s in nominal if s.group not in test_groups]
    test = [s for s in nominal if s.group in test_groups] + defective
    return Split(name="mtd", train=train, test=test, has_masks=True, root=root)
