"""The on-disk feature cache: one safetensors file per image holding every backbone stage computed so far.

An entry's key is the sha256 of the image file's bytes (or pixels) together with the backbone,
its weights (by content, :func:`~patchcore_kit.weights.weights_key`), the image size and the
cache layout; the stage names are not part of it, so PatchCore (layer2+3), PaDiM (layer1+2+3) and
SPADE read one entry per image. Writes are atomic (a private partial file, then a rename), and a
damaged entry is recomputed, never trusted.

Example:
    >>> import tempfile
    >>> import numpy as np, torch
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> key = cache.key(np.zeros((8, 8, 3), np.uint8), "efficientnet_lite0", "None", (64, 64))
    >>> cache.store(key, {"layer2": torch.ones(1, 4, 2, 2)})
    >>> cache.stored_stages(key), cache.load(key)["layer2"].shape
    (['layer2'], torch.Size([1, 4, 2, 2]))
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import InputError
from .images import ImageLike, to_pil_list

__all__ = ["FeatureCache"]


class FeatureCache:
    """Stage maps by image, one file each under ``folder`` (sharded by the key's first two characters)."""

    #: bumped when the layout of cache entries changes (then older entries get other keys)
    LAYOUT = "stages/2"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def key(self, image: ImageLike, backbone: str, weights_key: str, image_size: tuple[int, int]) -> str:
        """Content-addressed key: same file bytes + same backbone, weights and size = same entry.

        The stages are not part of the key: one entry per image holds all stages stored so far.
        """
        digest = hashlib.sha256()
        digest.update(repr((self.LAYOUT, backbone, weights_key, image_size)).encode())
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

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def stored_stages(self, key: str) -> list[str]:
        """The stages stored under ``key`` (reads the file header only; empty when absent or damaged)."""
        try:
            with safe_open(self.path(key), framework="pt") as handle:
                return list(handle.keys())
        except Exception:  # absent or damaged: nothing usable is stored
            return []

    def load(self, key: str) -> dict[str, torch.Tensor]:
        """The stages stored for ``key`` (empty when none, or when the entry is damaged)."""
        if not self.path(key).is_file():
            return {}
        try:
            return load_file(self.path(key))
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return {}

    def store(self, key: str, maps: dict[str, torch.Tensor]) -> None:
        """Write ``maps`` (every stage the entry should hold) as the entry of ``key``, atomically."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per writer: two processes filling the same entry never share a file.
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
        save_file({layer: m.contiguous() for layer, m in maps.items()}, partial)
        partial.replace(path)  # atomic: an interrupted sweep leaves no half-written entry
