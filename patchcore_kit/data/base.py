"""What every dataset loader returns: a list of samples, split into a training pool and a test set.

A :class:`Sample` is one image with its label, defect type, optional ground-truth mask and the
*group* it belongs to (the physical object it shows). A :class:`Split` holds the nominal training
pool and the test set. Loaders only list files; pixels are read later through
:mod:`patchcore_kit.images`, so building a split of a thousand images takes milliseconds.

Example:
    >>> from patchcore_kit.data import load_dataset
    >>> split = load_dataset("data/mvtec", "mvtec", category="bottle")   # doctest: +SKIP
    >>> split.with_shots(10, seed=0).train_paths[:2]                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..images import image_hw, read_mask

#: File endings read as images, compared case-insensitively (".PNG" counts as ".png").
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (hidden files such as macOS ``._x.png`` are skipped)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name so every run sees the same order."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def list_subfolders(folder: str | Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted (``.ipynb_checkpoints`` and friends are skipped)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def require_folder(folder: Path, what: str) -> Path:
    """Return ``folder`` or raise an :class:`InputError` that names it and says what was expected."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder ({what})")
    return folder


def require_images(folder: Path, what: str) -> list[Path]:
    """The images in ``folder``; a missing or image-less folder is an :class:`InputError`."""
    images = list_images(require_folder(folder, what))
    if not images:
        extensions = ", ".join(IMAGE_EXTENSIONS)
        raise InputError(f"{folder}: no images found ({what}; looked for {extensions})")
    return images


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    ``group`` names the physical object shown: images of one group must never be split between
    training and test, or the test set leaks into the memory bank. For MTD it is the tile; in the
    other datasets every image is its own object and ``group`` is its path stem.
    """

    path: Path
    label: int  # 0 nominal, 1 anomalous
    defect_type: str  # "good" for nominal
    mask_path: Path | None  # None: no defective pixels (nominal) or no mask available
    group: str


def find_mask(folder: Path, image: Path) -> Path:
    """The mask of ``image`` in ``folder``: ``<stem>_mask.<ext>`` (MVTec's naming), else ``<stem>.<ext>``.

    One rule for every dataset layout that keeps masks in a folder per defect type (MVTec's
    ``ground_truth/<defect>/``, a folder dataset's ``<masks>/<defect>/``); any image extension,
    in lower or upper case. A missing mask is an :class:`InputError` naming the expected file.
    """
    for stem in (f"{image.stem}_mask", image.stem):
        for extension in IMAGE_EXTENSIONS:
            for candidate in (folder / f"{stem}{extension}", folder / f"{stem}{extension.upper()}"):
                if candidate.is_file():
                    return candidate
    raise InputError(f"{folder / (image.stem + '_mask.png')}: missing ground-truth mask for {image}")


def read_sample_mask(sample: Sample) -> np.ndarray:
    """The ground-truth mask of ``sample`` as a boolean ``(H, W)`` array at the image's size.

    ``mask_path=None`` means "no defective pixels", so an all-False mask is returned. A mask whose
    size differs from its image raises :class:`InputError` naming the mask.
    """
    hw = image_hw(sample.path)
    if sample.mask_path is None:
        return np.zeros(hw, dtype=bool)
    return read_mask(sample.mask_path, hw=hw)


@dataclass(repr=False)
class Split:
    """A training pool (nominal images only) and a test set.

    ``has_masks=False`` means pixel-level ground truth is missing, so pixel metrics are reported as
    ``None``. ``root`` is the dataset folder; rows and the split hash use paths relative to it, so
    the same split on another machine has the same hash.

    Example:
        >>> split = load_mvtec("data/mvtec", "bottle")   # doctest: +SKIP
        >>> few = split.with_shots(5, seed=1)           # doctest: +SKIP
        >>> len(few.train), len(few.test) == len(split.test)   # doctest: +SKIP
        (5, True)
    """

    name: str
    train: list[Sample]
    test: list[Sample]
    has_masks: bool
    root: Path | None = field(default=None)

    def __post_init__(self) -> None:
        anomalous = [s.path for s in self.train if s.label != 0]
        if anomalous:
            raise ValueError(f"{anomalous[0]}: the training pool must hold nominal images only")

    # --- the training pool -------------------------------------------------------------------
    def with_shots(self, n: int | None, seed: int = 0) -> Split:
        """The same split with only ``n`` training images, drawn at random with ``seed``.

        ``n=None`` keeps the whole pool. The draw takes the first ``n`` of one seeded permutation,
        so with a fixed seed smaller ``n`` give subsets of larger ``n`` (a sample-efficiency curve
        then adds images instead of swapping them). The test set is untouched.
        """
        if n is None:
            return dataclasses.replace(self, train=list(self.train))
        where = self.root or self.name
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"{where}: the number of shots must be a positive integer, got {n!r}")
        if n > len(self.train):
            raise InputError(
                f"{where}: asked for {n} training images but the training pool holds only {len(self.train)}"
            )
        order = np.random.default_rng(seed).permutation(len(self.train))
        chosen = sorted(order[: int(n)].tolist())  # keep the pool's (sorted) order
        return dataclasses.replace(self, train=[self.train[i] for i in chosen])

    # --- convenient views --------------------------------------------------------------------
    @property
    def train_paths(self) -> list[Path]:
        return [s.path for s in self.train]

    @property
    def test_paths(self) -> list[Path]:
        return [s.path for s in self.test]

    @property
    def test_labels(self) -> np.ndarray:
        """Image-level ground truth of the test set (0 nominal, 1 anomalous) as an int array."""
        return np.array([s.label for s in self.test], dtype=int)

    @property
    def test_mask_paths(self) -> list[Path | None]:
        return [s.mask_path for s in self.test]

    @property
    def test_defect_types(self) -> list[str]:
        return [s.defect_type for s in self.test]

    def relative(self, path: Path) -> str:
        """``path`` relative to the dataset root (as posix text) when it lies inside it."""
        if self.root is not None:
            try:
                return Path(path).relative_to(self.root).as_posix()
            except ValueError:
                pass
        return Path(path).as_posix()

    def to_rows(self) -> list[dict]:
        """One dict per image (path, split, label, defect_type, group), e.g. for a ``split.csv``."""
        rows = []
        for part, samples in (("train", self.train), ("test", self.test)):
            for s in samples:
                rows.append(
                    {
                        "path": self.relative(s.path),
                        "split": part,
                        "label": s.label,
                        "defect_type": s.defect_type,
                        "group": s.group,
                    }
                )
        return rows

    def split_hash(self) -> str:
        """A short fingerprint of which image went where; equal hashes mean identical splits."""
        lines = sorted(f"{r['path']},{r['split']},{r['label']}" for r in self.to_rows())
        # surrogateescape: a file name with non-UTF-8 bytes hashes as those bytes (same hash as before otherwise)
        return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def summary(self) -> dict:
        """Counts worth printing next to a result: sizes, defect types, masks and the split hash."""
        labels = self.test_labels
        return {
            "name": self.name,
            "train": len(self.train),
            "test_nominal": int((labels == 0).sum()),
            "test_anomalous": int((labels == 1).sum()),
            "defect_types": dict(sorted(Counter(s.defect_type for s in self.test if s.label).items())),
            "has_masks": self.has_masks,
            "split_hash": self.split_hash(),
        }

    def __repr__(self) -> str:  # the default repr would print every sample
        s = self.summary()
        return (
            f"Split(name={self.name!r}, train={s['train']}, test={s['test_nominal']} nominal + "
            f"{s['test_anomalous']} anomalous, has_masks={self.has_masks})"
        )


def fraction_to_count(fraction: float, total: int, where: str) -> int:
    """How many of ``total`` items a test ``fraction`` takes: rounded, at least 1, at most total - 1."""
    if not 0.0 < float(fraction) < 1.0:
        raise InputError(f"{where}: test_fraction must lie strictly between 0 and 1, got {fraction!r}")
    if total < 2:
        raise InputError(
            f"{where}: need at least 2 nominal images (or tiles) to split into training and test, found {total}"
        )
    return int(min(max(round(fraction * total), 1), total - 1))
