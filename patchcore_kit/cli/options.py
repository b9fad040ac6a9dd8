"""The command line's options: what several commands share, and the estimator's, made from its rules.

The estimator options are not written out one by one: :data:`MODEL_OPTIONS` names the PatchCore
parameters the command line exposes, each with its help text, and :func:`add_model_options` makes
``--patch-size`` from ``patch_size``, reads, checks and explains the value by the parameter's rule
(:data:`patchcore_kit.params.RULES`), and leaves an option that is not given out of ``args``, so
that the estimator's own default applies (:func:`given`). ``test_cli`` checks the table against
PatchCore's parameters and the rules. Only the standard library and the light modules here: torch
loads when a command runs, so usage errors need none of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..params import DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, DEFAULT_LAYERS, STAGES, cli_type

#: PatchCore parameters on the command line (evaluate and fit: all; sweep and tune: the subsets
#: below), with their help. Type, check and message come from the parameter's rule, the value used
#: when an option is not given from the estimator; "(default X)" in a help text is checked against
#: the estimator's default by test_cli.
MODEL_OPTIONS = {
    "backbone": f"ImageNet network; {DEFAULT_BACKBONE}'s weights ship with the kit (default {DEFAULT_BACKBONE})",
    "weights": "backbone weights: local file or URL (default: ImageNet's)",
    "layers": f"backbone stages (default {' '.join(DEFAULT_LAYERS)})",
    "image_size": f"N or HxW (default {DEFAULT_IMAGE_SIZE})",
    "patch_size": "neighbourhood p x p each patch feature averages over; paper: 3, 1 = none (default 3)",
    "aggregation": "mean: average each p x p neighbourhood (paper); unfold: keep it whole, as the official code "
    "(default mean)",
    "border": "border patches' missing neighbours: zeros (official code), reflect, or valid (left out) (default zeros)",
    "pretrain_dim": "unfold: per-layer size (default: 1024)",
    "target_dim": "reduce the patch feature to this many channels (default: keep all)",
    "coreset_ratio": "memory bank: a fraction (0, 1] of all patches, or a count (default 0.1)",
    "sampler": "coreset sampler: greedy (paper), random or none (default greedy)",
    "projection_dim": "greedy coreset's random projection (default 128)",
    "num_neighbors": "b in the paper's re-weighted image score, Eq. 7; 1 = plain maximum (default 9)",
    "search": "nearest-neighbour search while scoring: exact, or approximate faiss hnsw / ivf / auto (default exact)",
    "device": "cpu, cuda, cuda:N or mps (default cpu)",
    "batch_size": "images per backbone pass (default 8)",
    "seed": "seeds the coreset and any draw of training images (default 0)",
    "feature_cache": "folder to cache backbone features in (default: none)",
}
#: What the sweep sets once for all its methods (one feature cache), and what it passes to PatchCore.
SWEEP_WIDE = ("backbone", "image_size", "layers", "weights", "device", "batch_size", "feature_cache")
#: Model options only PatchCore has: given with another method's settings they would be ignored.
PATCHCORE_ONLY = (
    "patch_size",
    "aggregation",
    "border",
    "pretrain_dim",
    "target_dim",
    "coreset_ratio",
    "sampler",
    "projection_dim",
    "num_neighbors",
    "search",
)
#: The sweep keeps PatchCore's default projection and exact search (every row comparable).
SWEEP_PATCHCORE = tuple(name for name in PATCHCORE_ONLY if name not in ("projection_dim", "search"))
#: What a tune holds fixed for every candidate when given (the grid varies the rest).
TUNE_FIXED = ("backbone", "coreset_ratio", "num_neighbors")


def option(name: str) -> str:
    """``patch_size`` -> ``--patch-size``."""
    return "--" + name.replace("_", "-")


def add_model_options(group, names=tuple(MODEL_OPTIONS), help_suffix: str = "") -> None:
    """One option per PatchCore parameter in ``names``; not given, it stays out of ``args``."""
    for name in names:
        text = MODEL_OPTIONS[name] + help_suffix
        if name == "layers":  # a list: each word is a stage; the list as a whole is checked by fit's rules
            group.add_argument(option(name), nargs="+", choices=STAGES, default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(option(name), type=cli_type(name), default=argparse.SUPPRESS, help=text)


def given(args, names) -> dict:
    """The options of ``names`` that were given (on the command line or by ``--settings``)."""
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if "layers" in values:
        values["layers"] = tuple(values["layers"])
    return values


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line like every other error here (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _max_memory(text: str) -> int:
    from ..memory import parse_size

    try:
        value = parse_size(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"max memory must be a size like 16G or 512M, got {text!r}")
    return value


def shots_or_all(text: str):
    """A positive whole number of training images, or ``all`` (the whole training pool)."""
    if text.strip().lower() == "all":
        return "all"
    return cli_type("shots")(text)


def run_options(parser: argparse.ArgumentParser) -> None:
    """What every command that computes shares: where results may go and how much memory it may use."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an output folder (or over a file) that patchcore-kit did not write",
    )
    parser.add_argument(
        "--max-memory",
        type=_max_memory,
        default=None,
        metavar="SIZE",
        help="memory the run may use, e.g. 16G (default: what the machine has available); "
        "a larger value runs what the estimate would refuse",
    )


def model_options(parser: argparse.ArgumentParser) -> None:
    """evaluate and fit: every PatchCore option, the run options and ``--settings``."""
    add_model_options(parser.add_argument_group("model (PatchCore's defaults when not given)"))
    run_options(parser)
    settings_option(parser)


def settings_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="settings.json written by 'patchcore-kit tune' (explicit options win over it; "
        "PaDiM's or SPADE's settings build that estimator)",
    )


def dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="dataset folder")
    parser.add_argument("--format", required=True, choices=("mvtec", "mtd", "folder"))
    parser.add_argument(
        "--category",
        default=None,
        help="MVTec AD category (e.g. bottle); sweep: 'all' runs every category and averages them",
    )


def settings_defaults(path: Path, method: str = "patchcore") -> dict:
    """A tune's chosen parameters as argparse defaults: the settings fill in, explicit flags override."""
    from ..tuning import load_settings

    defaults = dict(load_settings(path, method))
    if "layers" in defaults:
        defaults["layers"] = list(defaults["layers"])
    return defaults


#: The estimators a settings file may be for (``tune --method``).
METHOD_NAMES = ("patchcore", "padim", "spade")
#: What a baseline built from its settings takes from the command line (which the settings filled in).
BASELINE_SHARED = ("backbone", "layers", "image_size", "weights")
BASELINE_RUNTIME = ("device", "batch_size", "seed", "feature_cache")


def settings_files(items) -> dict[str, Path]:
    """``--settings`` as ``{method: path}``: a plain path is for the method its file records, and
    ``METHOD=PATH`` must name the method the file holds (else one error naming both)."""
    from ..tuning import load_settings, read_settings
    from ..tuning.settings import settings_method

    files: dict[str, Path] = {}
    for item in items if isinstance(items, list) else [items]:
        text, said = str(item), None
        head, sep, tail = text.partition("=")
        if sep and head in METHOD_NAMES:
            said, text = head, tail
        path = Path(text)
        method = settings_method(read_settings(path), path)
        if said is not None:
            load_settings(path, said)  # a PaDiM file given as patchcore=...: the standard message
        if method in files:
            raise InputError(f"--settings: two settings files for {method} ({files[method]} and {path}); give one")
        files[method] = path
    return files


def model_method(args) -> str:
    """The estimator an evaluate/fit run builds: the settings file's method, else PatchCore."""
    files = getattr(args, "settings_files", None) or {}
    return next(iter(files), "patchcore")


def baseline_from_settings(args, method: str, calibrate: bool = True):
    """PaDiM or SPADE from its settings file, its parameters checked (all of fit's rules) and its device
    there, before any data is read. The options every estimator shares come from the command line
    (which the settings filled in, so an explicit flag wins as for PatchCore); a PatchCore-only option
    is refused, not silently ignored."""
    from ..params import check_device, check_params
    from ..tuning import load_settings
    from ..tuning.run import estimator_class

    path = args.settings_files[method]
    for name in PATCHCORE_ONLY:
        if hasattr(args, name):  # not given stays out of args (options.given)
            raise InputError(
                f"{option(name)} is a PatchCore option, but {path} holds {method} settings; "
                f"leave it out (or use a PatchCore tune's settings)"
            )
    params = {**load_settings(path, method), **given(args, BASELINE_SHARED)}
    estimator = estimator_class(method)
    model = estimator(**params, **given(args, BASELINE_RUNTIME), calibrate=calibrate, progress=show_progress())
    check_params(estimator.__name__, model.get_params())
    check_device(model.device)
    return model


def show_progress() -> bool:
    """Progress bars on a terminal only: in logs and pipes their carriage returns are noise."""
    return sys.stderr.isatty()


def model_from_args(args, calibrate: bool = True):
    """The PatchCore the options describe, its parameters checked (all of fit's rules) and its device
    there, before any data is read."""
    from ..params import check_device, check_params
    from ..patchcore import PatchCore

    model = PatchCore(**given(args, MODEL_OPTIONS), calibrate=calibrate, progress=show_progress())
    check_params("PatchCore", model.get_params())
    check_device(model.device)
    return model


def check_memory(
    args, params: dict, n_train: int = 0, n_test: int = 0, pixel_metrics: bool = False, bank_rows: int | None = None
) -> None:
    """Refuse a run whose estimated memory exceeds what is available (or ``--max-memory``)."""
    from ..backbones import STAGE_CHANNELS
    from ..memory import available_bytes, estimate, format_size

    image_size = params["image_size"]
    model = {
        k: params[k] for k in ("target_dim", "coreset_ratio", "sampler", "aggregation", "patch_size") if k in params
    }
    need = estimate(
        image_size,
        list(params["layers"]),
        STAGE_CHANNELS[params["backbone"]],
        params["backbone"],
        n_train=n_train,
        n_test=n_test,
        batch_size=params["batch_size"],
        pixel_metrics=pixel_metrics,
        bank_rows=bank_rows,
        **model,
    )
    limit = args.max_memory if getattr(args, "max_memory", None) is not None else available_bytes()
    if need["total"] <= limit:
        return
    largest = max((k for k in need if k != "total"), key=need.get)
    size = image_size if isinstance(image_size, int) else "x".join(map(str, image_size))
    allowed = "--max-memory allows" if getattr(args, "max_memory", None) is not None else "the machine has"
    suggestion = -(-need["total"] // 2**30) + 1
    raise InputError(
        f"--image-size {size}: this run needs about {format_size(need['total'])} of memory ({largest} "
        f"{format_size(need[largest])}, {n_train} training and {n_test} test images) but {allowed} "
        f"{format_size(limit)}; lower --image-size or --batch-size, or pass --max-memory {suggestion}G to run it anyway"
    )


def check_cache(feature_cache, datasets) -> None:
    from ..outputs import check_apart_from_data, check_writable

    if feature_cache:
        check_apart_from_data(Path(feature_cache), datasets, "feature cache folder")
        check_writable(Path(feature_cache))


def format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
