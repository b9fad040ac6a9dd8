"""Reading a tune's ``settings.json`` back: into ``PatchCore``, and into an honest test figure.

>>> params = load_settings("runs/tune_mtd/settings.json")        # doctest: +SKIP
>>> model = PatchCore(**params)                                  # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError


def read_settings(path: str | Path) -> dict:
    """The whole settings file (params, protocol, which defective images the tune used)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such settings file (a tune writes DIR/settings.json)")
    try:
        settings = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a JSON settings file ({error})") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("params"), dict):
        raise InputError(f"{path}: not a tune settings file (no 'params' object)")
    return settings


def load_settings(path: str | Path) -> dict:
    """``PatchCore`` keyword arguments from a settings file: ``PatchCore(**load_settings(path))``."""
    from ..base import parameter_names
    from ..patchcore import PatchCore

    params = dict(read_settings(path)["params"])
    unknown = sorted(set(params) - set(parameter_names(PatchCore)))
    if unknown:
        raise InputError(f"{path}: unknown PatchCore parameter {unknown[0]!r} in params")
    if "layers" in params:
        params["layers"] = tuple(params["layers"])
    if isinstance(params.get("image_size"), list):
        params["image_size"] = tuple(params["image_size"])
    return params


def held_out_mask(settings: dict, relative_paths: list[str], labels: np.ndarray) -> np.ndarray:
    """Which test images a tune did not score: all nominal ones, and the defective ones it did not use."""
    used = set(settings.get("defective_used", []))
    return np.array([label == 0 or path not in used for path, label in zip(relative_paths, labels)])
