"""What every anomaly estimator in the kit shares (PatchCore, PaDiM, SPADE, 1-NN).

Every estimator is a scikit-learn estimator (:class:`sklearn.base.BaseEstimator`): parameters are
stored untouched in ``__init__``, so ``get_params``, ``set_params`` and ``sklearn.base.clone``
work; ``fit(images)`` checks every parameter by the rules of :mod:`patchcore_kit.params` *before*
the backbone runs, does the work and returns ``self``; fitted state ends in ``_``. Scores follow
scikit-learn / pyod naming, *higher = more anomalous*:

* ``decision_function(images)`` — one anomaly score per image ``(N,)``;
* ``anomaly_map(images)`` — per-pixel scores ``(N, H, W)``;
* ``score_images(images)`` — both in one backbone pass (:class:`ScoredImages`);
* ``predict(images)`` — 1 = anomalous, 0 = nominal;
* ``score(images, labels)`` — one number, as scikit-learn's ``score``: the image AUROC.

Subclasses implement two methods:

* ``_fit_maps(layer_maps_batches, n_images)`` — learn from the training images' stage maps;
* ``_score_maps(layer_maps) -> (image_scores, patch_score_grid)`` — score one batch.

An estimator whose test images become embeddings that do not depend on the fit (PatchCore's patch
embeddings, PaDiM's aligned features) derives from :class:`EmbeddingScorer` instead and implements
``_embed_test`` and ``_score_block``: it scores fixed blocks of :data:`SCORE_BLOCK` images, and a
sweep embeds its test set once (``embed_images``) and scores it with every fit (``score_embedded``).

The rest lives here: turning any image input into backbone maps (through a
:class:`~patchcore_kit.features.FeatureExtractor`, optionally cached), upsampling patch scores to
the image size and smoothing them with a Gaussian of σ=4 (paper, Sec. 3.3), and ``predict`` with
a threshold learned from nominal training images only.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter1d
from sklearn.base import BaseEstimator

from .features import FeatureExtractor
from .images import ImageLike, as_hw
from .params import DEFAULT_IMAGE_SIZE

MAP_SIGMA = 4.0
#: Test images per scoring block of an :class:`EmbeddingScorer`. Fixed, not the extractor's
#: ``batch_size``: scoring images and scoring their embeddings (a sweep's shared test set) then run
#: the same products on the same blocks, so their numbers are equal bit for bit (a BLAS product's last
#: digits may depend on its shape); and 64 images make products large enough to run near the matmul
#: speed (PaDiM's per-position Mahalanobis products at 8 images ran at an eighth of it).
SCORE_BLOCK = 64


def map_operator(n_in: int, n_out: int, sigma: float = MAP_SIGMA) -> torch.Tensor:
    """``(n_out, n_in)`` float64 matrix: bilinear upsampling along one axis, then the Gaussian.

    Both steps are linear and act on each axis separately (``F.interpolate`` with
    ``align_corners=False``; ``scipy.ndimage.gaussian_filter``'s ``reflect`` border and radius of
    4σ), so a map is ``A_h @ grid @ A_wᵀ``: the matrices are the steps applied to unit vectors.
    """
    return _map_operator(int(n_in), int(n_out), float(sigma))


@functools.lru_cache(maxsize=16)
def _map_operator(n_in: int, n_out: int, sigma: float) -> torch.Tensor:
    unit = torch.eye(n_in, dtype=torch.float64)[:, None, :]  # n_in one-hot rows
    upsampled = F.interpolate(unit, size=n_out, mode="linear", align_corners=False)[:, 0, :].T.numpy()
    if sigma > 0:
        upsampled = gaussian_filter1d(upsampled, sigma=sigma, axis=0)
    return torch.from_numpy(np.ascontiguousarray(upsampled))


def upsample_and_smooth(patch_scores: torch.Tensor, image_size, sigma: float = MAP_SIGMA) -> np.ndarray:
    """``(B, h, w)`` patch scores -> ``(B, H, W)`` anomaly maps: bilinear upsampling, then Gaussian.

    Computed as two small matrix products per map (:func:`map_operator`) in float64, rounded once
    to float32: the same maps as interpolating and then filtering with ``scipy.ndimage`` (to float32
    rounding; tested); 601 maps of 224 px in 0.13 s instead of ~0.8 s filtering them one by one.
    """
    height, width = as_hw(image_size)
    grids = torch.as_tensor(patch_scores).double()
    rows = map_operator(grids.shape[1], height, sigma)  # (H, h)
    columns = map_operator(grids.shape[2], width, sigma)  # (W, w)
    return (rows @ grids @ columns.T).float().numpy()


class ScoredImages(NamedTuple):
    """What :meth:`AnomalyEstimator.score_images` returns: both results of one pass over the images."""

    scores: np.ndarray  # (N,) image scores, higher = more anomalous
    maps: np.ndarray  # (N, H, W) anomaly maps at the model's image_size


def parameter_names(estimator) -> tuple[str, ...]:
    """The constructor parameters of an estimator class or instance (what ``get_params`` returns)."""
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return tuple(cls._get_param_names())


#: The parameters every estimator shares, with their defaults: written once, here. Each constructor
#: takes them as ``**shared`` after its own parameters; :class:`AnomalyEstimator` adds them to its
#: signature as keyword-only parameters, so ``help()``, ``get_params`` and ``clone`` see them all.
SHARED_PARAMETERS = {
    "image_size": DEFAULT_IMAGE_SIZE,
    "weights": None,
    "device": "cpu",
    "batch_size": 8,
    "seed": 0,
    "threshold_quantile": 0.99,
    "calibrate": True,
    "feature_cache": None,
    "progress": False,
}


def _with_shared_parameters(init):
    """``init``'s signature with ``**shared`` replaced by the keyword-only :data:`SHARED_PARAMETERS`."""
    signature = inspect.signature(init)
    own = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in SHARED_PARAMETERS.items()
    ]
    init.__signature__ = signature.replace(parameters=own + shared)
    return init


