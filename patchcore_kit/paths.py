"""Where the kit keeps its files by default: one place for every default folder.

Everything the kit writes without being told where (the demo data, the notebooks' caches) lies
under :func:`default_data_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir", "default_demo_root"]


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


def default_demo_root() -> Path:
    """Where :func:`~patchcore_kit.data.demo.build_demo_dataset` writes by default: ``<data dir>/demo``."""
    return default_data_dir() / "demo"
