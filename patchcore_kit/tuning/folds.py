"""Development folds: the nominal training pool cut into k folds of whole groups.

Why folds: a setting's score on one small draw of nominal images moves by several hundredths from
draw to draw (docs/mtd_settings.md: ±0.03–0.05 between MTD folds), so one draw cannot separate
settings that differ by less. Every fold tests different images; the mean over k folds can.

Why whole groups: a group is one physical object (an MTD tile photographed at six exposures). If
its shots land on both sides of a fold, the memory bank holds a near copy of a test image and the
fold's figure is too kind — more so for some settings than others. Datasets that do not know their
groups (every image its own object) can be given a regular expression over the file name whose
first capture group (or whole match) names the object: ``--groups "^(part\\d+)_"``.

Only the training pool is ever cut: the test split's nominal images are never read while tuning.

>>> from pathlib import Path
>>> from patchcore_kit.data.base import Sample
>>> pool = [Sample(Path(f"t{i // 2}_{i % 2}.png"), 0, "good", None, f"t{i // 2}") for i in range(8)]
>>> [sorted({s.group for s in fold}) for fold in grouped_folds(pool, k=2, seed=0)]
[['t0', 't1'], ['t2', 't3']]
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ..data.base import Sample, Split
from ..errors import InputError

#: Folds by default: the MTD protocol's five (each fold a fifth of the pool's objects).
DEFAULT_FOLDS = 5


def regroup(samples: list[Sample], pattern: str, where: str) -> list[Sample]:
    """The samples with ``group`` taken from their file name by ``pattern`` (first group, else the match).

    Every file name must match: a file that does not would silently become an object of its own
    and could straddle a fold, which is exactly what grouping is for.
    """
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise InputError(f"{where}: --groups {pattern!r} is not a regular expression ({error})") from None
    out = []
    for sample in samples:
        match = regex.search(sample.path.name)
        if match is None:
            raise InputError(f"{sample.path}: file name does not match --groups {pattern!r}")
        out.append(dataclasses.replace(sample, group=match.group(1) if regex.groups else match.group(0)))
    return out


def fold_of_group(groups, k: int, seed: int) -> dict[str, int]:
    """Each group's fold: a seeded permutation of the sorted groups, dealt out like cards.

    The permutation uses ``seed + 1000`` so that it is a draw of its own, not the one that cut the
    dataset's train/test split (the MTD protocol; kept so that its folds reproduce exactly).
    """
    order = np.random.default_rng(seed + 1000).permutation(sorted(set(groups)))
    return {str(group): index % k for index, group in enumerate(order)}


def grouped_folds(
    pool: list[Sample], k: int = DEFAULT_FOLDS, seed: int = 0, where: str = "dataset"
) -> list[list[Sample]]:
    """Cut ``pool`` into ``k`` folds of whole groups (pool order kept inside each fold)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise InputError(f"{where}: the number of folds must be an integer of at least 2, got {k!r}")
    groups = {s.group for s in pool}
    if len(groups) < k:
        kind = "groups (objects)" if len(groups) < len(pool) else "nominal training images"
        raise InputError(
            f"{where}: {len(groups)} {kind} in the training pool, too few for {k} folds "
            f"(each fold needs at least one); use fewer folds"
        )
    fold = fold_of_group(groups, k, seed)
    return [[s for s in pool if fold[s.group] == index] for index in range(k)]


def development_split(
    split: Split,
    folds: list[list[Sample]],
    index: int,
    anomalies: list[Sample],
    shots: int | None = None,
    seed: int = 0,
) -> Split:
    """Fold ``index`` as a split: train on the other folds (``shots`` of them, seeded), test on this
    fold's nominal images plus ``anomalies``. Nothing of ``split.test`` enters but those anomalies."""
    held = {s.path for s in folds[index]}
    train = [s for s in split.train if s.path not in held]  # the pool's order: the same shots draw as before
    dev = dataclasses.replace(
        split, name=f"{split.name}/fold{index}", train=train, test=list(folds[index]) + list(anomalies)
    )
    return dev.with_shots(shots, seed=seed) if shots is not None else dev


def check_shots(split: Split, folds: list[list[Sample]], shots: int | None, where: str) -> None:
    """Every fold must leave ``shots`` training images (and at least one) in the other folds."""
    smallest = min(len(split.train) - len(fold) for fold in folds)
    if smallest < max(1, shots or 1):
        raise InputError(
            f"{where}: too few nominal images for {len(folds)} folds with --shots {shots}: the "
            f"other folds of one fold hold only {smallest}; use fewer shots or folds"
        )
