"""SPADE's rows of a sweep from one shared table of nearest distances (k = 1)."""

from __future__ import annotations

import numpy as np
import torch

from ..base import ScoredImages, upsample_and_smooth
from ..baselines import SPADE, nearest_images
from ..baselines.common import squared_norms
from ..baselines.spade import cat_positions, take_images
from ..data import Split
from ..evaluate import Scored, fit_and_score
from .grid import _unique
from .rows import measured

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

    Memory: only the pairs some row reads are stored, ``P`` float32 each (``slot_of`` ``(T, N)``
    says where a pair's row is, -1 before it is computed), plus the test images' pixel features
    ``(T, P, C)``. A pool of N images would take ``T × N × P`` as a dense table; a sweep reads far
    fewer pairs, because each row picks only ``top_k_images`` of its draw per test image (MTD, shots
    up to 50 and the full pool of 743, three seeds: about a quarter of them). :meth:`for_sweep`
    counts the pairs the draws will read, exactly, before any pixel feature is loaded, and returns
    None when they exceed the budget, or when k > 1 (the per-image minima do not combine); the
    sweep then scores SPADE row by row.
    """

    def __init__(self, model: SPADE, split: Split, pool: list, progress: bool = False, positions: bool = True):
        self.model, self.split, self.pool = model, split, list(pool)
        self.slot = {path: i for i, path in enumerate(self.pool)}
        extractor = model._extractor()
        self.test_global = self._global_features(split.test_paths)
        self.pool_global = self._global_features(self.pool)
        self.shapes = model.pixel_shapes(extractor.layer_maps(split.test_paths[:1]))
        t, p = len(self.test_global), sum(h * w for h, w in self.shapes)
        self.slot_of = torch.full((t, len(self.pool)), -1, dtype=torch.long)
        self.rows = torch.empty(0, p)  # one row per computed pair, in the order they were computed
        self.n_rows = 0
        self.test_positions = self.test_norms = None
        self.stats = {
            "used": True,
            "test_images": t,
            "pool_images": len(self.pool),
            "positions": p,
            "table_bytes": 0,
            "pairs_computed": 0,
            "pairs_read": 0,
        }
        if positions:
            self.load_test_positions()

    def _global_features(self, paths: list) -> torch.Tensor:
        return torch.cat([self.model.features(maps)[0] for maps in self.model._extractor().iter_layer_maps(paths)])

    def load_test_positions(self) -> None:
        """The test images' pixel features ``(T, P, C)`` (one per layer with "per_layer"): the queries."""
        parts = [
            self.model.features(maps)[1]
            for maps in self.model._extractor().iter_layer_maps(self.split.test_paths, desc="SPADE test")
        ]
        self.test_positions = cat_positions(parts)
        # |q|² of every test position, once: each training image's search needs them again
        positions = self.test_positions
        self.test_norms = (
            squared_norms(positions) if isinstance(positions, torch.Tensor) else tuple(map(squared_norms, positions))
        )

    def chosen(self, train_paths: list) -> tuple[torch.Tensor, torch.Tensor]:
        """For SPADE fitted on ``train_paths``: distances ``(T, K)`` to the K nearest training images by
        the global feature, and those images' pool slots ``(T, K)``."""
        members = torch.tensor([self.slot[path] for path in train_paths])
        nearest_d, nearest_i = nearest_images(self.test_global, self.pool_global[members], self.model.top_k_images)
        return nearest_d, members[nearest_i]

    def _wanted(self, picks: list[torch.Tensor]) -> torch.Tensor:
        """``(T, N)`` bool: the pairs that ``(T, K)`` pool slots (one tensor per row) read."""
        wanted = torch.zeros(self.slot_of.shape, dtype=torch.bool)
        for chosen in picks:
            wanted.scatter_(1, chosen, True)
        return wanted

    def pairs_needed(self, draws: list[list]) -> torch.Tensor:
        """``(T, N)`` bool: the (test image, pool image) pairs the rows of ``draws`` read."""
        return self._wanted([self.chosen(draw)[1] for draw in draws])

    def needed_bytes(self, n_pairs: int) -> int:
        """What ``n_pairs`` rows of the table and the test images' pixel features take, float32."""
        probe = self.model.features(self.model._extractor().layer_maps(self.split.test_paths[:1]))[1]
        layers = [probe] if isinstance(probe, torch.Tensor) else probe
        channels = max(x.shape[2] for x in layers)
        return 4 * self.stats["positions"] * (n_pairs + self.stats["test_images"] * channels)

    @classmethod
    def _plan(cls, model: SPADE, split: Split, draws: list[list], budget_gb: float):
        """The table without its pixel features yet, and the number of pairs ``draws`` read; None
        for k > 1 or when they exceed the budget. The pairs are counted once, here."""
        if model.k != 1 or budget_gb <= 0:
            return None
        table = cls(model, split, _unique(p for draw in draws for p in draw), positions=False)
        n_pairs = int(table.pairs_needed(draws).sum())
        return None if table.needed_bytes(n_pairs) > budget_gb * 2**30 else (table, n_pairs)

    @classmethod
    def for_sweep(cls, model: SPADE, split: Split, draws: list[list], budget_gb: float) -> SpadePairTable | None:
        """A table for the rows of ``draws``, with room for their pairs; None for k > 1 or over the budget."""
        plan = cls._plan(model, split, draws, budget_gb)
        if plan is None:
            return None
        table, n_pairs = plan
        table.reserve(n_pairs)
        table.load_test_positions()
        return table

    @classmethod
    def fits(cls, model: SPADE, split: Split, draws: list[list], budget_gb: float) -> bool:
        """Whether :meth:`for_sweep` builds a table for ``draws`` (k = 1 and within the budget)."""
        return cls._plan(model, split, draws, budget_gb) is not None

    def reserve(self, n_pairs: int) -> None:
        """Room for ``n_pairs`` rows in all (grown by a quarter more than asked, so that many small
        requests do not copy the table many times)."""
        if n_pairs <= len(self.rows):
            return
        grown = torch.empty(max(n_pairs, len(self.rows) + len(self.rows) // 4), self.rows.shape[1])
        grown[: self.n_rows] = self.rows[: self.n_rows]
        self.rows = grown
        self.stats["table_bytes"] = self.rows.numel() * 4

    def _fill(self, wanted: torch.Tensor) -> None:
        """Compute the missing pairs of ``wanted`` ``(T, N)`` (bool), one training image at a time."""
        missing = wanted & (self.slot_of < 0)
        self.reserve(self.n_rows + int(missing.sum()))
        images = torch.nonzero(missing.any(0)).flatten().tolist()
        extractor = self.model._extractor()
        for start in range(0, len(images), extractor.batch_size):
            chunk = images[start : start + extractor.batch_size]
            maps = next(iter(extractor.iter_layer_maps([self.pool[n] for n in chunk])))
            _, positions = self.model.features(maps)  # (b, P, C)
            for slot, n in enumerate(chunk):
                tests = torch.nonzero(missing[:, n]).flatten()
                if len(tests) == len(self.slot_of):  # every test image: no copy of their features
                    queries, norms = self.test_positions, self.test_norms
                else:
                    queries, norms = take_images(self.test_positions, tests), take_images(self.test_norms, tests)
                distances = self.model.pair_minima(
                    queries, take_images(positions, slice(slot, slot + 1)), test_norms=norms
                )
                slots = torch.arange(self.n_rows, self.n_rows + len(tests))
                self.rows[slots] = distances[:, 0]
                self.slot_of[tests, n] = slots
                self.n_rows += len(tests)
                self.stats["pairs_computed"] += len(tests)

    def scores(self, train_paths: list) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(T,)`` and anomaly maps ``(T, H, W)`` of SPADE fitted on ``train_paths``."""
        nearest_d, chosen = self.chosen(train_paths)  # (T, K) pool slots
        wanted = self._wanted([chosen])
        self.stats["pairs_read"] += int(wanted.sum())
        self._fill(wanted)
        minima = torch.stack(  # per test image: the minimum over its K images' rows, (T, P)
            [self.rows[self.slot_of[t, picks]].amin(dim=0) for t, picks in enumerate(chosen)]
        )
        grids = self.model.grid_from_minima(minima, self.shapes)  # (T, h, w)
        maps = upsample_and_smooth(grids, self.model.image_size)
        return nearest_d.mean(dim=1).numpy().astype(np.float64), maps

    def evaluate(self, split: Split, masks: np.ndarray | None) -> dict:
        """Like :func:`~patchcore_kit.experiments.cell.evaluate_once` for SPADE fitted on ``split.train``.

        ``fit_s`` is ~0 (the pool's features are read once for all rows); ``infer_s`` includes the
        pairs this row computes first, so later rows, which read more pairs, are cheaper. The row
        is measured by :func:`~patchcore_kit.evaluate.evaluate`, the kit's one evaluation loop.
        """
        return measured(self.score(split, masks))

    def score(self, split: Split, masks: np.ndarray | None) -> Scored:
        """The first half of :meth:`evaluate`: scored, not measured yet (see :meth:`SweepCells.score`)."""
        return fit_and_score(_TableSPADE(self), split, masks=masks, pixel=masks is not None)


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
