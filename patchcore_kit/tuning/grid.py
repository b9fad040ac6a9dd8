"""The candidates a tune scores: each method's default grid, grid files, and their checks.

Every method has its own keys, defaults and default grid (:data:`METHODS`): PatchCore's stages,
patch size and aggregation; PaDiM's stages and channel subset (``n_features``); SPADE's pixel
stages, its global stage (``global_layer``) and its two k's. ``image_size`` and ``aspect`` are
everyone's. A key the method does not have is one error naming the key and the method.

A grid file (YAML or JSON) holds lists whose product is the grid, and/or an explicit list::

    layers: [[layer2, layer3], [layer3, layer4]]   # stage sets
    patch_size: [1, 3]
    image_size: [224]
    aspect: [stretch, keep]                         # keep: short side = image_size, aspect kept
    aggregation: [mean]
    candidates:                                     # extra candidates, each a dict of the same keys
      - {layers: [layer3], patch_size: 1, image_size: 160}
    fixed: {coreset_ratio: 0.1, num_neighbors: 9}   # the same for every candidate

**Aspect.** ``stretch`` resizes every image to ``image_size`` × ``image_size``. ``keep`` gives the
model a fixed ``(height, width)`` whose short side is ``image_size`` and whose ratio is the
training pool's median aspect ratio, each side rounded to the backbone's stride of 32. For a line
whose images share one shape (one camera, one part) that keeps every image's aspect exactly; on a
dataset of mixed shapes (MTD) it is the typical shape, not each image's own. Per-image grid sizes
would need a variable-size path through features, memory bank, maps and metrics; a fixed (h, w)
keeps ``PatchCore`` unchanged and its settings a plain ``image_size`` (docs/tuning.md).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backbones import BACKBONES, STAGES
from ..errors import InputError
from ..features import AGGREGATIONS, BORDERS
from ..patchcore import PatchCore

ASPECTS = ("stretch", "keep")
_PATCHCORE = PatchCore().get_params()  # the estimator's own defaults: written down once, in its constructor
#: Keys a candidate may vary, and their defaults when a grid leaves them out (``border`` None: not
#: passed, so PatchCore's own default; ``aspect``: how images are resized, not a PatchCore parameter).
CANDIDATE_DEFAULTS = {
    **{k: _PATCHCORE[k] for k in ("layers", "patch_size", "aggregation", "image_size", "pretrain_dim", "target_dim")},
    "border": None,
    "aspect": "stretch",
}
#: Keys that are the same for every candidate (``fixed:``), and their defaults.
FIXED_DEFAULTS = {
    k: _PATCHCORE[k] for k in ("backbone", "weights", "coreset_ratio", "num_neighbors", "sampler", "projection_dim")
}
#: The default grid (issue #12): the levers that moved MTD most, at the kit's 10 % coreset. Aggregation
#: stays at the kit's "mean" (unfold lost on MTD's folds in issue #10 and widens every feature to 1024).
DEFAULT_GRID = {
    "layers": [("layer2", "layer3"), ("layer3",), ("layer3", "layer4"), ("layer2", "layer3", "layer4")],
    "patch_size": [1, 3, 5],
    "aggregation": ["mean"],
    "image_size": [224],
    "aspect": ["stretch", "keep"],
}
STRIDE = 32  # the deepest stage's stride: sides that are multiples of it give whole feature cells

#: PaDiM (Defard et al.): stage set and channel subset; its paper's layer1+2+3 first, then the deeper
#: sets that suited MTD for PatchCore. ``n_features`` "auto" keeps the paper's WRN50 share (550/1792).
PADIM_CANDIDATE_DEFAULTS = {
    "layers": ("layer1", "layer2", "layer3"),
    "n_features": "auto",
    "epsilon": 0.01,
    "image_size": 224,
    "aspect": "stretch",
}
DEFAULT_PADIM_GRID = {
    "layers": [("layer1", "layer2", "layer3"), ("layer2", "layer3"), ("layer3",), ("layer3", "layer4")],
    "n_features": ["auto"],
    "image_size": [224],
    "aspect": ["stretch", "keep"],
}
#: SPADE (Cohen & Hoshen): pixel stages and the stage pooled for the image-level kNN (paper: layer1+2+3
#: and layer4; ``global_layer: null`` pools the deepest pixel stage). Its pixel kNN grows with the
#: square of the first stage's grid (layer1 at 224 px: 56 x 56), so layer1+2+3 is by far the dearest.
SPADE_CANDIDATE_DEFAULTS = {
    "layers": ("layer1", "layer2", "layer3"),
    "global_layer": "layer4",
    "top_k_images": 50,
    "k": 1,
    "image_size": 224,
    "aspect": "stretch",
}
DEFAULT_SPADE_GRID = {
    "layers": [("layer1", "layer2", "layer3"), ("layer2", "layer3"), ("layer3",)],
    "global_layer": ["layer4", None],
    "image_size": [224],
    "aspect": ["stretch", "keep"],
}
BASELINE_FIXED_DEFAULTS = {"backbone": "efficientnet_lite0", "weights": None}


@dataclass(frozen=True)
class MethodGrid:
    """What a tune of one method may vary (``candidate``), holds fixed (``fixed``), and tries by default."""

    label: str  # the estimator's class name, as messages say it
    candidate: dict
    fixed: dict
    default_grid: dict
    #: PatchCore's grid uses None for "the estimator's default" (border, dims); a baseline's None is a value
    #: (PaDiM ``n_features: null`` keeps every channel, SPADE ``global_layer: null`` pools a pixel stage).
    none_is_default: bool


METHODS = {
    "patchcore": MethodGrid("PatchCore", CANDIDATE_DEFAULTS, FIXED_DEFAULTS, DEFAULT_GRID, True),
    "padim": MethodGrid("PaDiM", PADIM_CANDIDATE_DEFAULTS, BASELINE_FIXED_DEFAULTS, DEFAULT_PADIM_GRID, False),
    "spade": MethodGrid("SPADE", SPADE_CANDIDATE_DEFAULTS, BASELINE_FIXED_DEFAULTS, DEFAULT_SPADE_GRID, False),
}


def method_grid(method: str, where: str = "tune") -> MethodGrid:
    if method not in METHODS:
        raise InputError(f"{where}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def _owner_hint(key: str, method: str) -> str:
    """`` (a PatchCore setting)`` when another method has ``key``: the usual cause of the mistake."""
    owners = [
        spec.label for name, spec in METHODS.items() if name != method and (key in spec.candidate or key in spec.fixed)
    ]
    return f" ({' and '.join(owners)} {'has' if len(owners) == 1 else 'have'} it)" if owners else ""


def stage_name(layers) -> str:
    """``("layer3", "layer4")`` -> ``"layer3+4"``."""
    return "layer" + "+".join(layer.removeprefix("layer") for layer in layers)


def candidate_name(candidate: dict, method: str = "patchcore") -> str:
    """A readable, unique name: ``"layer3+4, 224 px, p=1"`` (+ what differs from the method's defaults).

    PatchCore's names are as they were before tunes had a method (``p=`` always shown), so that an
    older tune's ``folds.csv`` still resumes.
    """
    defaults = METHODS[method].candidate
    size = candidate["image_size"]
    size_text = f"{size} px" if isinstance(size, int) else f"{size[0]}x{size[1]} px"
    parts = [stage_name(candidate["layers"]), size_text]
    if method == "patchcore":
        parts.append(f"p={candidate['patch_size']}")
    if candidate["aspect"] != "stretch":
        parts.insert(2, f"aspect {candidate['aspect']}")
    for key in defaults:
        if key not in ("layers", "image_size", "aspect", "patch_size") and candidate.get(key) != defaults[key]:
            parts.append(f"{key} {candidate[key]}")
    return ", ".join(parts)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_candidate(candidate: dict, where: str, method: str = "patchcore") -> dict:
    """One candidate with defaults filled in, or an :class:`InputError` naming ``where`` and the problem."""
    spec = method_grid(method, where)
    unknown = sorted(set(candidate) - set(spec.candidate))
    if unknown:
        raise InputError(
            f"{where}: unknown grid key {unknown[0]!r} for {spec.label}{_owner_hint(unknown[0], method)}; "
            f"a {spec.label} grid varies {', '.join(spec.candidate)} (model options go under 'fixed:')"
        )
    out = {**spec.candidate, **candidate}
    out["layers"] = _check_layers(out["layers"], where)
    size = out["image_size"]
    if not _is_int(size) or size < STRIDE:
        raise InputError(f"{where}: image_size must be a whole number of pixels of at least {STRIDE}, got {size!r}")
    if out["aspect"] not in ASPECTS:
        raise InputError(f"{where}: aspect must be one of {', '.join(ASPECTS)}, got {out['aspect']!r}")
    if method == "padim":
        return _check_padim(out, where)
    if method == "spade":
        return _check_spade(out, where)
    return _check_patchcore(out, where)


def _check_layers(layers, where: str) -> tuple:
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        raise InputError(f"{where}: layers must be a list of stages like [layer2, layer3], got {layers!r}")
    bad = [layer for layer in layers if layer not in STAGES]
    if bad:
        raise InputError(f"{where}: unknown stage {bad[0]!r} in layers; choose from {', '.join(STAGES)}")
    return tuple(sorted(set(layers), key=STAGES.index))


def _check_padim(out: dict, where: str) -> dict:
    n = out["n_features"]
    if not (n is None or n == "auto" or (_is_int(n) and n >= 1)):
        raise InputError(
            f"{where}: n_features must be auto, a positive whole number or null (every channel), got {n!r}"
        )
    eps = out["epsilon"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise InputError(f"{where}: epsilon must be a positive number (PaDiM: 0.01), got {eps!r}")
    return out


def _check_spade(out: dict, where: str) -> dict:
    if out["global_layer"] is not None and out["global_layer"] not in STAGES:
        raise InputError(
            f"{where}: global_layer must be a stage ({', '.join(STAGES)}) or null (the deepest pixel "
            f"stage, pooled), got {out['global_layer']!r}"
        )
    for key in ("top_k_images", "k"):
        if not _is_int(out[key]) or out[key] < 1:
            raise InputError(f"{where}: {key} must be a positive whole number, got {out[key]!r}")
    return out


def _check_patchcore(out: dict, where: str) -> dict:
    p = out["patch_size"]
    if not _is_int(p) or p < 1 or p % 2 == 0:
        raise InputError(f"{where}: patch_size must be an odd whole number of at least 1 (1, 3, 5, ...), got {p!r}")
    for key, choices in (("aggregation", AGGREGATIONS), ("border", BORDERS + (None,))):
        if out[key] not in choices:
            raise InputError(f"{where}: {key} must be one of {', '.join(map(str, choices))}, got {out[key]!r}")
    if out["aggregation"] == "unfold" and out["border"] == "valid":
        raise InputError(f"{where}: aggregation unfold needs border zeros or reflect, not valid")
    for key in ("pretrain_dim", "target_dim"):
        if out[key] is not None and (not _is_int(out[key]) or out[key] < 1):
            raise InputError(f"{where}: {key} must be a positive whole number or null, got {out[key]!r}")
    return out


def check_fixed(fixed: dict, where: str, method: str = "patchcore") -> dict:
    spec = method_grid(method, where)
    if not isinstance(fixed, dict):
        raise InputError(f"{where}: fixed must be a mapping of option to value, got {fixed!r}")
    unknown = sorted(set(fixed) - set(spec.fixed))
    if unknown:
        raise InputError(
            f"{where}: unknown fixed option {unknown[0]!r} for {spec.label}{_owner_hint(unknown[0], method)}; "
            f"use {', '.join(spec.fixed)}"
        )
    out = {**spec.fixed, **fixed}
    if out["backbone"] not in BACKBONES:
        raise InputError(f"{where}: unknown backbone {out['backbone']!r}; choose from {', '.join(BACKBONES)}")
    if method != "patchcore":
        return out
    ratio = out["coreset_ratio"]
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, (int, float))
        or ratio <= 0
        or (ratio > 1 and not float(ratio).is_integer())
    ):
        raise InputError(f"{where}: coreset_ratio must be a fraction in (0, 1] or a whole count, got {ratio!r}")
    if not _is_int(out["num_neighbors"]) or out["num_neighbors"] < 1:
        raise InputError(f"{where}: num_neighbors must be a positive whole number, got {out['num_neighbors']!r}")
    return out


def expand_grid(grid: dict, where: str = "grid", method: str = "patchcore") -> tuple[list[dict], dict]:
    """A grid dict (as in a grid file) -> (checked candidates in order, duplicates dropped; fixed options)."""
    if not isinstance(grid, dict):
        raise InputError(f"{where}: a grid must be a mapping of keys to lists, got {type(grid).__name__}")
    grid = dict(grid)
    fixed = check_fixed(grid.pop("fixed", None) or {}, where, method)
    explicit = grid.pop("candidates", None) or []
    if not isinstance(explicit, list):
        raise InputError(f"{where}: candidates must be a list of mappings")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise InputError(f"{where}: {key} must be a non-empty list of values, got {values!r}")
    candidates = []
    if grid:
        keys = list(grid)
        candidates += [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    candidates += explicit
    if not candidates:
        raise InputError(f"{where}: the grid holds no candidates")
    checked, seen = [], set()
    for index, candidate in enumerate(candidates):
        if not isinstance(candidate, dict):
            raise InputError(f"{where}: candidate {index} must be a mapping, got {candidate!r}")
        one = check_candidate(candidate, where, method)
        key = json.dumps(one, sort_keys=True, default=list)
        if key not in seen:
            seen.add(key)
            checked.append(one)
    return checked, fixed


def read_grid_file(path: str | Path) -> dict:
    """A grid file's content (``.json``, else YAML)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such grid file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as error:  # YAML and JSON both: one line naming the file
        raise InputError(f"{path}: not a readable grid file ({str(error).splitlines()[0]})") from None


def load_grid(grid: str | Path | dict | None, method: str = "patchcore") -> tuple[list[dict], dict]:
    """``None`` (the method's default grid), a grid dict or a grid file -> (candidates, fixed options)."""
    spec = method_grid(method)
    if grid is None:
        return expand_grid(spec.default_grid, f"default {spec.label} grid", method)
    if isinstance(grid, dict):
        return expand_grid(grid, f"{spec.label} grid", method)
    return expand_grid(read_grid_file(grid), str(grid), method)


def keep_aspect_size(short_side: int, aspects: list[float]) -> tuple[int, int]:
    """(height, width) with the short side ``short_side`` and the median of ``aspects`` (width / height),
    both sides rounded to the stride."""
    ratio = float(np.median(aspects))
    h, w = (short_side, short_side * ratio) if ratio >= 1 else (short_side / ratio, short_side)
    return tuple(max(STRIDE, int(round(side / STRIDE)) * STRIDE) for side in (h, w))


def model_params(candidate: dict, fixed: dict, aspects: list[float], method: str = "patchcore") -> dict:
    """The estimator's keyword arguments of one candidate (``aspect`` resolved to an image size)."""
    keep_none = not METHODS[method].none_is_default
    params = {key: value for key, value in candidate.items() if key != "aspect" and (keep_none or value is not None)}
    if candidate["aspect"] == "keep":
        h, w = keep_aspect_size(candidate["image_size"], aspects)
        params["image_size"] = h if h == w else (h, w)
    return {**fixed, **params}
