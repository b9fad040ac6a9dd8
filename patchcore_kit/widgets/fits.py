"""Memoised PatchCore fits on cached features, each with its test set scored once.

An explorer's controls ask for the same fits again and again: :class:`MemoisedFits` fits each
combination of settings once (from the feature cache: no backbone pass after the first) and
scores the test set once per fit, keeping for every image the distances of its worst patch to
its ``max_neighbors`` nearest bank entries. Eq. 7 for any b up to that reads a prefix of them
(:func:`~patchcore_kit.patchcore.image_scores_for`), so changing b is arithmetic on stored numbers,
not a new search.

>>> fits = MemoisedFits(split, image_size=224, feature_cache="data/feature_cache")   # doctest: +SKIP
>>> scores, maps = fits.result(coreset_ratio=0.1, num_neighbors=9)                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data import Split
from ..patchcore import PatchCore, image_scores_for


class MemoisedFits:
    """PatchCore fits of ``split``'s training images, one per combination of settings, and their test scores.

    ``patchcore_params`` are the fits' own PatchCore parameters; extra settings (``patch_size``,
    ``layers``, ...) go into :meth:`model` / :meth:`result` as keywords, and each combination is
    fitted once.
    """

    def __init__(self, split: Split, max_neighbors: int = 9, **patchcore_params):
        self.split = split
        self.params = {"calibrate": False, **patchcore_params}
        self.max_neighbors = max_neighbors
        self._models: dict = {}
        self._scored: dict = {}
        self._scores: dict = {}  # per fit and b: Eq. 7 image scores, computed once

    @property
    def calibrated(self) -> bool:
        return bool(self.params.get("calibrate"))

    def _settings(self, settings: dict) -> dict:
        """The settings that differ from the state's own PatchCore parameters (lists as tuples)."""
        base = PatchCore(**self.params).get_params()
        norm = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if v is not None}
        same = {
            k
            for k, v in norm.items()
            if k in base and (tuple(base[k]) if isinstance(base[k], (list, tuple)) else base[k]) == v
        }
        return {k: v for k, v in norm.items() if k not in same}

    def _key(self, coreset_ratio: float, settings: dict) -> tuple:
        return (coreset_ratio,) + tuple(sorted(self._settings(settings).items()))

    def model(self, coreset_ratio: float, **settings) -> PatchCore:
        key = self._key(coreset_ratio, settings)
        if key not in self._models:
            model = PatchCore(**{**self.params, **self._settings(settings), "coreset_ratio": coreset_ratio})
            self._models[key] = model.fit(self.split.train_paths)
        return self._models[key]

    def neighbors(self, coreset_ratio: float, num_neighbors: int = 1, **settings):
        """``(s*, neighbour distances, maps)`` of the test set for this fit; scored once per fit."""
        key = self._key(coreset_ratio, settings)
        stored = self._scored.get(key)
        model = self.model(coreset_ratio, **settings)
        wanted = min(max(int(num_neighbors), 1), len(model.memory_bank_))
        if stored is None or stored[1].shape[1] < wanted:
            stored = model.score_neighbors(self.split.test_paths, max(num_neighbors, self.max_neighbors))
            self._scored[key] = stored
        return stored

    def result(self, coreset_ratio: float, num_neighbors: int, **settings) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(N,)`` and anomaly maps ``(N, H, W)`` of the test set under these settings.

        The scores of each fit and b are computed once and kept (read-only: copy before changing them).
        """
        s_star, distances, maps = self.neighbors(coreset_ratio, num_neighbors, **settings)
        key = (self._key(coreset_ratio, settings), num_neighbors, distances.shape)
        if key not in self._scores:
            scores = image_scores_for(s_star, distances, num_neighbors)
            scores.flags.writeable = False
            self._scores[key] = scores
        return self._scores[key], maps

    def warm(self, ratios: Sequence[float], num_neighbors: Sequence[int], **settings):
        """Fit every ratio and score every b up front, so that the controls then respond at once."""
        self.max_neighbors = max([self.max_neighbors, *num_neighbors])
        for ratio in ratios:
            for k in num_neighbors:
                self.result(ratio, k, **settings)
        return self
