"""Naming a backbone's weights by their content, so the feature cache never serves another file's maps."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .backbones import OFFLINE_HINT
from .errors import WeightsUnavailableError

__all__ = ["weights_key"]

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