class AnomalyEstimator(BaseEstimator):
    """Base class: image input, feature extraction, maps, thresholds. Not used on its own.

    Parameters every estimator shares (keyword-only in each constructor)
    ----------------------------------------------------------------------
    image_size : int or (height, width) the images are resized to.
    weights : backbone weights, a local file or URL (None: ImageNet).
    device, batch_size : where and in how large batches the backbone runs.
    seed : seeds everything random in ``fit``.
    threshold_quantile : ``predict`` threshold = this quantile of leave-one-out nominal scores.
    calibrate : compute that threshold during ``fit`` (one more scoring pass over the training set).
    feature_cache : directory for cached backbone maps (shared by all estimators and sweeps).
    progress : show progress bars.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and any(p.kind == p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
            _with_shared_parameters(init)

    def _store(self, arguments: dict) -> None:
        """``__init__``'s one job in scikit-learn: keep every parameter exactly as given (``locals()``).

        ``arguments["shared"]`` holds the shared parameters given; the others keep their defaults.
        """
        shared = arguments.get("shared") or {}
        unknown = sorted(set(shared) - set(SHARED_PARAMETERS))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}")
        values = {**SHARED_PARAMETERS, **shared, **arguments}
        for name in parameter_names(self):
            setattr(self, name, values[name])

    # -- features -------------------------------------------------------------------------------
    def _extract_layers(self) -> tuple[str, ...]:
        """The backbone stages this estimator reads, in the order ``_fit_maps`` / ``_score_maps`` get them.

        ``layers`` here; an estimator that also pools a stage of its own (SPADE's global feature)
        asks for the union, so that one extraction (one cache entry per image) serves both.
        """
        return tuple(self.layers)

    def _extractor(self) -> FeatureExtractor:
        layers = self._extract_layers()
        settings = (
            self.backbone,
            layers,
            as_hw(self.image_size),
            self.weights,
            self.device,
            self.batch_size,
            self.feature_cache,
            self.progress,
        )
        if getattr(self, "_extractor_cache", (None, None))[0] != settings:
            extractor = FeatureExtractor(
                self.backbone,
                layers,
                self.image_size,
                weights=self.weights,
                device=self.device,
                batch_size=self.batch_size,
                cache_dir=self.feature_cache,
                progress=self.progress,
            )
            self._extractor_cache = (settings, extractor)
        return self._extractor_cache[1]

    def _check_params(self) -> None:
        """Every parameter by the kit's rules (``params``), and the device, before any work starts."""
        from .params import check_device, check_params

        check_params(type(self).__name__, self.get_params(deep=False))
        check_device(self.device)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_train_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(images) first")

    # -- the public API ---------------------------------------------------------------------------
    def fit(self, images: Sequence[ImageLike]):
        """Learn what nominal looks like from ``images`` (nominal only). Returns ``self``."""
        images = _as_list(images)  # one path or array is one image, not a sequence of characters or rows
        if not images:
            raise ValueError("fit needs at least one nominal image")
        self._check_params()  # a bad value fails here, not after minutes of backbone passes
        timings: dict[str, float] = {}
        start = time.perf_counter()
        self._fit_maps(self._extractor().iter_layer_maps(images, desc="fit"), len(images), timings)
        self.n_train_ = len(images)
        timings["fit_total"] = time.perf_counter() - start
        self.fit_seconds_ = timings
        self.threshold_, self.pixel_threshold_ = self._calibrate(images)
        return self

    def score_images(self, images: Sequence[ImageLike] | ImageLike) -> ScoredImages:
        """Image scores ``(N,)`` and anomaly maps ``(N, H, W)`` in one pass over the images."""
        self._check_fitted()
        self._check_params()
        batches = self._extractor().iter_layer_maps(_as_list(images), desc="score")
        return self._collect(self._score_maps(layer_maps) for layer_maps in batches)

    def _collect(self, scored: Iterable[tuple[np.ndarray | None, torch.Tensor]]) -> ScoredImages:
        """:class:`ScoredImages` from ``(image scores, patch scores)`` batches: the maps made batch by batch.

        Image scores of None are the maxima of the batch's maps (PaDiM's image score), which are then
        made once rather than once for the scores and again for the maps.
        """
        scores, maps = [], []
        for batch_scores, patch_scores in scored:
            batch_maps = upsample_and_smooth(patch_scores, self.image_size)
            if batch_scores is None:
                batch_scores = batch_maps.max(axis=(1, 2))
            scores.append(np.asarray(batch_scores, dtype=np.float64))
            maps.append(batch_maps)
        return ScoredImages(np.concatenate(scores), np.concatenate(maps))

    def decision_function(self, images) -> np.ndarray:
        """Anomaly score per image: higher = more anomalous."""
        return self.score_images(images).scores

    def anomaly_map(self, images) -> np.ndarray:
        """Per-pixel anomaly scores ``(N, H, W)`` at the model's ``image_size``."""
        return self.score_images(images).maps

    def score(self, images, labels) -> float:
        """Image AUROC of ``decision_function(images)`` against ``labels`` (1 = anomalous): one number,
        higher = better, as scikit-learn's ``score(X, y)``."""
        from .metrics import image_auroc

        return image_auroc(np.asarray(labels), self.decision_function(images))

    def predict(self, images) -> np.ndarray:
        """1 = anomalous, 0 = nominal, by the threshold learned from nominal training data."""
        self._check_fitted()
        if self.threshold_ is None:
            raise RuntimeError(
                "no threshold: it is calibrated on held-out nominal training images, which needs at least "
                "2 training images and calibrate=True"
            )
        return (self.decision_function(images) > self.threshold_).astype(int)

    # -- thresholds from nominal data only --------------------------------------------------------
    def _calibrate(self, images: list) -> tuple[float | None, float | None]:
        """Threshold = a high quantile of *leave-one-out* scores of the nominal training images.

        Scoring a training image against a model that contains it gives ~0, so each image is
        scored by a model that excludes it (subclasses implement ``_leave_one_out_scores``). The
        test set is never looked at.
        """
        if not getattr(self, "calibrate", True) or len(images) < 2:
            return None, None
        start = time.perf_counter()
        scores, map_maxima = self._leave_one_out_scores(images)
        self.fit_seconds_["calibration"] = time.perf_counter() - start
        # kept (not saved) so that a notebook can choose its own threshold from nominal data only
        self.calibration_scores_, self.calibration_map_maxima_ = np.asarray(scores), np.asarray(map_maxima)
        q = self.threshold_quantile
        return float(np.quantile(scores, q)), float(np.quantile(map_maxima, q))

    def _leave_one_out_scores(self, images: list) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _fit_maps(self, batches: Iterable[list[torch.Tensor]], n_images: int, timings: dict) -> None:
        raise NotImplementedError

    def _score_maps(self, layer_maps: list[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        raise NotImplementedError


class EmbeddingScorer(AnomalyEstimator):
    """An estimator that scores its test images from embeddings that do not depend on the fit.

    Subclasses implement ``_embed_test(layer_maps) -> (B, ...)`` (one row per image, independent of
    the other images of the batch) and ``_score_block(embeddings) -> (image scores or None, patch
    scores (B, h, w))``. Every scoring path cuts the embeddings into the same blocks of
    :data:`SCORE_BLOCK` images, so ``score_embedded(embed_images(x))`` equals ``score_images(x)`` bit for bit.
    """

    def _embed_test(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _score_block(self, embeddings: torch.Tensor) -> tuple[np.ndarray | None, torch.Tensor]:
        raise NotImplementedError

    def _score_maps(self, layer_maps: list[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        """One batch of stage maps scored as one block (the base class's hook): image scores made from
        the smoothed maps where ``_score_block`` leaves them to the map maxima (PaDiM)."""
        scores, grid = self._score_block(self._embed_test(layer_maps))
        if scores is None:
            scores = upsample_and_smooth(grid, self.image_size).max(axis=(1, 2))
        return np.asarray(scores, dtype=np.float64), grid

    def _embedded_blocks(self, images) -> Iterator[torch.Tensor]:
        """``images``' test embeddings in blocks of :data:`SCORE_BLOCK` images, from the extractor's batches."""
        batches = self._extractor().iter_layer_maps(_as_list(images), desc="score")
        return rebatch((self._embed_test(layer_maps) for layer_maps in batches), SCORE_BLOCK)

    def score_images(self, images: Sequence[ImageLike] | ImageLike) -> ScoredImages:
        """Image scores ``(N,)`` and anomaly maps ``(N, H, W)`` in one pass over the images."""
        self._check_fitted()
        self._check_params()
        return self._collect(self._score_block(block) for block in self._embedded_blocks(images))

    def embed_images(self, images) -> torch.Tensor:
        """The test embeddings of ``images``, one row per image: what :meth:`score_embedded` scores.

        A sweep embeds its test set once and scores it with every fit; the embeddings depend only
        on the backbone and the estimator's feature settings, not on what it was fitted on.
        """
        batches = self._extractor().iter_layer_maps(_as_list(images), desc="embed")
        return torch.cat([self._embed_test(layer_maps) for layer_maps in batches])

    def score_embedded(self, embeddings: torch.Tensor) -> ScoredImages:
        """:meth:`score_images` of images already embedded by :meth:`embed_images`: the same
        numbers, bit for bit (the same blocks of :data:`SCORE_BLOCK` images)."""
        self._check_fitted()
        return self._collect(self._score_block(block) for block in torch.as_tensor(embeddings).split(SCORE_BLOCK))


def rebatch(batches: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Tensors of any lengths (along the first axis) -> the same rows in blocks of ``size`` (the last
    block may be shorter).

    >>> [len(block) for block in rebatch([torch.zeros(3), torch.zeros(4), torch.zeros(2)], 4)]
    [4, 4, 1]
    """
    pending, count = [], 0
    for batch in batches:
        pending.append(batch)
        count += len(batch)
        while count >= size:
            joined = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield joined[:size]
            pending, count = [joined[size:]], count - size
    if count:
        yield torch.cat(pending) if len(pending) > 1 else pending[0]


def _as_list(images) -> list:
    from pathlib import Path

    from PIL import Image

    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    return list(images)
