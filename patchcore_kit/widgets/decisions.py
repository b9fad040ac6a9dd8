"""Notebook 05's decisions: a scored test set judged at thresholds chosen on nominal images only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data import Split
from ..evaluate import ground_truth_masks
from ..images import as_hw, display_image
from ..patchcore import PatchCore
from ..thresholds import budget_threshold, decision_counts
from ..viz import plot_gallery


@dataclass
class DecisionState:
    """A scored test set and what the threshold may be chosen from: nominal calibration scores only.

    ``calibration_scores`` are image scores of nominal images the model did not contain (e.g. a
    PatchCore's leave-one-out ``calibration_scores_``); ``pixel_threshold`` the model's
    ``pixel_threshold_``. Thresholds come from these alone (:meth:`threshold`); the test set is
    only judged by them.
    """

    images: np.ndarray
    masks: np.ndarray | None
    labels: np.ndarray
    defect_types: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    calibration_scores: np.ndarray
    pixel_threshold: float

    @classmethod
    def from_model(cls, model: PatchCore, split: Split) -> DecisionState:
        """Score ``split``'s test set with a *calibrated* ``model``."""
        if getattr(model, "calibration_scores_", None) is None:
            raise ValueError("the model has no calibration scores: fit it with calibrate=True and >= 2 images")
        size = as_hw(model.image_size)
        scores, maps = model.score_images(split.test_paths)
        images = np.stack([display_image(path, size) for path in split.test_paths])
        return cls(
            images,
            ground_truth_masks(split, size),
            split.test_labels,
            np.asarray(split.test_defect_types, dtype=str),
            scores,
            maps,
            np.asarray(model.calibration_scores_),
            float(model.pixel_threshold_),
        )

    def threshold(self, budget: float) -> float:
        """The image threshold that flags at most ``budget`` of the nominal calibration images."""
        return budget_threshold(self.calibration_scores, budget)


def decision_table(state: DecisionState, budgets: Sequence[float]) -> pd.DataFrame:
    """One row per false-alarm budget: its threshold and what it decides on the test set."""
    rows = [{"budget": b, **decision_counts(state.scores, state.labels, state.threshold(b))} for b in budgets]
    return pd.DataFrame(rows).set_index("budget")


def render_errors(state: DecisionState, budget: float = 0.05, kind: str = "misses", max_images: int = 4) -> Figure:
    """The worst errors at the threshold of ``budget``: missed defects (lowest scores first) or false alarms
    (highest first), as a gallery with heat maps in units of the nominal pixel threshold."""
    threshold = state.threshold(budget)
    if kind == "misses":
        chosen = np.flatnonzero((state.labels == 1) & (state.scores <= threshold))
        chosen = chosen[np.argsort(state.scores[chosen])]
        word = "missed"
    elif kind == "false alarms":
        chosen = np.flatnonzero((state.labels == 0) & (state.scores > threshold))
        chosen = chosen[np.argsort(-state.scores[chosen])]
        word = "false alarm"
    else:
        raise ValueError(f"kind must be 'misses' or 'false alarms', got {kind!r}")
    chosen = chosen[:max_images]
    if len(chosen) == 0:
        figure = Figure(figsize=(6, 1.2))
        ax = figure.add_subplot()  # an axes, so that notebooks show the figure (IPython skips empty ones)
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            f"no {kind} at budget {budget:g} (image threshold {threshold:.2f})",
            ha="center",
            va="center",
            fontsize=11,
            transform=ax.transAxes,
        )
        return figure
    maps = state.maps[chosen] / state.pixel_threshold
    titles = [f"{word}: {state.defect_types[i]}\nscore {state.scores[i]:.2f} vs {threshold:.2f}" for i in chosen]
    masks = None if state.masks is None else state.masks[chosen]
    return plot_gallery(
        state.images[chosen],
        masks,
        maps,
        thresholded=maps > 1.0,
        titles=titles,
        vmin=0.0,
        vmax=2.0,
        panel_size=2.4,
        colorbar_label="anomaly score / nominal pixel threshold",
        threshold=1.0,
    )
