"""The PatchCore estimator (Roth et al., CVPR 2022, "Towards Total Recall in Industrial Anomaly Detection").

Fit: every nominal training image becomes a grid of locally aware patch features (``features``);
all of them form the memory bank, which greedy k-center subsampling shrinks to a coreset
(``coreset``). Score: each test patch's distance to its nearest bank entry is its anomaly score
(``neighbours``); the image score is the largest patch score, re-weighted by how isolated that
patch's nearest bank entry is (paper, Eq. 7); the anomaly map is the patch scores upsampled to the
image and smoothed with a Gaussian of σ=4.

>>> model = PatchCore(backbone="efficientnet_lite0", coreset_ratio=0.1).fit(train_paths)  # doctest: +SKIP
>>> scores = model.decision_function(test_paths)       # higher = more anomalous   # doctest: +SKIP
>>> maps = model.anomaly_map(test_paths)                # (N, H, W)                  # doctest: +SKIP
>>> model.save("bottle.safetensors"); PatchCore.load("bottle.safetensors")         # doctest: +SKIP
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .backbones import DEFAULT_LAYERS, STAGE_CHANNELS
from .base import AnomalyEstimator, _as_list
from .coreset import coreset_size, select_coreset
from .features import flatten_patches, patch_embeddings
from .modelfile import FORMAT, check_bank_width, read_model, write_model  # noqa: F401 (FORMAT re-exported)
from .neighbours import MemoryBankIndex, resolve_search


def reweighted_image_scores(
    patch_scores: torch.Tensor,
    nearest_index: torch.Tensor,
    patch_features: torch.Tensor,
    bank_index: MemoryBankIndex,
    num_neighbors: int,
) -> torch.Tensor:
    """The paper's image score (Eq. 7) for a batch: ``(B, P)`` patch scores -> ``(B,)``.

    ``s* = max patch score``, reached by test patch ``m_test*`` whose nearest bank entry is ``m*``.
    Let ``N_b(m*)`` be the ``b`` bank entries nearest to ``m*`` (``m*`` itself first). Then
    ``s = (1 - exp(|m_test* - m*|) / sum_{m in N_b(m*)} exp(|m_test* - m|)) * s*``: a patch whose
    nearest nominal neighbour sits in a sparse region of the bank (a rare nominal appearance) is
    trusted less than one whose neighbour sits in a dense region. ``b = 1`` gives plain ``s*``.
    """
    rows = torch.arange(len(patch_scores))
    worst = torch.argmax(patch_scores, dim=1)
    s_star = patch_scores[rows, worst]
    bank = bank_index.bank
    if num_neighbors <= 1 or len(bank) < 2:
        return s_star
    m_star = bank[nearest_index[rows, worst]]
    _, support = bank_index.search(m_star, k=num_neighbors)  # (B, b), m* first
    m_test = patch_features[rows, worst]  # (B, D)
    distances = torch.linalg.norm(bank[support] - m_test[:, None], dim=2)  # (B, b)
    # softmax(distances)[:, 0] = exp(d(m_test*, m*)) / sum exp(d(m_test*, m))
    weight = 1.0 - torch.softmax(distances, dim=1)[:, 0]
    return weight * s_star


class PatchCore(AnomalyEstimator):
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
        or "auto" (HNSW from ``neighbours.AUTO_MIN_BANK`` entries up). See ``neighbours``.
    image_size : int or (height, width) the images are resized to.
    threshold_quantile : ``predict`` threshold = this quantile of leave-one-out nominal scores.
    calibrate : compute that threshold during ``fit`` (costs one scoring pass over the training set).
    feature_cache : directory for cached backbone maps (shared with the baselines and sweeps).
    """

    _param_names = (
        "backbone", "layers", "patch_size", "aggregation", "border", "pretrain_dim", "target_dim", "coreset_ratio", "sampler", "projection_dim",
        "num_neighbors", "search", "image_size", "weights", "device", "batch_size", "seed", "threshold_quantile",
        "calibrate", "feature_cache", "progress",
    )

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
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
        image_size: int | Sequence[int] = 224,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        seed: int = 0,
        threshold_quantile: float = 0.99,
        calibrate: bool = True,
        feature_cache: str | None = None,
        progress: bool = False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.patch_size = patch_size
        self.aggregation = aggregation
        self.border = border
        self.pretrain_dim = pretrain_dim
        self.target_dim = target_dim
        self.coreset_ratio = coreset_ratio
        self.sampler = sampler
        self.projection_dim = projection_dim
        self.num_neighbors = num_neighbors
        self.search = search
        self.image_size = image_size
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.threshold_quantile = threshold_quantile
        self.calibrate = calibrate
        self.feature_cache = feature_cache
        self.progress = progress

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
            self._index_cache = (self.memory_bank_, self.search, MemoryBankIndex(self.memory_bank_, search=self.search, seed=self.seed))
        return self._index_cache[2]

    def _score_embeddings(self, embeddings: torch.Tensor, bank_index: MemoryBankIndex) -> tuple[np.ndarray, torch.Tensor]:
        b, _, h, w = embeddings.shape
        flat = flatten_patches(embeddings)
        distances, nearest = bank_index.search(flat, k=1)
        patch_scores = distances[:, 0].reshape(b, h * w)
        image_scores = reweighted_image_scores(
            patch_scores, nearest[:, 0].reshape(b, h * w), flat.reshape(b, h * w, -1), bank_index, self.num_neighbors
        )
        return image_scores.numpy().astype(np.float64), patch_scores.reshape(b, h, w)

    def _score_maps(self, layer_maps: list[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        return self._score_embeddings(self.embed(layer_maps), self._bank_index())

    def patch_scores(self, images) -> torch.Tensor:
        """Raw nearest-neighbour distances on the feature grid ``(N, h, w)``, before upsampling."""
        self._check_fitted()
        grids = [self._score_maps(maps)[1] for maps in self._extractor().iter_layer_maps(_as_list(images))]
        return torch.cat(grids)

    def _leave_one_out_scores(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        from .base import upsample_and_smooth

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
                score, grid = self._score_embeddings(one[None], MemoryBankIndex(bank))
                scores.append(score[0])
                maxima.append(upsample_and_smooth(grid, self.image_size)[0].max())
        return np.asarray(scores), np.asarray(maxima)

    # -- save / load (safetensors + JSON, never pickle; the file's checks live in modelfile) ------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one ``.safetensors`` file (tensors + JSON metadata), atomically."""
        self._check_fitted()
        params = self.get_params()
        params["layers"] = list(params["layers"])
        params["image_size"] = list(params["image_size"]) if not isinstance(params["image_size"], int) else params["image_size"]
        params["weights"] = None if params["weights"] is None else str(params["weights"])
        params["feature_cache"] = None  # a cache path is machine-specific
        fitted = {
            "n_train_": self.n_train_, "n_patches_": self.n_patches_, "feature_shape_": list(self.feature_shape_),
            "threshold_": self.threshold_, "pixel_threshold_": self.pixel_threshold_, "fit_seconds_": self.fit_seconds_,
        }
        tensors = {
            "memory_bank": self.memory_bank_,
            "bank_image": torch.from_numpy(self.bank_image_.astype(np.int64)),
            "coreset_indices": torch.from_numpy(self.coreset_indices_.astype(np.int64)),
        }
        return write_model(path, tensors, params, fitted)

    @classmethod
    def load(cls, path: str | Path) -> "PatchCore":
        """Read a model written by :meth:`save`; every value in the file is checked first (see ``modelfile``)."""
        path = Path(path)
        params, fitted, tensors = read_model(path, cls._param_names)
        if isinstance(params["image_size"], list):
            params["image_size"] = tuple(params["image_size"])
        params["layers"] = tuple(params["layers"])
        model = cls(**params)
        check_bank_width(path, tensors["memory_bank"], STAGE_CHANNELS[model.backbone], model.layers,
                         model.patch_size, model.embed)
        for key, value in fitted.items():
            setattr(model, key, tuple(value) if key == "feature_shape_" else value)
        model.memory_bank_ = tensors["memory_bank"]
        model.bank_image_ = tensors["bank_image"].numpy()
        model.coreset_indices_ = tensors["coreset_indices"].numpy()
        return model
