"""Where the kit keeps its files by default: one place for every default folder.

Everything the kit writes without being told where lies under :func:`default_data_dir`:

====================================  ==============================================================
``<data dir>/demo``                   the full-size demo data (:func:`demo_data_dir`)
``<data dir>/demo_<size>``            a smaller demo build, one folder per size (FAST notebooks, FAST report)
``<data dir>/own_images_<demo>``      the demo data laid out as a folder of your own images (notebook 06)
``<data dir>/feature_cache``          backbone stage maps shared by the notebooks (:func:`feature_cache_dir`)
``<data dir>/umap_cache``             2-D UMAP embeddings of notebook 02 (:func:`umap_cache_dir`)
``<data dir>/sweeps``                 sample-efficiency sweeps run by notebook 03 (:func:`sweeps_dir`)
``<data dir>/own_images_runs``        notebook 06's reports on your images (:func:`own_images_runs_dir`)
====================================  ==============================================================

Example:
    >>> demo_data_dir().name, demo_data_dir().parent == default_data_dir()
    ('demo', True)
    >>> demo_data_dir({"image_size": 64, "n_train": 6, "n_test_good": 3, "n_test_per_defect": 1}).name
    'demo_64px_6-3-1'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DEMO_SIZE_KEYS",
    "default_data_dir",
    "default_demo_root",
    "demo_data_dir",
    "feature_cache_dir",
    "own_images_demo_dir",
    "own_images_runs_dir",
    "sweeps_dir",
    "umap_cache_dir",
]

#: The arguments of :func:`~patchcore_kit.data.demo.build_demo_dataset` that set a build's size.
DEMO_SIZE_KEYS = ("image_size", "n_train", "n_test_good", "n_test_per_defect")


def default_data_dir() -> Path:
    """The base data folder.

    ``$PATCHCORE_KIT_DATA`` when set, else ``data/`` of a source checkout (a repository with
    ``.git`` or ``pyproject.toml``), else ``~/.cache/patchcore_kit`` for an installed package.
    """
    configured = os.environ.get("PATCHCORE_KIT_DATA")
    if configured:
        return Path(configured).expanduser()
    repository = Path(__file__).resolve().parents[1]
    if (repository / ".git").exists() or (repository / "pyproject.toml").is_file():
        return repository / "data"
    return Path.home() / ".cache" / "patchcore_kit"


def demo_data_dir(sizes: Mapping[str, int] | None = None) -> Path:
    """The folder of a demo build: ``<data dir>/demo`` at the generator's default size, else one per size.

    ``sizes`` holds the build's :data:`DEMO_SIZE_KEYS` (``None``: the generator's defaults). Each
    size gets a folder of its own, named after it (``demo_64px_6-3-1``: 64-pixel tiles, 6 training,
    3 nominal test and 1 test tile per defect type), because a build is replaced whenever it is
    asked for with other sizes: two callers sharing one folder would rebuild each other's data.
    """
    if sizes is None:
        return default_data_dir() / "demo"
    if set(sizes) != set(DEMO_SIZE_KEYS):
        raise ValueError(f"sizes: expected the keys {', '.join(DEMO_SIZE_KEYS)}, got {', '.join(sizes)}")
    size = sizes["image_size"], sizes["n_train"], sizes["n_test_good"], sizes["n_test_per_defect"]
    return default_data_dir() / "demo_{}px_{}-{}-{}".format(*(int(value) for value in size))


def default_demo_root() -> Path:
    """Where :func:`~patchcore_kit.data.demo.build_demo_dataset` writes by default: ``<data dir>/demo``."""
    return demo_data_dir()


def own_images_demo_dir(sizes: Mapping[str, int] | None = None) -> Path:
    """The demo data of ``sizes`` copied into the layout of a folder of your own photographs."""
    return default_data_dir() / f"own_images_{demo_data_dir(sizes).name}"


def feature_cache_dir() -> Path:
    """The notebooks' shared feature cache: ``<data dir>/feature_cache``."""
    return default_data_dir() / "feature_cache"


def umap_cache_dir() -> Path:
    """Notebook 02's cache of 2-D UMAP embeddings: ``<data dir>/umap_cache``."""
    return default_data_dir() / "umap_cache"


def sweeps_dir() -> Path:
    """Where notebook 03 writes the sweeps it runs: ``<data dir>/sweeps``."""
    return default_data_dir() / "sweeps"


def own_images_runs_dir() -> Path:
    """Where notebook 06 writes its reports on your own images: ``<data dir>/own_images_runs``."""
    return default_data_dir() / "own_images_runs"
