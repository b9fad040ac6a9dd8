"""The PatchCore estimator (Roth et al., CVPR 2022, "Towards Total Recall in Industrial Anomaly Detection").

Fit: every nominal training image becomes a grid of locally aware patch features (``features``);
all of them form the memory bank, which greedy k-center subsampling shrinks to a coreset
(``coreset``). Score: each test patch's distance to its nearest bank entry is its anomaly score
(``neighbors``); the image score is the largest patch score s*, times the weight of the paper's
Eq. 7 (:func:`eq7_weight`), which lies in [1 - 1/b, 1) and only moves s* when the distances to the
b neighbours differ by less than about one unit (on MTD it is 0.99-1.00); the anomaly map is the patch scores upsampled to the
image and smoothed with a Gaussian of σ=4.

>>> model = PatchCore(backbone="efficientnet_lite0", coreset_ratio=0.1).fit(train_paths)  # doctest: +SKIP
>>> scores = model.decision_function(test_paths)       # higher = more anomalous   # doctest: +SKIP
>>> maps = model.anomaly_map(test_paths)                # (N, H, W)                  # doctest: +SKIP
>>> model.save("bottle.safetensors"); PatchCore.load("bottle.safetensors")         # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .backbones import STAGE_CHANNELS
from .base import EmbeddingScorer, parameter_names, upsample_and_smooth
from .coreset import coreset_size, select_coreset
from .features import flatten_patches, patch_embeddings
from .modelfile import FORMAT, check_bank_width, read_model, write_model  # noqa: F401 (FORMAT re-exported)
from .neighbors import MemoryBankIndex, resolve_search
from .params import DEFAULT_BACKBONE, DEFAULT_LAYERS


def eq7_weight(distances) -> torch.Tensor:
    r"""The weight of the paper's Eq. 7 from the distances ``(..., b)`` of ``m_test*`` to ``N_b(m*)``.

    ``distances[..., 0]`` is :math:`\|m^{test,*} - m^*\|` (``m*`` is the nearest bank entry, so
    this is the smallest), the others the distances to the rest of ``m*``'s ``b`` nearest bank
    entries. The weight is

    .. math:: w = 1 - \frac{\exp\|m^{test,*} - m^*\|}{\sum_{m \in N_b(m^*)} \exp\|m^{test,*} - m\|}

    i.e. one minus the softmax of the distances at ``m*``. The first term is the smallest, so it
    is at most an equal share: ``w`` lies in ``[1 - 1/b, 1)`` (for b = 9: [0.889, 1)). It
    approaches 1 when the other neighbours are much farther than ``m*`` (``m*`` is isolated: a
    rare nominal appearance, so ``s*`` is kept) and ``1 - 1/b`` when they are all about as far
    (``m*`` sits in a dense cluster of nominal patches, so ``s*`` is lowered most, by up to 1/b).
    Relative to each other, then, a match in a sparse region scores higher than one in a dense
    region. Distances enter ``exp``
    unscaled, so the weight depends on their units: differences of several units already push
    it to 1 (on MTD with lite0 features the distances are 30–80 and ``w`` is 0.992–1.000).
    ``b = 1`` (a single distance) means no re-weighting: the weight is 1.

    >>> round(eq7_weight(torch.tensor([2.0, 2.0, 2.0])).item(), 4)   # all equally far: 1 - 1/3
    0.6667
    >>> round(eq7_weight(torch.tensor([2.0, 9.0, 9.0])).item(), 4)   # m* isolated: score kept
    0.9995
    """
    distances = torch.as_tensor(distances, dtype=torch.float64)  # float32 would round 1 - 1e-8 to 1
    if distances.shape[-1] <= 1:
        return torch.ones(distances.shape[:-1], dtype=torch.float64)
    return 1.0 - torch.softmax(distances, dim=-1)[..., 0]


def worst_patch_neighbors(
    patch_scores: torch.Tensor,
    nearest_index: torch.Tensor,
    patch_features: torch.Tensor,
    bank_index: MemoryBankIndex,
    num_neighbors: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s*`` ``(B,)`` and the distances ``(B, b)`` of the worst test patch ``m_test*`` to ``N_b(m*)``.

    ``N_b(m*)`` are the ``b`` bank entries nearest to ``m*`` (``m*`` first): their distances to
    ``m_test*`` are what :func:`eq7_weight` needs. The neighbours of a smaller ``b`` are a prefix
    of a larger ``b``'s, so one call with the largest ``b`` serves them all.
    """
    rows = torch.arange(len(patch_scores))
    worst = torch.argmax(patch_scores, dim=1)
    s_star = patch_scores[rows, worst]
    bank = bank_index.bank
    b = max(1, min(int(num_neighbors), len(bank)))
    m_star = bank[nearest_index[rows, worst]]
    _, support = bank_index.search(m_star, k=b)  # (B, b), m* first
    m_test = patch_features[rows, worst]  # (B, D)
    distances = torch.linalg.norm(bank[support] - m_test[:, None], dim=2)  # (B, b)
    return s_star, distances


