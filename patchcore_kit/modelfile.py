"""The PatchCore model file: one ``.safetensors`` file (tensors + JSON metadata, never pickle).

Reading one is where a damaged or hand-edited file must fail, with a message naming the file,
rather than later as NaN scores or a traceback. :func:`read_model` checks everything the file
carries before a model is built from it:

* the format tag, and exactly the metadata entries and arrays this version writes;
* every parameter by the same rules the estimator's ``fit`` and the command line use
  (:mod:`patchcore_kit.params`), and the fitted values' types and consistency;
* the memory bank: a non-empty 2-D array of finite floats, whose width is what the backbone's
  stages and the embedding parameters produce (:func:`check_bank_width`), and index arrays that
  point inside the training set.

>>> params, fitted, tensors = read_model("bottle.safetensors", parameter_names(PatchCore))   # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import InputError
from .params import _is_int, _is_number, cross_problem, problem

FORMAT = "patchcore_kit.PatchCore/1"
#: Parameters added after the first model files were written, and the value that reproduces what
#: those files were fitted with. A file without them reads as this older behaviour.
DEFAULTS = {"aggregation": "mean", "border": "valid", "pretrain_dim": None, "search": "exact"}
ARRAYS = ("memory_bank", "bank_image", "coreset_indices")


def _or_null(check):
    return lambda value: value is None or check(value)


def _is_hw(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)


#: name -> (check, what it must be); exactly these entries, no more, no fewer
FITTED_CHECKS = {
    "n_train_": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "n_patches_": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "feature_shape_": (_is_hw, "[height, width]"),
    "threshold_": (_or_null(_is_number), "a finite number or null"),
    "pixel_threshold_": (_or_null(_is_number), "a finite number or null"),
    "fit_seconds_": (lambda v: isinstance(v, dict) and all(map(_is_number, v.values())), "an object of seconds"),
}


def write_model(path: str | Path, tensors: dict[str, torch.Tensor], params: dict, fitted: dict) -> Path:
    """Write the file atomically: a crash never leaves half a model in place of a good one."""
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {"format": FORMAT, "params": json.dumps(params), "fitted": json.dumps(fitted)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, partial, metadata=metadata)
    return path


def read_model(path: str | Path, param_names: Sequence[str]) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """``(params, fitted, tensors)`` of a model file, every entry checked; ``InputError`` naming the file otherwise."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable safetensors model ({error})") from None
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path}: not a patchcore_kit PatchCore model (format {metadata.get('format')!r})")
    params = _json_object(path, metadata, "params")
    for name, value in DEFAULTS.items():
        if name in param_names and name not in params:
            params[name] = value
    _check_names(path, "parameter", params, param_names)
    for name in param_names:
        text = problem(name, params[name])
        if text is not None:
            raise InputError(f"{path}: damaged model file (parameter {name!r} {text})")
    text = cross_problem(params)
    if text is not None:
        raise InputError(f"{path}: damaged model file ({text})")
    fitted = _json_object(path, metadata, "fitted")
    _check_names(path, "fitted value", fitted, FITTED_CHECKS)
    for name, (check, expected) in FITTED_CHECKS.items():
        if not check(fitted[name]):
            raise InputError(
                f"{path}: damaged model file (fitted value {name!r} must be {expected}, got {fitted[name]!r})"
            )
    _check_tensors(path, tensors, fitted)
    return params, fitted, tensors


def check_bank_width(
    path: Path,
    bank: torch.Tensor,
    channels: dict[str, int],
    layers: Sequence[str],
    patch_size: int,
    embed: Callable[[list[torch.Tensor]], torch.Tensor],
) -> None:
    """The bank's width must be what ``embed`` makes of the backbone's stages, or scores mean nothing.

    ``embed`` runs on small zero maps (one per layer, each stage's channel count, grids in the
    stages' stride ratios): milliseconds, and whatever the embedding does, the check follows it.
    """
    from .backbones import STRIDES

    first = STRIDES[layers[0]]
    # the deepest stage still gets a few positions more than a patch covers (a "valid" border crops p - 1)
    side = (patch_size + 3) * max(STRIDES[layer] for layer in layers) // first
    maps = [
        torch.zeros(1, channels[layer], max(1, side * first // STRIDES[layer]), max(1, side * first // STRIDES[layer]))
        for layer in layers
    ]
    try:
        width = embed(maps).shape[1]
    except (RuntimeError, ValueError) as error:
        raise InputError(f"{path}: damaged model file (its parameters give no patch embedding: {error})") from None
    if width != bank.shape[1]:
        raise InputError(
            f"{path}: damaged model file (memory_bank rows have {bank.shape[1]} values, but layers "
            f"{list(layers)} with these parameters give {width})"
        )


def _json_object(path: Path, metadata: dict, key: str) -> dict:
    if key not in metadata:
        raise InputError(f"{path}: damaged model file (no {key!r} metadata)")
    try:
        value = json.loads(metadata[key])
    except ValueError as error:
        raise InputError(f"{path}: damaged model file ({key!r} metadata is not JSON: {error})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: damaged model file ({key!r} metadata is not a JSON object)")
    return value


def _check_names(path: Path, kind: str, found, expected) -> None:
    missing = [name for name in expected if name not in found]
    unknown = sorted(name for name in found if name not in expected)
    problems = [f"{word} {kind}s {names}" for word, names in (("missing", missing), ("unknown", unknown)) if names]
    if problems:
        raise InputError(f"{path}: not a model this version can read ({'; '.join(problems)})")


def _check_tensors(path: Path, tensors: dict, fitted: dict) -> None:
    _check_names(path, "array", tensors, ARRAYS)
    bank = tensors["memory_bank"]
    if bank.ndim != 2 or len(bank) == 0 or bank.shape[1] == 0 or not bank.is_floating_point():
        raise InputError(
            f"{path}: damaged model file (memory_bank must be a non-empty 2-D float array, "
            f"got {tuple(bank.shape)} {bank.dtype})"
        )
    if not torch.isfinite(bank).all():
        bad = int((~torch.isfinite(bank)).any(dim=1).sum())
        raise InputError(f"{path}: damaged model file (memory_bank holds NaN or infinite values in {bad} rows)")
    h, w = fitted["feature_shape_"]
    if fitted["n_patches_"] != fitted["n_train_"] * h * w:
        raise InputError(
            f"{path}: damaged model file (n_patches_ {fitted['n_patches_']} is not "
            f"n_train_ {fitted['n_train_']} x feature_shape_ {h}x{w})"
        )
    if len(bank) > fitted["n_patches_"]:
        raise InputError(
            f"{path}: damaged model file (memory_bank has {len(bank)} rows, more than the "
            f"{fitted['n_patches_']} training patches)"
        )
    for name, upper in (("bank_image", fitted["n_train_"]), ("coreset_indices", fitted["n_patches_"])):
        values = tensors[name]
        if values.dtype != torch.int64 or values.shape != (len(bank),):
            raise InputError(
                f"{path}: damaged model file ({name} must be {len(bank)} int64 values, one per "
                f"memory_bank row, got {tuple(values.shape)} {values.dtype})"
            )
        if values.min() < 0 or values.max() >= upper:
            raise InputError(f"{path}: damaged model file ({name} values must lie in [0, {upper}))")
