"""Choosing PatchCore's settings for a new dataset without its test set (``patchcore-kit tune``).

The protocol of ``scripts/mtd_settings.py``, for any dataset: the nominal training pool is cut into
k folds of whole objects (:mod:`.folds`), every candidate of a grid (:mod:`.grid`) is fitted on the
other folds and scored on each fold's nominal images plus validation anomalies — half of the real
defective images, or defects painted on the fold's own images (:mod:`.validation`) — and the best
mean wins (:mod:`.run`). ``method`` picks the estimator tuned (PatchCore, PaDiM or SPADE, each with
its own grid keys and default grid). ``settings.json`` feeds ``PatchCore(**load_settings(path))`` and
``patchcore-kit evaluate/fit/sweep --settings`` (:mod:`.settings`).

The package is ``tuning`` rather than ``tune`` so that ``patchcore_kit.tune`` can be the function:
a sub-package of that name would replace it as an attribute as soon as it is imported.

>>> from patchcore_kit import tune                                               # doctest: +SKIP
>>> settings = tune("../shared/data/mtd", "mtd", shots=100, output="runs/tune_mtd")  # doctest: +SKIP
"""

from .folds import DEFAULT_FOLDS, grouped_folds, regroup
from .grid import DEFAULT_GRID, load_grid
from .run import tune
from .settings import estimator_from_settings, load_settings, read_settings
from .validation import halve_by_group, real_anomalies, synthetic_anomalies

__all__ = [
    "DEFAULT_FOLDS",
    "DEFAULT_GRID",
    "estimator_from_settings",
    "grouped_folds",
    "halve_by_group",
    "load_grid",
    "load_settings",
    "read_settings",
    "real_anomalies",
    "regroup",
    "synthetic_anomalies",
    "tune",
]