def reweighted_image_scores(
    patch_scores: torch.Tensor,
    nearest_index: torch.Tensor,
    patch_features: torch.Tensor,
    bank_index: MemoryBankIndex,
    num_neighbors: int,
) -> torch.Tensor:
    """The paper's image score (Eq. 7) for a batch: ``(B, P)`` patch scores -> ``(B,)``.

    ``s* = max patch score``, reached by test patch ``m_test*`` whose nearest bank entry is ``m*``;
    the image score is ``eq7_weight(distances of m_test* to N_b(m*)) * s*`` (:func:`eq7_weight`
    says what the weight does and its range). ``b = 1`` gives plain ``s*``.
    """
    if num_neighbors <= 1 or len(bank_index.bank) < 2:
        return patch_scores.amax(dim=1)
    s_star, distances = worst_patch_neighbors(patch_scores, nearest_index, patch_features, bank_index, num_neighbors)
    return (eq7_weight(distances) * s_star).to(s_star.dtype)


def patch_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` -> ``(B, h*w, D)``: each image's patches as rows (:func:`~patchcore_kit.features.flatten_patches`
    per image), the layout the search reads."""
    return flatten_patches(embeddings).reshape(len(embeddings), -1, embeddings.shape[1])


def image_scores_for(s_star, neighbour_distances, num_neighbors: int) -> np.ndarray:
    """Eq. 7 image scores for ``b = num_neighbors`` from :meth:`PatchCore.score_neighbors`' output."""
    distances = torch.as_tensor(np.asarray(neighbour_distances)[:, : max(1, int(num_neighbors))])
    return eq7_weight(distances).double().numpy() * np.asarray(s_star, dtype=np.float64)


class PatchCore(EmbeddingScorer):
    """PatchCore anomaly detection and segmentation, scikit-learn style.

    Parameters
    ----------
    backbone, layers, weights : which ImageNet network and stages (see ``backbones``).
    patch_size : neighbourhood p for local aggregation (paper: 3).
    aggregation : "mean" averages each p×p neighbourhood (the paper's Eq. 1); "unfold" keeps the
        whole p×p×C neighbourhood and pools it to ``pretrain_dim`` per layer (the official code).
    border : what a border patch's missing neighbours are: "zeros" (the official code), "reflect"
        (the map mirrored) or "valid" (left out of the mean; border patches then differ from inner ones).
    pretrain_dim : with "unfold", each layer's neighbourhood vector is pooled to this size (None: 1024).
    target_dim : reduce the concatenated feature to this many channels (paper: 1024 for WRN50).
        With "mean", None keeps all (152 for EfficientNet-Lite0 layer2+3); with "unfold", None is 1024.
    coreset_ratio : fraction of all training patches kept in the memory bank (paper: 0.1 or 0.01),
        or an integer count.
    sampler : "greedy" (k-center, the paper), "random" or "none".
    projection_dim : random-projection dimension used by the greedy sampler (paper: 128).
    num_neighbors : b in the re-weighted image score (1 = plain max patch score).
    search : nearest-neighbour search while scoring: "exact" (default), or approximate faiss "hnsw" /
        "ivf" (many times faster on a large bank; scores stay exact distances to the entries found),
        or "auto" (HNSW from ``neighbors.AUTO_MIN_BANK`` entries up). See ``neighbors``.
    image_size : int or (height, width) the images are resized to.
    threshold_quantile : ``predict`` threshold = this quantile of leave-one-out nominal scores.
    calibrate : compute that threshold during ``fit`` (costs one scoring pass over the training set).
    feature_cache : directory for cached backbone maps (shared with the baselines and sweeps).
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = DEFAULT_LAYERS,
        patch_size: int = 3,
        aggregation: str = "mean",
        border: str = "zeros",
        pretrain_dim: int | None = None,
        target_dim: int | None = None,
        coreset_ratio: float = 0.1,
        sampler: str = "greedy",
        projection_dim: int | None = 128,
        num_neighbors: int = 9,
        search: str = "exact",
        **shared,  # image_size, weights, ... progress: base.SHARED_PARAMETERS, keyword-only
    ):
        self._store(locals())

    # -- fit --------------------------------------------------------------------------------------
    def embed(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        """Stage maps of a batch -> patch embeddings ``(B, D, h, w)``."""
        return patch_embeddings(
            layer_maps, self.patch_size, self.target_dim, self.aggregation, self.border, self.pretrain_dim
        )

    def _fit_maps(self, batches: Iterable[list[torch.Tensor]], n_images: int, timings: dict) -> None:
        resolve_search(self.search, 0)  # an unknown search fails now, not at the first score
        torch.manual_seed(self.seed)
        start = time.perf_counter()
        features = None  # allocated once the first batch tells the grid and depth: no copies
        row = 0
        for layer_maps in batches:
            embeddings = self.embed(layer_maps)
            if features is None:
                b, depth, h, w = embeddings.shape
                features = torch.empty(n_images * h * w, depth)
                self.feature_shape_ = (h, w)
            flat = flatten_patches(embeddings)
            features[row : row + len(flat)] = flat
            row += len(flat)
        timings["features"] = time.perf_counter() - start

        start = time.perf_counter()
        h, w = self.feature_shape_
        n_bank = coreset_size(len(features), self.coreset_ratio)
        indices = select_coreset(features, self.sampler, n_bank, self.projection_dim, self.seed, self.progress)
        indices = torch.as_tensor(indices)
        self.coreset_indices_ = indices.numpy()
        self.memory_bank_ = features[indices].contiguous()
        self.bank_image_ = (indices // (h * w)).numpy()  # which training image each entry came from
        self.n_patches_ = len(features)
        timings["coreset"] = time.perf_counter() - start

    # -- score ------------------------------------------------------------------------------------
    def _bank_index(self) -> MemoryBankIndex:
        """The search index over the memory bank, built once per fitted bank."""
        cached = getattr(self, "_index_cache", None)
        if cached is None or cached[0] is not self.memory_bank_ or cached[1] != self.search:
            self._index_cache = (
                self.memory_bank_,
                self.search,
                MemoryBankIndex(self.memory_bank_, search=self.search, seed=self.seed),
            )
        return self._index_cache[2]

    def _score_patches(
        self, patches: torch.Tensor, bank_index: MemoryBankIndex, grid: tuple[int, int]
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Image scores and patch scores ``(B, h, w)`` of patch embeddings ``(B, h*w, D)`` (:func:`patch_rows`)."""
        b, p, depth = patches.shape
        distances, nearest = bank_index.search(patches.reshape(b * p, depth), k=1)
        patch_scores = distances[:, 0].reshape(b, p)
        image_scores = reweighted_image_scores(
            patch_scores, nearest[:, 0].reshape(b, p), patches, bank_index, self.num_neighbors
        )
        return image_scores.numpy().astype(np.float64), patch_scores.reshape(b, *grid)

    # The test images' patch embeddings do not depend on the bank: a sweep embeds its test set once
    # (EmbeddingScorer.embed_images: ``(N, h*w, D)``) and scores it with every fitted bank (score_embedded).
    def _embed_test(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        return patch_rows(self.embed(layer_maps))

    def _score_block(self, patches: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        return self._score_patches(patches, self._bank_index(), self.feature_shape_)

    def score_neighbors(self, images, max_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score ``images`` once, keeping what Eq. 7 needs for every b up to ``max_neighbors``.

        Returns ``s*`` ``(N,)`` (the largest patch score), the distances ``(N, b_max)`` of the
        worst patch to ``N_b(m*)`` (``m*`` first) and the anomaly maps ``(N, H, W)``. The image
        score for any ``b <= b_max`` is then ``eq7_weight(distances[:, :b]) * s*`` without a new
        search (:func:`image_scores_for`); ``b_max`` defaults to ``num_neighbors``.
        """
        self._check_fitted()
        b_max = self.num_neighbors if max_neighbors is None else int(max_neighbors)
        index = self._bank_index()
        stars, neighbors, maps = [], [], []
        for patches in self._embedded_blocks(images):  # score_images' blocks: the same maps
            b, p, depth = patches.shape
            distances, nearest = index.search(patches.reshape(b * p, depth), k=1)
            grid = distances[:, 0].reshape(b, p)
            s_star, to_neighbors = worst_patch_neighbors(grid, nearest[:, 0].reshape(b, p), patches, index, b_max)
            stars.append(s_star.numpy())
            neighbors.append(to_neighbors.numpy())
            maps.append(upsample_and_smooth(grid.reshape(b, *self.feature_shape_), self.image_size))
        return (
            np.concatenate(stars).astype(np.float64),
            np.concatenate(neighbors).astype(np.float64),
            np.concatenate(maps),
        )

    def patch_scores(self, images) -> torch.Tensor:
        """Raw nearest-neighbour distances on the feature grid ``(N, h, w)``, before upsampling."""
        self._check_fitted()
        return torch.cat([self._score_block(block)[1] for block in self._embedded_blocks(images)])

    def _leave_one_out_scores(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        scores, maxima = [], []
        index = 0
        for layer_maps in self._extractor().iter_layer_maps(images, desc="calibrate"):
            embeddings = self.embed(layer_maps)
            for one in embeddings:
                bank = self.memory_bank_[torch.from_numpy(self.bank_image_ != index)]
                index += 1
                if len(bank) == 0:  # every kept patch came from this image
                    continue
                # exact, whatever ``search`` is: an approximate index would be rebuilt for every image
                score, grid = self._score_patches(patch_rows(one[None]), MemoryBankIndex(bank), self.feature_shape_)
                scores.append(score[0])
                maxima.append(upsample_and_smooth(grid, self.image_size)[0].max())
        return np.asarray(scores), np.asarray(maxima)

    # -- save / load (safetensors + JSON, never pickle; the file's checks live in modelfile) ------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one ``.safetensors`` file (tensors + JSON metadata), atomically."""
        self._check_fitted()
        params = self.get_params()
        params["layers"] = list(params["layers"])
        params["image_size"] = (
            list(params["image_size"]) if not isinstance(params["image_size"], int) else params["image_size"]
        )
        params["weights"] = None if params["weights"] is None else str(params["weights"])
        params["feature_cache"] = None  # a cache path is machine-specific
        fitted = {
            "n_train_": self.n_train_,
            "n_patches_": self.n_patches_,
            "feature_shape_": list(self.feature_shape_),
            "threshold_": self.threshold_,
            "pixel_threshold_": self.pixel_threshold_,
            "fit_seconds_": self.fit_seconds_,
        }
        tensors = {
            "memory_bank": self.memory_bank_,
            "bank_image": torch.from_numpy(self.bank_image_.astype(np.int64)),
            "coreset_indices": torch.from_numpy(self.coreset_indices_.astype(np.int64)),
        }
        return write_model(path, tensors, params, fitted)

    @classmethod
    def load(cls, path: str | Path) -> PatchCore:
        """Read a model written by :meth:`save`; every value in the file is checked first (see ``modelfile``)."""
        path = Path(path)
        params, fitted, tensors = read_model(path, parameter_names(cls))
        if isinstance(params["image_size"], list):
            params["image_size"] = tuple(params["image_size"])
        params["layers"] = tuple(params["layers"])
        model = cls(**params)
        check_bank_width(
            path, tensors["memory_bank"], STAGE_CHANNELS[model.backbone], model.layers, model.patch_size, model.embed
        )
        for key, value in fitted.items():
            setattr(model, key, tuple(value) if key == "feature_shape_" else value)
        model.memory_bank_ = tensors["memory_bank"]
        model.bank_image_ = tensors["bank_image"].numpy()
        model.coreset_indices_ = tensors["coreset_indices"].numpy()
        return model
