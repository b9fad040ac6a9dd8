"""Shared test fixtures: where the real MTD data lives, and tiny datasets written into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mtd_path() -> Path:
    return Path(os.environ.get("PATCHCORE_KIT_MTD", REPO_ROOT.parent / "shared" / "data" / "mtd"))


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny tensors gain nothing from threads, and on a busy
    machine thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mtd_root() -> Path:
    """The real Magnetic Tile Defects folder (env PATCHCORE_KIT_MTD); the test skips when absent."""
    root = _mtd_path()
    if not (root / "MT_Free").is_dir():
        pytest.skip(f"MTD data not found at {root} (set PATCHCORE_KIT_MTD to the folder holding MT_Free/)")
    return root


def write_png(path: Path, size: tuple[int, int] = (16, 16), value: int = 128, seed: int = 0) -> Path:
    """Write a small RGB PNG of ``size=(width, height)``: noise around ``value``, seeded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(value, 10, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = (16, 16), box: tuple[int, int, int, int] = (4, 4, 8, 8)) -> Path:
    """Write a binary mask PNG (0 / 255) with the rectangle ``box=(x0, y0, x1, y1)`` set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask, mode="L").save(path)
    return path


@pytest.fixture
def png_writer():
    """The :func:`write_png` helper as a fixture, for tests that build their own layouts."""
    return write_png


@pytest.fixture
def mask_writer():
    """The :func:`write_mask` helper as a fixture."""
    return write_mask


@pytest.fixture
def make_mvtec(tmp_path):
    """Factory writing a tiny MVTec AD category into ``tmp_path``; returns the dataset root.

    ``make_mvtec(category="widget", n_train=4, test={"good": 2, "scratch": 2}, masks=True)``
    writes ``<root>/widget/train/good``, ``test/<type>`` and (with ``masks``) ``ground_truth``.
    """

    def make(
        category: str = "widget",
        n_train: int = 4,
        test: dict[str, int] | None = None,
        masks: bool = True,
        size: tuple[int, int] = (16, 16),
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "mvtec"
        folder = root / category
        test = {"good": 2, "scratch": 2} if test is None else test
        (folder / "train" / "good").mkdir(parents=True, exist_ok=True)
        for i in range(n_train):
            write_png(folder / "train" / "good" / f"{i:03d}.png", size, 128, seed=i)
        for defect, count in test.items():
            for i in range(count):
                value = 128 if defect == "good" else 200
                write_png(folder / "test" / defect / f"{i:03d}.png", size, value, seed=100 + i)
                if masks and defect != "good":
                    write_mask(folder / "ground_truth" / defect / f"{i:03d}_mask.png", size)
        return root

    return make


@pytest.fixture
def make_folder_dataset(tmp_path):
    """Factory writing a plain folder dataset: ``<root>/good`` plus one folder per defect type."""

    def make(
        nominal: int = 10,
        defects: dict[str, int] | None = None,
        masks: str | None = None,
        nominal_name: str = "good",
        size: tuple[int, int] = (16, 16),
    ) -> Path:
        root = tmp_path / "mydata"
        defects = {"dent": 2, "scratch": 3} if defects is None else defects
        for i in range(nominal):
            write_png(root / nominal_name / f"img{i:02d}.jpg", size, 128, seed=i)
        for defect, count in defects.items():
            for i in range(count):
                write_png(root / defect / f"{defect}{i}.png", size, 200, seed=50 + i)
                if masks:
                    write_mask(root / masks / defect / f"{defect}{i}.png", size)
        return root

    return make


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny fitted PatchCore saved once: its path, tensors and metadata, to be damaged case by case."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from patchcore_kit import PatchCore

    folder = tmp_path_factory.mktemp("model")
    images = [np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8) for seed in range(2)]
    path = PatchCore(image_size=32, coreset_ratio=0.5, calibrate=False).fit(images).save(folder / "good.safetensors")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    return path, load_file(path), metadata


def refused_damaged_model(saved_model, tmp_path: Path, edit, words) -> Path:
    """Write ``saved_model`` damaged by ``edit(tensors, metadata)``; assert PatchCore.load refuses it
    with an InputError that starts with the file and names each of ``words``. Returns the file."""
    from safetensors.torch import save_file

    from patchcore_kit import PatchCore
    from patchcore_kit.errors import InputError

    tensors, metadata = dict(saved_model[1]), dict(saved_model[2])
    edit(tensors, metadata)
    path = tmp_path / "damaged.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    with pytest.raises(InputError) as error:
        PatchCore.load(path)
    message = str(error.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (word, message)
    return path


@pytest.fixture
def refuse_damaged():
    """The :func:`refused_damaged_model` check as a fixture."""
    return refused_damaged_model


@pytest.fixture(scope="session")
def tiny_gravel_split(tmp_path_factory):
    """A small demo gravel category (4 training tiles, 2 nominal and 1 per defect type at test, 64 px),
    built once per session: the widget, gallery and report tests read it and never write into it."""
    from patchcore_kit.data import load_dataset
    from patchcore_kit.data.demo import build_demo_dataset

    root = build_demo_dataset(
        tmp_path_factory.mktemp("demo") / "demo",
        categories=("gravel",),
        n_train=4,
        n_test_good=2,
        n_test_per_defect=1,
        image_size=64,
        progress=False,
    )
    return load_dataset(root, "mvtec", "gravel")
