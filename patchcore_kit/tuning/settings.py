"""Reading a tune's ``settings.json`` back: into its estimator, and into an honest test figure.

A settings file records its ``method`` (files written before tunes had one are PatchCore's), and
is read only as that method's: PaDiM settings given where PatchCore's are expected are one error
naming the file and both methods, never a PatchCore built from a PaDiM stage choice.

>>> params = load_settings("runs/tune_mtd/settings.json")             # doctest: +SKIP
>>> model = PatchCore(**params)                                       # doctest: +SKIP
>>> model = estimator_from_settings("runs/tune_mtd_padim/settings.json")   # doctest: +SKIP
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


def settings_method(settings: dict, path) -> str:
    """The method a settings dict is for (``"patchcore"`` when it predates methods)."""
    from .grid import METHODS

    method = settings.get("method", "patchcore")
    if method not in METHODS:
        raise InputError(f"{path}: unknown method {method!r} in the settings file; known: {', '.join(METHODS)}")
    return method


def load_settings(path: str | Path, method: str | None = "patchcore") -> dict:
    """Keyword arguments of the estimator a settings file is for: ``PatchCore(**load_settings(path))``.

    ``method`` is the estimator the caller will build (``"patchcore"``, ``"padim"``, ``"spade"``);
    a file for another method is refused. ``method=None`` accepts whichever the file holds
    (:func:`estimator_from_settings` builds it).
    """
    from ..base import parameter_names
    from .grid import METHODS
    from .run import estimator_class

    settings = read_settings(path)
    found = settings_method(settings, path)
    if method is not None and found != method:
        wanted, held = METHODS[method].label if method in METHODS else method, METHODS[found].label
        raise InputError(
            f"{path}: holds {held} settings (method {found!r}), but {wanted} settings are needed here; "
            f"use {held}(**load_settings(path, {found!r})) or a {wanted} tune's settings.json"
        )
    estimator = estimator_class(found)
    params = dict(settings["params"])
    unknown = sorted(set(params) - set(parameter_names(estimator)))
    if unknown:
        raise InputError(f"{path}: unknown {estimator.__name__} parameter {unknown[0]!r} in params")
    if "layers" in params:
        params["layers"] = tuple(params["layers"])
    if isinstance(params.get("image_size"), list):
        params["image_size"] = tuple(params["image_size"])
    return params


def estimator_from_settings(path: str | Path, **runtime):
    """The estimator a settings file is for, built with its params (and ``runtime`` options such as
    ``device``, ``feature_cache``, ``seed``): PatchCore, PaDiM or SPADE."""
    from .run import estimator_class

    params = load_settings(path, method=None)
    return estimator_class(settings_method(read_settings(path), path))(**params, **runtime)


def held_out_mask(settings: dict, relative_paths: list[str], labels: np.ndarray) -> np.ndarray:
    """Which test images a tune did not score: all nominal ones, and the defective ones it did not use."""
    used = set(settings.get("defective_used", []))
    return np.array([label == 0 or path not in used for path, label in zip(relative_paths, labels)])
