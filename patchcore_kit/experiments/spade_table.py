"""SPADE's rows of a sweep from one shared table of nearest distances (k = 1)."""

from __future__ import annotations

import numpy as np
import torch

from ..base import ScoredImages, upsample_and_smooth
from ..baselines import SPADE, nearest_images
from ..baselines.spade import cat_positions, take_images
from ..data import Split
from ..evaluate import evaluate
from .grid import _unique

#: Memory SPADE's shared pair table may take before the sweep scores SPADE row by row instead.
SPADE_TABLE_GB = 4.0


class SpadePairTable:
    """SPADE's rows of a sweep from one table of per-(test image, training image) nearest distances.

    With k = 1, SPADE's anomaly map of test image t against a training set S is, per position,
    ``min over n in K(t, S) of d(t, n)``, where ``d(t, n)`` ``(P,)`` is the distance of each of t's
    positions to its nearest position in training image n (:meth:`SPADE.pair_minima`) and
    ``K(t, S)`` the ``top_k_images`` images of S nearest to t by the global feature. ``d(t, n)``
    does not depend on S, so it is computed once, the first time a row needs the pair, and every
    later shot count and seed that picks image n for test image t reads it. Image scores, the
    choice of images and the maps are SPADE's own functions, so a row equals fitting
    :class:`~patchcore_kit.baselines.SPADE` on the draw and scoring the test set (tested).

    Memory: the table ``(T, N, P)`` float32 for T test images and the N pool images any SPADE row
    draws, plus the test images' pixel features ``(T, P, C)``. :meth:`for_sweep` returns None when
    that exceeds the budget, or when k > 1 (the per-image minima do not combine), and the sweep
    then scores SPADE row by row.
    """

    def __init__(self, model: SPADE, split: Split, pool: list, progress: bool = False):
        self.model, self.split, self.pool = model, split, list(pool)
        self.slot = {path: i for i, path in enumerate(self.pool)}
        extractor = model._extractor()
        test = [model.features(maps) for maps in extractor.iter_layer_maps(split.test_paths, desc="SPADE test")]
        self.test_global = torch.cat([g for g, _ in test])
        self.test_positions = cat_positions([p for _, p in test])  # (T, P, C), or one per layer
        self.pool_global = torch.cat([model.features(maps)[0] for maps in extractor.iter_layer_maps(self.pool)])
        self.shapes = model.pixel_shapes(extractor.layer_maps(split.test_paths[:1]))
        t, p = len(self.test_global), sum(h * w for h, w in self.shapes)
        self.table = torch.full((t, len(self.pool), p), float("nan"))
        self.known = torch.zeros(t, len(self.pool), dtype=torch.bool)
        self.stats = {
            "used": True,
            "test_images": t,
            "pool_images": len(self.pool),
            "positions": p,
            "table_bytes": self.table.numel() * 4,
            "pairs_computed": 0,
            "pairs_read": 0,
        }

    @staticmethod
    def needed_bytes(test_images: int, pool_images: int, positions: int, channels: int) -> int:
        """The table plus the test images' pixel features, float32."""
        return 4 * test_images * positions * (pool_images + channels)

    @classmethod
    def for_sweep(cls, model: SPADE, split: Split, draws: list[list], budget_gb: float) -> SpadePairTable | None:
        if not cls.fits(model, split, draws, budget_gb):
            return None
        return cls(model, split, _unique(p for draw in draws for p in draw))

    @classmethod
    def fits(cls, model: SPADE, split: Split, draws: list[list], budget_gb: float) -> bool:
        """Whether :meth:`for_sweep` builds a table for ``draws`` (k = 1 and within the budget)."""
        if model.k != 1 or budget_gb <= 0:
            return False
        pool = _unique(p for draw in draws for p in draw)
        probe = model._extractor().layer_maps(split.test_paths[:1])
        _, positions = model.features(probe)
        layers = [positions] if isinstance(positions, torch.Tensor) else positions
        need = cls.needed_bytes(
            len(split.test), len(pool), sum(x.shape[1] for x in layers), max(x.shape[2] for x in layers)
        )
        return need <= budget_gb * 2**30

    def _fill(self, wanted: torch.Tensor) -> None:
        """Compute the missing pairs of ``wanted`` ``(T, N)`` (bool), one training image at a time."""
        missing = wanted & ~self.known
        images = torch.nonzero(missing.any(0)).flatten().tolist()
        extractor = self.model._extractor()
        for start in range(0, len(images), extractor.batch_size):
            chunk = images[start : start + extractor.batch_size]
            maps = next(iter(extractor.iter_layer_maps([self.pool[n] for n in chunk])))
            _, positions = self.model.features(maps)  # (b, P, C)
            for slot, n in enumerate(chunk):
                tests = torch.nonzero(missing[:, n]).flatten()
                distances = self.model.pair_minima(
                    take_images(self.test_positions, tests), take_images(positions, slice(slot, slot + 1))
                )
                self.table[tests, n] = distances[:, 0]
                self.known[tests, n] = True
                self.stats["pairs_computed"] += len(tests)

    def scores(self, train_paths: list) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(T,)`` and anomaly maps ``(T, H, W)`` of SPADE fitted on ``train_paths``."""
        members = torch.tensor([self.slot[path] for path in train_paths])
        nearest_d, nearest_i = nearest_images(self.test_global, self.pool_global[members], self.model.top_k_images)
        chosen = members[nearest_i]  # (T, K) pool slots
        wanted = torch.zeros_like(self.known)
        wanted.scatter_(1, chosen, True)
        self.stats["pairs_read"] += int(wanted.sum())
        self._fill(wanted)
        rows = torch.arange(len(chosen))[:, None]
        grids = self.model.grid_from_minima(self.table[rows, chosen].min(dim=1).values, self.shapes)  # (T, h, w)
        maps = upsample_and_smooth(grids, self.model.image_size)
        return nearest_d.mean(dim=1).numpy().astype(np.float64), maps

    def evaluate(self, split: Split, masks: np.ndarray | None) -> dict:
        """Like :func:`~patchcore_kit.experiments.cell.evaluate_once` for SPADE fitted on ``split.train``.

        ``fit_s`` is ~0 (the pool's features are read once for all rows); ``infer_s`` includes the
        pairs this row computes first, so later rows, which read more pairs, are cheaper. The row
        is measured by :func:`~patchcore_kit.evaluate.evaluate`, the kit's one evaluation loop.
        """
        result = evaluate(_TableSPADE(self), split, masks=masks, pixel=masks is not None, per_defect=False)
        return {**result.metrics, "fit_s": result.seconds["fit"], "infer_s": result.seconds["infer"]}


class _TableSPADE:
    """SPADE "fitted" by remembering its training images, scored from a :class:`SpadePairTable`.

    It has what :func:`~patchcore_kit.evaluate.evaluate` calls (``fit``, ``score_images``,
    ``image_size``), so the table's rows are measured by the one evaluation loop.
    """

    def __init__(self, table: SpadePairTable):
        self.table, self.image_size, self.fit_seconds_ = table, table.model.image_size, {}

    def fit(self, train_paths: list) -> _TableSPADE:
        self.train_paths_ = list(train_paths)
        return self

    def score_images(self, images: list) -> ScoredImages:
        assert list(images) == list(self.table.split.test_paths), "the table holds this split's test set only"
        return ScoredImages(*self.table.scores(self.train_paths_))
