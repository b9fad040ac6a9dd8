"""From anomaly scores to decisions, with thresholds chosen on nominal data only.

A score is not a decision: a line needs "reject this part" or "pass it". The threshold must come
from data the model may look at while it is built, which in cold-start anomaly detection means
*nominal images only*. Choosing it on the test set (for example a fraction of the test set's
largest score) uses the very images it is judged on, and the defects among them: a leak that
makes the threshold look better than it will be on the line.

* :func:`quantile_threshold` — a high quantile of nominal scores (what ``predict`` uses, on
  leave-one-out scores of the training images);
* :func:`budget_threshold` — the lowest threshold that flags at most a given fraction of the
  nominal images (a false-alarm budget, e.g. one part in a hundred sent to a human);
* :func:`decision_counts` — what a threshold costs on a labelled set: missed defects and false alarms.

>>> nominal = np.array([1.0, 1.2, 1.1, 1.3, 1.25])
>>> budget_threshold(nominal, 0.2)        # at most one of five nominal images above it
1.25
>>> decision_counts([1.1, 1.4, 2.0], [0, 1, 1], threshold=1.25)["missed"]
0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError

__all__ = ["quantile_threshold", "budget_threshold", "decision_counts"]


def _nominal(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise InputError("nominal scores: none given; a threshold needs nominal images")
    if not np.isfinite(scores).all():
        raise InputError("nominal scores: contain NaN or infinite values")
    return scores


def quantile_threshold(nominal_scores: Sequence[float], quantile: float = 0.99) -> float:
    """The ``quantile`` of the nominal scores (linear interpolation, as ``np.quantile``)."""
    if not 0.0 <= quantile <= 1.0:
        raise InputError(f"quantile: expected a number in [0, 1], got {quantile}")
    return float(np.quantile(_nominal(nominal_scores), quantile))


def budget_threshold(nominal_scores: Sequence[float], max_false_alarm_rate: float = 0.01) -> float:
    """The lowest threshold with at most ``max_false_alarm_rate`` of the nominal scores above it.

    A score is flagged when it is *above* the threshold. With ``n`` nominal scores, at most
    ``floor(rate * n)`` may be above: the threshold is the score just below them. A budget smaller
    than ``1 / n`` allows none, so the threshold is the largest nominal score; with few nominal
    images a budget cannot be finer than ``1 / n``.
    """
    if not 0.0 <= max_false_alarm_rate <= 1.0:
        raise InputError(f"max_false_alarm_rate: expected a number in [0, 1], got {max_false_alarm_rate}")
    scores = np.sort(_nominal(nominal_scores))[::-1]
    allowed = int(np.floor(max_false_alarm_rate * len(scores) + 1e-9))
    return float(scores[min(allowed, len(scores) - 1)])


def decision_counts(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict:
    """What ``score > threshold`` decides on a labelled set (1 = defective).

    Returns counts (``flagged``, ``missed`` defects, ``false_alarms``, and the class sizes) and the
    rates ``miss_rate`` (missed / defective) and ``false_alarm_rate`` (false alarms / nominal);
    a rate is ``None`` when its class is empty.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise InputError(f"scores, labels: expected two 1-D arrays of one length, got {scores.shape}, {labels.shape}")
    flagged = scores > threshold
    defective, nominal = labels == 1, labels == 0
    missed = int(np.count_nonzero(defective & ~flagged))
    false_alarms = int(np.count_nonzero(nominal & flagged))
    n_defective, n_nominal = int(defective.sum()), int(nominal.sum())
    return {
        "threshold": float(threshold),
        "flagged": int(flagged.sum()),
        "defective": n_defective,
        "nominal": n_nominal,
        "missed": missed,
        "false_alarms": false_alarms,
        "miss_rate": missed / n_defective if n_defective else None,
        "false_alarm_rate": false_alarms / n_nominal if n_nominal else None,
    }
