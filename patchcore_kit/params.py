"""What every estimator parameter may be: one rule per name, used wherever a value enters the kit.

The same table checks a value three ways, so a value one of them accepts none of them refuses:

* ``check_params(owner, params)``: the estimators, at the start of ``fit`` (before the backbone
  runs) and before scoring;
* ``cli_type(name)``: the command line's argument parsing (``--patch-size 4`` is a usage error);
* ``problem(name, value)``: :func:`patchcore_kit.modelfile.read_model` on every parameter a model
  file carries, so a damaged file fails on load instead of scoring nonsense.

Every parameter of every estimator has a rule here (a test checks it), so ``fit`` refuses a bad
value before the backbone runs, whichever estimator it is.

>>> problem("patch_size", 4)
'must be an odd whole number >= 1 (1, 3, 5, ...), got 4'
>>> check_params("PatchCore", {"patch_size": 3, "num_neighbors": 9})
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InputError  # no numpy or torch here: the command line parses before they load

STAGES = ("layer1", "layer2", "layer3", "layer4")  # the same names as backbones.STAGES (no torch here)
OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")
RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
)
BACKBONES = OFFLINE_BACKBONES + RESNETS
#: The kit's defaults, in one place (here: the command line reads them without loading torch).
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_LAYERS = ("layer2", "layer3")
DEFAULT_IMAGE_SIZE = 224
AGGREGATIONS = ("mean", "unfold")  # the same as features.AGGREGATIONS and BORDERS (no torch here)
BORDERS = ("zeros", "reflect", "valid")
#: The smallest side an image is resized to: the deepest stage (layer4) has stride 32, so every
#: stage keeps at least one position. Anything smaller is a typo, not a setting.
MIN_IMAGE_SIDE = 32
#: numpy's and torch's generators both take any seed in this range.
MAX_SEED = 2**32 - 1
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool is no bool subclass


def _is_int(value) -> bool:
    # numbers.Integral covers numpy's integers too
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value) and math.isfinite(value)


def _int_at_least(low: int) -> Callable[[object], bool]:
    return lambda value: _is_int(value) and value >= low


def _or_none(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _one_of(*choices: str) -> Callable[[object], bool]:
    return lambda value: isinstance(value, str) and value in choices


def _side(value) -> bool:
    return _is_int(value) and value >= MIN_IMAGE_SIDE


def _image_size(value) -> bool:
    if isinstance(value, (list, tuple)):
        return len(value) == 2 and all(map(_side, value))
    return _side(value)


def _layers(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(v in STAGES for v in value)
        and len(set(value)) == len(value)
    )


def _coreset_ratio(value) -> bool:
    # a fraction of all patches, or (a whole number above 1) a count of bank entries
    return _is_number(value) and (0 < value <= 1 or (value > 1 and float(value).is_integer()))


def _path_text(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value) != ""


# --- command-line text -> value ---------------------------------------------------------------
def _parse_int(text: str) -> int:
    return int(text)


def _parse_image_size(text: str):
    """``224`` or ``256x320`` (height x width)."""
    if "x" in text.lower():
        h, w = text.lower().split("x")
        return int(h), int(w)
    return int(text)


def _parse_ratio(text: str):
    value = float(text)
    return int(value) if value > 1 and value.is_integer() else value


def _parse_optional_int(text: str):
    return None if text.lower() == "none" else int(text)


@dataclass(frozen=True)
class Rule:
    """``what`` the value must be (said in messages), the ``check``, and how to read it from text."""

    what: str
    check: Callable[[object], bool]
    parse: Callable[[str], object] = str


RULES: dict[str, Rule] = {
    "backbone": Rule(f"one of {', '.join(BACKBONES)}", _one_of(*BACKBONES)),
    "layers": Rule(f"a non-empty list of stage names from {', '.join(STAGES)}, each once", _layers),
    "patch_size": Rule(
        "an odd whole number >= 1 (1, 3, 5, ...)", lambda v: _is_int(v) and v >= 1 and v % 2 == 1, _parse_int
    ),
    "target_dim": Rule("a whole number >= 1 or none", _or_none(_int_at_least(1)), _parse_optional_int),
    "coreset_ratio": Rule("a fraction in (0, 1] or a whole count > 1", _coreset_ratio, _parse_ratio),
    "sampler": Rule("one of greedy, random, none", _one_of("greedy", "random", "none")),
    "projection_dim": Rule("a whole number >= 1 or none", _or_none(_int_at_least(1)), _parse_optional_int),
    "num_neighbors": Rule("a whole number >= 1", _int_at_least(1), _parse_int),
    "image_size": Rule(f"N or HxW with every side a whole number >= {MIN_IMAGE_SIDE}", _image_size, _parse_image_size),
    "weights": Rule("a file path or URL, or none", _or_none(_path_text)),
    "device": Rule("cpu, cuda, cuda:N or mps", lambda v: isinstance(v, str) and bool(_DEVICE.match(v))),
    "batch_size": Rule("a whole number >= 1", _int_at_least(1), _parse_int),
    "seed": Rule(f"a whole number from 0 to {MAX_SEED}", lambda v: _is_int(v) and 0 <= v <= MAX_SEED, _parse_int),
    "threshold_quantile": Rule("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1, float),
    "calibrate": Rule("true or false", _is_bool),
    "feature_cache": Rule("a folder path or none", _or_none(_path_text)),
    "progress": Rule("true or false", _is_bool),
    # added with the local-aggregation options (older model files lack them: see modelfile.DEFAULTS)
    "aggregation": Rule("one of mean, unfold", _one_of(*AGGREGATIONS)),
    "border": Rule("one of zeros, reflect, valid", _one_of(*BORDERS)),
    "pretrain_dim": Rule("a whole number >= 1 or none", _or_none(_int_at_least(1)), _parse_optional_int),
    # added with approximate search (older model files lack it: they searched exactly)
    "search": Rule("one of exact, hnsw, ivf, auto", _one_of("exact", "hnsw", "ivf", "auto")),
    # the baselines' own (baselines/)
    "n_features": Rule(
        "a whole number >= 1, 'auto' or none",
        lambda v: v is None or v == "auto" or _int_at_least(1)(v),
        lambda text: "auto" if text == "auto" else _parse_optional_int(text),
    ),
    "epsilon": Rule("a number > 0", lambda v: _is_number(v) and v > 0, float),
    "global_layer": Rule(f"one of {', '.join(STAGES)}, or none", _or_none(_one_of(*STAGES))),
    "top_k_images": Rule("a whole number >= 1", _int_at_least(1), _parse_int),
    "k": Rule("a whole number >= 1", _int_at_least(1), _parse_int),
    # SPADE's pixel search (baselines.spade.PIXEL_MATCHING)
    "pixel_matching": Rule("one of aligned, per_layer", _one_of("aligned", "per_layer")),
    # command-line only
    "shots": Rule("a whole number >= 1", _int_at_least(1), _parse_int),
}


def problem(name: str, value) -> str | None:
    """``"must be ..., got ..."`` when ``value`` breaks the rule for ``name``; None when it is fine."""
    rule = RULES.get(name)
    if rule is None or rule.check(value):
        return None
    return f"must be {rule.what}, got {value!r}"


def cross_problem(params: dict) -> str | None:
    """Rules between parameters: what one value allows depends on another."""
    target, layers = params.get("target_dim"), params.get("layers")
    if _is_int(target) and _layers(layers) and target < len(layers):
        return f"target_dim {target} is smaller than the number of layers ({len(layers)}): each layer needs a channel"
    if params.get("aggregation") == "unfold" and params.get("border") == "valid":
        return (
            "border 'valid' leaves neighbours out of a mean; aggregation 'unfold' keeps every neighbour's "
            "slot, so use border 'zeros' (the official code) or 'reflect'"
        )
    return None


def check_params(owner: str, params: dict) -> None:
    """Raise ``InputError("{owner}: {name} must be ..., got ...")`` for the first value that breaks its rule."""
    for name, value in params.items():
        text = problem(name, value)
        if text is not None:
            raise InputError(f"{owner}: {name} {text}")
    text = cross_problem(params)
    if text is not None:
        raise InputError(f"{owner}: {text}")


def cli_type(name: str) -> Callable[[str], object]:
    """An argparse ``type=`` for ``name``: text -> checked value, or a one-line usage error."""
    import argparse

    rule = RULES[name]
    label = name.replace("_", " ")

    def parse(text: str):
        try:
            value = rule.parse(text)
        except ValueError:
            value = text
        if not rule.check(value):
            raise argparse.ArgumentTypeError(f"{label} must be {rule.what}, got {text!r}")
        return value

    parse.__name__ = label  # argparse names the type in its own messages
    return parse


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work starts (it would fail mid-run)."""
    if device == "cpu":
        return
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
