"""One cell of the sweep (fit, score, measure), and the one extraction pass that fills the cache.

:class:`SweepCells` holds what every cell of one sweep shares (the split, the extractor settings,
each method's parameters, the test masks). It is small and picklable, so the serial loop and a
Dask worker run a cell with the same code: ``cells.run(method, shots, seed)`` -> one results row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..base import EmbeddingScorer
from ..data import Split
from ..evaluate import Scored, fit_and_score
from ..features import FeatureExtractor
from ..images import as_hw
from .grid import METHODS, _unique
from .rows import measured
from .spade_table import SpadePairTable

#: One cell of the grid: (method, shots, seed).
Cell = tuple[str, int, int]


def evaluate_once(model, split: Split, masks: np.ndarray | None) -> dict:
    """Fit ``model`` on ``split.train``, score ``split.test``: metrics and seconds for one row.

    ``masks`` are :func:`~patchcore_kit.evaluate.ground_truth_masks` of the test set, read once
    for the whole sweep; the row is :func:`~patchcore_kit.evaluate.evaluate`'s, without the
    per-defect table.
    """
    return measured(fit_and_score(model, split, masks=masks, pixel=masks is not None))


def shared_extractor(settings: dict, layers, image_size, progress: bool = False) -> FeatureExtractor:
    """The :class:`FeatureExtractor` of one extraction pass (its ``layers`` and ``image_size``) from the
    sweep's shared settings (backbone, weights, device, batch_size, feature_cache)."""
    return FeatureExtractor(
        settings["backbone"],
        layers,
        image_size,
        weights=settings["weights"],
        device=settings["device"],
        batch_size=settings["batch_size"],
        cache_dir=settings["feature_cache"],
        progress=progress,
    )


def extraction_pass(images: list, settings: dict, progress: bool = True) -> dict:
    """Run the backbone once over ``images`` into the cache; how long it took and how much was new.

    ``settings`` are the shared extractor settings (backbone, layers, image_size, weights,
    device, batch_size, feature_cache). ``computed`` counts images that were not cached yet: the
    seconds are one real extraction pass only when ``computed == images``.
    """
    extractor = shared_extractor(settings, settings["layers"], settings["image_size"], progress)
    computed = sum(not extractor.is_cached(image) for image in images)
    start = time.perf_counter()
    for _ in extractor.iter_layer_maps(images, desc="features (one pass)"):
        pass
    return {"seconds": time.perf_counter() - start, "images": len(images), "computed": computed}


@dataclass
class SweepCells:
    """What every cell of one sweep shares; ``run`` computes one row from the feature cache.

    ``shared`` are the extractor settings every method gets (backbone, image_size, weights, device,
    batch_size, feature_cache), ``params`` each method's own (stages included), ``masks`` the
    test set's :func:`~patchcore_kit.evaluate.ground_truth_masks`, read once for the sweep.
    """

    split: Split
    shared: dict
    params: dict
    masks: dict | None  # test masks by image size (h, w): a method's own settings may choose its size
    #: The test embeddings of each method that scores embeddings (PatchCore, PaDiM), computed by its
    #: first cell run in this process and read by the others (not pickled: a Dask worker makes its own).
    _test_embeddings: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_test_embeddings": {}}

    def make(self, method: str, seed: int):
        return METHODS[method](**{**self.shared, **self.params[method]}, seed=seed, calibrate=False, progress=False)

    def masks_for(self, method: str):
        """The test masks at ``method``'s image size (None for a dataset without masks)."""
        return None if self.masks is None else self.masks[as_hw(self.make(method, 0).image_size)]

    def row(self, cell: Cell, measured: dict) -> dict:
        method, n, seed = cell
        return {"method": method, "shots": n, "full": n == len(self.split.train), "seed": seed, **measured}

    def run(self, cell: Cell) -> dict:
        """Fit the cell's method on its draw and score the test set: its results row."""
        return self.row(cell, measured(self.score(cell)))

    def score(self, cell: Cell) -> Scored:
        """The first half of :meth:`run`: the cell fitted and the test set scored, not measured yet
        (what :func:`evaluate_once` does before measuring)."""
        method, n, seed = cell
        masks = self.masks_for(method)
        return fit_and_score(self._model(cell), self.split.with_shots(n, seed), masks=masks, pixel=masks is not None)

    def _model(self, cell: Cell):
        """The cell's estimator, unfitted; PatchCore and PaDiM read the sweep's test embeddings when they fit."""
        method, _, seed = cell
        model = self.make(method, seed)
        if isinstance(model, EmbeddingScorer) and self._embeddings_fit(method, model):
            if method not in self._test_embeddings:
                self._test_embeddings[method] = model.embed_images(self.split.test_paths)
            model = _EmbeddedTestSet(model, self._test_embeddings[method], self.split.test_paths)
        return model

    def _embeddings_fit(self, method: str, model: EmbeddingScorer) -> bool:
        """Whether ``method``'s test embeddings, with those already kept, fit :data:`SHARED_EMBEDDINGS_BYTES`."""
        if method in self._test_embeddings:
            return True
        one = model.embed_images(self.split.test_paths[:1])  # its stage maps are cached: cheap
        kept = sum(e.numel() * e.element_size() for e in self._test_embeddings.values())
        return kept + one.numel() * one.element_size() * len(self.split.test) <= SHARED_EMBEDDINGS_BYTES

    def run_spade_with_table(self, cells: list[Cell]) -> tuple[list[dict], dict]:
        """SPADE's ``cells``, in order, from one :class:`SpadePairTable` over their draws; rows and its stats."""
        draws = [self.split.with_shots(n, seed) for _, n, seed in cells]
        table = SpadePairTable(self.make("spade", 0), self.split, _unique(p for d in draws for p in d.train_paths))
        rows = [self.row(cell, table.evaluate(drawn, self.masks_for("spade"))) for cell, drawn in zip(cells, draws)]
        return rows, table.stats


#: Most memory (bytes) a sweep's kept test-set embeddings may take, all methods together (MTD at 224 px:
#: PatchCore's and PaDiM's are 286 MB each); a method whose embeddings would not fit embeds in every cell.
SHARED_EMBEDDINGS_BYTES = 2 * 2**30


class _EmbeddedTestSet:
    """An :class:`~patchcore_kit.base.EmbeddingScorer` whose ``score_images`` scores the sweep's test
    embeddings (computed once) instead of embedding the test images again: what :meth:`SweepCells.score`
    fits and scores, same numbers."""

    def __init__(self, model, embeddings: torch.Tensor, test_paths: list):
        self.model, self.embeddings, self.image_size = model, embeddings, model.image_size
        self.test_paths = list(test_paths)

    def fit(self, train_paths: list):
        self.model.fit(train_paths)
        self.fit_seconds_ = self.model.fit_seconds_
        return self

    def score_images(self, images: list):
        assert list(images) == self.test_paths, "the embeddings are of this sweep's test set only"
        return self.model.score_embedded(self.embeddings)
