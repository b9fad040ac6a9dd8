"""The sweep's grid: its methods, columns and shot counts, each method's stages, and the checks
that refuse a bad grid before any work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..backbones import DEFAULT_LAYERS
from ..baselines import SPADE, NearestImage, PaDiM
from ..data import Split, load_dataset
from ..data.mvtec import mvtec_categories
from ..errors import InputError
from ..params import check_params
from ..patchcore import PatchCore

METHODS = {"patchcore": PatchCore, "padim": PaDiM, "spade": SPADE, "nearest_image": NearestImage}
COLUMNS = ("method", "shots", "full", "seed", "image_auroc", "pixel_auroc", "aupro", "fit_s", "infer_s")
METRICS = ("image_auroc", "pixel_auroc", "aupro")
DEFAULT_SHOTS = (1, 2, 5, 10, 16, 20, 50)
#: The shot count that means "the whole training pool".
ALL = "all"
BASELINE_STAGES = ("paper", "shared")
#: Settings that decide the backbone features, or that ``baseline_stages`` decides; they are set
#: once for the whole sweep so that all methods read the same cache entries.
_SWEEP_WIDE = ("backbone", "weights", "device", "batch_size", "feature_cache", "seed", "calibrate", "progress")
#: PaDiM's channel count in the "shared" setting: what the kit used before each paper's stages.
SHARED_PADIM_FEATURES = 100


def resolve_shots(split: Split, shots: Sequence[int | str]) -> list[int]:
    """Shot counts as training-image counts: ``"all"`` (or None) is the whole pool; duplicates dropped.

    >>> resolve_shots(split_of_209_images, [1, 5, "all"])   # doctest: +SKIP
    [1, 5, 209]
    """
    where = split.root or split.name
    counts = []
    for n in shots:
        if n is None or (isinstance(n, str) and n.strip().lower() == ALL):
            counts.append(len(split.train))
            continue
        try:
            counts.append(int(n))
        except (TypeError, ValueError):
            raise InputError(f"{where}: a shot count is a whole number or 'all', got {n!r}") from None
    return _unique(counts)


def method_stages(method: str, baseline_stages: str = "paper", layers: Sequence[str] = DEFAULT_LAYERS) -> dict:
    """The stage parameters of ``method`` in a sweep whose PatchCore reads ``layers``.

    ``"paper"``: PatchCore ``layers``; PaDiM layer1+2+3 (its class defaults, with the WRN50 channel
    share); SPADE and 1-NN pixels from layer1+2+3, global feature the pooled layer4. ``"shared"``:
    every method reads ``layers``, SPADE and 1-NN pool the deepest of them, PaDiM keeps 100
    channels: the kit's sweep before each paper's stages (what ``docs/sample_efficiency.md`` ran).
    """
    if baseline_stages not in BASELINE_STAGES:
        raise ValueError(f"baseline_stages must be one of {BASELINE_STAGES}, got {baseline_stages!r}")
    if method == "patchcore":
        return {"layers": tuple(layers)}
    if baseline_stages == "paper":
        return {}  # each baseline's constructor defaults are its paper's stages
    if method == "padim":
        return {"layers": tuple(layers), "n_features": SHARED_PADIM_FEATURES}
    return {"layers": tuple(layers), "global_layer": None}


def sweep_categories(root: str | Path, format: str, category: str | None) -> list[str | None]:
    """The categories a sweep runs: ``[category]``, or with ``category="all"`` every category folder.

    ``"all"`` needs the MVTec layout (``<root>/<category>/train/good``; the kit's demo data has it
    too); a root that is itself one category folder gives that one category.
    """
    if category is None or category != ALL:
        return [category]
    root = Path(root)
    if format != "mvtec":
        raise InputError(f"{root}: --category all needs the mvtec layout (one folder per category), not {format!r}")
    if (root / "train").is_dir():
        return [root.name]
    found = mvtec_categories(root)
    if not found:
        raise InputError(f"{root}: no category folders found (expected <category>/train/good/)")
    return found


def _as_split(data, format: str | None, category: str | None) -> Split:
    if isinstance(data, Split):
        return data
    if format is None:
        raise InputError(f"{data}: give format= ('mvtec', 'mtd' or 'folder') to load a dataset folder")
    return load_dataset(data, format, category)


def _check_grid(split: Split, methods: list, shots: list, seeds: list, method_params: dict) -> None:
    where = split.root or split.name
    unknown = [m for m in list(methods) + list(method_params) if m not in METHODS]
    if unknown:
        raise InputError(f"{where}: unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if not methods or not shots or not seeds:
        raise InputError(f"{where}: the sweep needs at least one method, one shot count and one seed")
    for name, params in method_params.items():
        if not isinstance(params, dict):
            raise InputError(f"{where}: parameters for {name!r} must be a dict, got {type(params).__name__}")
        shared = sorted(set(params) & set(_SWEEP_WIDE))
        if shared:
            raise InputError(
                f"{where}: {shared} are set for the whole sweep (one feature cache for all methods), "
                f"not per method ({name!r})"
            )
        check_params(f"{where}: {name}", params)  # the estimator's own rules, before the feature pass
    for n in shots:
        split.with_shots(n, 0)  # raises an InputError naming the dataset when n is too large


def _unique(items) -> list:
    return list(dict.fromkeys(items))
