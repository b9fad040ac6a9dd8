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

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .backbones import DEFAULT_LAYERS
from .base import AnomalyEstimator, _as_list
from .coreset import coreset_size, select_coreset
from .errors import InputError
from .features import flatten_patches, patch_embeddings
from .neighbours import MemoryBankIndex

FORMAT = "patchcore_kit.PatchCore/1"


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
    image_size : int or (height, width) the images are resized to.
    threshold_quantile : ``predict`` threshold = this quantile of leave-one-out nominal scores.
    calibrate : compute that threshold during ``fit`` (costs one scoring pass over the training set).
    feature_cache : directory for cached backbone maps (shared with the baselines and sweeps).
    """

    _param_names = (
        "backbone", "layers", "patch_size", "aggregation", "border", "pretrain_dim", "target_dim", "coreset_ratio", "sampler", "projection_dim",
        "num_neighbors", "image_size", "weights", "device", "batch_size", "seed", "threshold_quantile",
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
        if cached is None or cached.bank is not self.memory_bank_:
            self._index_cache = MemoryBankIndex(self.memory_bank_)
        return self._index_cache

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
                score, grid = self._score_embeddings(one[None], MemoryBankIndex(bank))
                scores.append(score[0])
                maxima.append(upsample_and_smooth(grid, self.image_size)[0].max())
        return np.asarray(scores), np.asarray(maxima)

    # -- save / load (safetensors + JSON, never pickle) ------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one ``.safetensors`` file (tensors + JSON metadata)."""
        self._check_fitted()
        path = Path(path)
        params = self.get_params()
        params["layers"] = list(params["layers"])
        params["image_size"] = list(params["image_size"]) if not isinstance(params["image_size"], int) else params["image_size"]
        params["weights"] = None if params["weights"] is None else str(params["weights"])
        params["feature_cache"] = None  # a cache path is machine-specific
        fitted = {
            "n_train_": self.n_train_, "n_patches_": self.n_patches_, "feature_shape_": list(self.feature_shape_),
            "threshold_": self.threshold_, "pixel_threshold_": self.pixel_threshold_, "fit_seconds_": self.fit_seconds_,
        }
        metadata = {"format": FORMAT, "params": json.dumps(params), "fitted": json.dumps(fitted)}
        tensors = {
            "memory_bank": self.memory_bank_.contiguous(),
            "bank_image": torch.from_numpy(self.bank_image_.astype(np.int64)),
            "coreset_indices": torch.from_numpy(self.coreset_indices_.astype(np.int64)),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file(tensors, partial, metadata=metadata)
        partial.replace(path)  # never leave a half-written model in place of a good one
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PatchCore":
        """Read a model written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such model file")
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable safetensors model ({error})") from None
        if metadata.get("format") != FORMAT:
            raise InputError(f"{path}: not a patchcore_kit PatchCore model (format {metadata.get('format')!r})")
        params = {**_OLDER_FILES, **_json_object(path, metadata, "params")}
        params = _checked_entries(path, "parameter", params, _PARAM_CHECKS)
        fitted = _checked_entries(path, "fitted value", _json_object(path, metadata, "fitted"), _FITTED_CHECKS)
        _check_tensors(path, tensors, fitted)
        if isinstance(params["image_size"], list):
            params["image_size"] = tuple(params["image_size"])
        params["layers"] = tuple(params["layers"])
        model = cls(**params)
        for key, value in fitted.items():
            setattr(model, key, tuple(value) if key == "feature_shape_" else value)
        model.memory_bank_ = tensors["memory_bank"]
        model.bank_image_ = tensors["bank_image"].numpy()
        model.coreset_indices_ = tensors["coreset_indices"].numpy()
        return model


# --- what load() accepts: every entry named, checked, and an InputError naming the file otherwise ----
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str(value) -> bool:
    return isinstance(value, str)


def _or_null(check):
    return lambda value: value is None or check(value)


def _is_hw(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)


#: name -> (check, what it must be); exactly these entries, no more, no fewer
_PARAM_CHECKS = {
    "backbone": (_is_str, "a string"),
    "layers": (lambda v: isinstance(v, list) and len(v) > 0 and all(map(_is_str, v)), "a list of stage names"),
    "patch_size": (_is_int, "an integer"),
    "aggregation": (_is_str, "a string"),
    "border": (_is_str, "a string"),
    "pretrain_dim": (_or_null(_is_int), "an integer or null"),
    "target_dim": (_or_null(_is_int), "an integer or null"),
    "coreset_ratio": (_is_number, "a number"),
    "sampler": (_is_str, "a string"),
    "projection_dim": (_or_null(_is_int), "an integer or null"),
    "num_neighbors": (_is_int, "an integer"),
    "image_size": (lambda v: (_is_int(v) and v > 0) or _is_hw(v), "a positive integer or [height, width]"),
    "weights": (_or_null(_is_str), "a string or null"),
    "device": (_is_str, "a string"),
    "batch_size": (_is_int, "an integer"),
    "seed": (_is_int, "an integer"),
    "threshold_quantile": (_is_number, "a number"),
    "calibrate": (lambda v: isinstance(v, bool), "true or false"),
    "feature_cache": (_or_null(_is_str), "a string or null"),
    "progress": (lambda v: isinstance(v, bool), "true or false"),
}
#: Parameters added after the first file format, with the value that reproduces how older files scored.
_OLDER_FILES = {"aggregation": "mean", "border": "valid", "pretrain_dim": None}
_FITTED_CHECKS = {
    "n_train_": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "n_patches_": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "feature_shape_": (_is_hw, "[height, width]"),
    "threshold_": (_or_null(_is_number), "a number or null"),
    "pixel_threshold_": (_or_null(_is_number), "a number or null"),
    "fit_seconds_": (lambda v: isinstance(v, dict) and all(map(_is_number, v.values())), "an object of seconds"),
}


def _json_object(path: Path, metadata: dict, key: str) -> dict:
    if key not in metadata:
        raise InputError(f"{path}: damaged model file (no {key!r} metadata)")
    try:
        value = json.loads(metadata[key])
    except ValueError as error:
        raise InputError(f"{path}: damaged model file ({key!r} metadata is not JSON: {error})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: damaged model file ({key!r} metadata is not a JSON object)")
    return value


def _check_names(path: Path, kind: str, found, expected) -> None:
    missing = [name for name in expected if name not in found]
    unknown = sorted(name for name in found if name not in expected)
    problems = [f"{word} {kind}s {names}" for word, names in (("missing", missing), ("unknown", unknown)) if names]
    if problems:
        raise InputError(f"{path}: not a model this version can read ({'; '.join(problems)})")


def _checked_entries(path: Path, kind: str, entries: dict, checks: dict) -> dict:
    _check_names(path, kind, entries, checks)
    for name, (check, expected) in checks.items():
        if not check(entries[name]):
            raise InputError(f"{path}: damaged model file ({kind} {name!r} must be {expected}, got {entries[name]!r})")
    return entries


def _check_tensors(path: Path, tensors: dict, fitted: dict) -> None:
    _check_names(path, "array", tensors, ("memory_bank", "bank_image", "coreset_indices"))
    bank = tensors["memory_bank"]
    if bank.ndim != 2 or len(bank) == 0 or not bank.is_floating_point():
        raise InputError(f"{path}: damaged model file (memory_bank must be a non-empty 2-D float array, "
                         f"got {tuple(bank.shape)} {bank.dtype})")
    h, w = fitted["feature_shape_"]
    if fitted["n_patches_"] != fitted["n_train_"] * h * w:
        raise InputError(f"{path}: damaged model file (n_patches_ {fitted['n_patches_']} is not "
                         f"n_train_ {fitted['n_train_']} x feature_shape_ {h}x{w})")
    for name, upper in (("bank_image", fitted["n_train_"]), ("coreset_indices", fitted["n_patches_"])):
        values = tensors[name]
        if values.dtype != torch.int64 or values.shape != (len(bank),):
            raise InputError(f"{path}: damaged model file ({name} must be {len(bank)} int64 values, one per "
                             f"memory_bank row, got {tuple(values.shape)} {values.dtype})")
        if values.min() < 0 or values.max() >= upper:
            raise InputError(f"{path}: damaged model file ({name} values must lie in [0, {upper}))")
