"""The ``patchcore-kit`` command line: thin wiring over the package, one module per command group.

    patchcore-kit demo [--output DIR] [--fast]
    patchcore-kit evaluate ROOT --format {mvtec,mtd,folder} [--category C] --output DIR
    patchcore-kit sweep ROOT --format ... [--category all] --shots 1 2 5 all --methods patchcore padim spade --seeds 0 1 2 --output DIR
    patchcore-kit fit IMAGES_OR_FOLDERS... --output model.safetensors
    patchcore-kit predict MODEL IMAGES_OR_FOLDERS... [--output scores.csv]
    patchcore-kit download {mvtec,mtd} DEST
    patchcore-kit tune ROOT --format ... [--method {patchcore,padim,spade}] [--validation {real,synthetic}] [--grid FILE] --output DIR

evaluate, fit and sweep take ``--settings DIR/settings.json`` (what ``tune`` chose); options given
on the command line still win over it. A settings file records its method: ``evaluate`` builds
PatchCore, PaDiM or SPADE from it; ``sweep --settings patchcore=A.json padim=B.json spade=C.json``
runs every method at its own setting (a plain path goes to the method its file records).

Every user error (bad file, missing folder, unknown backbone) is printed as one line naming the file
and the problem, with exit status 2 and no traceback, and everything that can be checked before the
compute is: parameters (``params``), masks, output folders (``outputs``: new, empty or the kit's, else
``--overwrite``; never inside the dataset; writable) and the memory the run needs (``memory``; more
than is available needs ``--max-memory``). Every output is written atomically (``atomic``).

Modules: ``options`` (what commands share; the estimator options made from PatchCore's parameters
and their rules), ``evaluate``, ``model`` (fit, predict), ``study`` (sweep, tune), ``data`` (demo,
download); this one builds the parser and runs a command.
"""

from __future__ import annotations

# Only the standard library and the light modules here: torch loads inside main(), where Ctrl-C
# during start-up is one line like every other interruption, and usage errors need no torch at all.
import argparse
import sys
from pathlib import Path

from ..errors import InputError, WeightsUnavailableError
from ..params import cli_type
from .data import cmd_demo, cmd_download
from .evaluate import cmd_evaluate
from .model import cmd_fit, cmd_predict
from .options import (
    METHOD_NAMES,
    SWEEP_PATCHCORE,
    SWEEP_WIDE,
    TUNE_FIXED,
    Parser,
    add_model_options,
    dataset_options,
    model_options,
    run_options,
    settings_defaults,
    settings_files,
    shots_or_all,
)
from .study import cmd_sweep, cmd_tune


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="patchcore-kit", description="PatchCore anomaly detection kit")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the embedded demo data, evaluate it, write an HTML report")
    demo.add_argument("--output", type=Path, default=None, help="report folder (default: runs/demo)")
    demo.add_argument("--fast", action="store_true", help="a tiny run (seconds), as in the tests")
    demo.add_argument("--overwrite", action="store_true", help="write into a folder patchcore-kit did not write")
    demo.set_defaults(run=cmd_demo)

    evaluate = commands.add_parser("evaluate", help="fit on a dataset's training pool and evaluate its test set")
    dataset_options(evaluate)
    model_options(evaluate)
    evaluate.add_argument(
        "--shots", type=cli_type("shots"), default=None, help="train on N images drawn (seeded) from the pool"
    )
    evaluate.add_argument("--output", type=Path, required=True)
    evaluate.set_defaults(run=cmd_evaluate)

    sweep = commands.add_parser("sweep", help="sample-efficiency sweep: AUROC against number of training images")
    dataset_options(sweep)
    sweep.add_argument(
        "--shots",
        type=shots_or_all,
        nargs="+",
        default=[1, 2, 5, 10, 16, 20, 50],
        help="training images per fit; 'all' = the whole training pool (e.g. 1 2 5 all)",
    )
    sweep.add_argument("--methods", nargs="+", default=["patchcore", "padim", "spade"])
    sweep.add_argument("--seeds", type=cli_type("seed"), nargs="+", default=[0, 1, 2])
    add_model_options(sweep.add_argument_group("every method (one feature cache for all)"), SWEEP_WIDE)
    add_model_options(sweep.add_argument_group("PatchCore (kit defaults when not given)"), SWEEP_PATCHCORE)
    sweep.add_argument(
        "--baseline-stages",
        choices=("paper", "shared"),
        default="paper",
        help="paper: PaDiM layer1+2+3, SPADE layer1+2+3 + pooled layer4; "
        "shared: all methods on PatchCore's --layers (the kit's earlier sweep)",
    )
    sweep.add_argument(
        "--spade-table-gb",
        type=float,
        default=4.0,
        help="memory SPADE's shared pair table may take (0: score SPADE row by row)",
    )
    sweep.add_argument(
        "--scheduler",
        default="serial",
        metavar="{serial,processes,ADDRESS}",
        help="where the cells run: serial (here), processes (a Dask LocalCluster) or a Dask "
        "scheduler's address (tcp://host:8786) or scheduler file; a cluster needs "
        "--feature-cache and the data on storage every worker reads",
    )
    sweep.add_argument(
        "--workers", type=int, default=None, help="--scheduler processes: worker processes (default: one per core)"
    )
    sweep.add_argument(
        "--settings",
        nargs="+",
        default=None,
        metavar="[METHOD=]FILE",
        help="settings.json files written by 'patchcore-kit tune' (one per method, e.g. "
        "patchcore=A.json padim=B.json spade=C.json): each method runs at its own setting; "
        "PatchCore's fill the options above (explicit options win)",
    )
    sweep.add_argument("--output", type=Path, required=True)
    run_options(sweep)
    sweep.set_defaults(run=cmd_sweep)

    fit = commands.add_parser("fit", help="fit PatchCore on your nominal images and save it")
    fit.add_argument("images", type=Path, nargs="+", help="image files or folders of nominal images")
    model_options(fit)
    fit.add_argument("--output", type=Path, required=True, help="model file, e.g. model.safetensors")
    fit.set_defaults(run=cmd_fit)

    predict = commands.add_parser("predict", help="score images with a saved model")
    predict.add_argument("model", type=Path)
    predict.add_argument("images", type=Path, nargs="+")
    predict.add_argument("--output", type=Path, default=None, help="CSV file (default: print)")
    predict.add_argument(
        "--allow-download", action="store_true", help="fetch backbone weights from a URL stored in the model file"
    )
    run_options(predict)
    predict.set_defaults(run=cmd_predict)

    tune = commands.add_parser(
        "tune", help="choose settings on development folds of the training pool (never the test set)"
    )
    dataset_options(tune)
    tune.add_argument(
        "--shots", type=cli_type("shots"), default=None, help="each fold trains on N images drawn from the other folds"
    )
    tune.add_argument("--seed", type=cli_type("seed"), default=0)
    tune.add_argument(
        "--method",
        default="patchcore",
        choices=METHOD_NAMES,
        help="the estimator whose settings are chosen; each has its own grid keys and default grid",
    )
    tune.add_argument(
        "--grid", type=Path, default=None, help="YAML/JSON grid file (default: the method's built-in grid)"
    )
    tune.add_argument(
        "--validation",
        default="real",
        choices=("real", "synthetic"),
        help="real: half the defective images per type; synthetic: defects painted on pool images",
    )
    tune.add_argument("--folds", type=int, default=5, help="k development folds (default 5)")
    tune.add_argument("--groups", default=None, help="regex over file names naming the object (folder data)")
    tune.add_argument("--metric", default="image_auroc", choices=("image_auroc", "pixel_auroc"))
    add_model_options(tune.add_argument_group("fixed for every candidate when given"), TUNE_FIXED)
    tune.add_argument("--feature-cache", default=None, help="default: OUTPUT/feature_cache")
    tune.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="fits run at once in parallel processes (default: as many as the CPUs and the memory allow)",
    )
    tune.add_argument("--device", type=cli_type("device"), default="cpu")
    tune.add_argument("--output", type=Path, required=True)
    run_options(tune)
    tune.set_defaults(run=cmd_tune)

    download = commands.add_parser("download", help="download MVTec AD or MTD (needs internet)")
    download.add_argument("dataset", choices=("mvtec", "mtd"))
    download.add_argument("dest", type=Path)
    download.add_argument("--categories", nargs="+", default=None, help="MVTec AD categories (default: all)")
    download.set_defaults(run=cmd_download)
    parser.subcommands = {"evaluate": evaluate, "sweep": sweep, "fit": fit}
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "settings", None) is not None:
            # Parse again with the settings as defaults: every option not given explicitly comes from them.
            # A sweep takes them from PatchCore's file only (its options are PatchCore's); evaluate and
            # fit from whichever method the file is for.
            command = parser.subcommands[args.command]
            files = settings_files(args.settings)
            if args.command == "sweep":
                defaults = settings_defaults(files["patchcore"], "patchcore") if "patchcore" in files else {}
            else:
                ((method, path),) = files.items()
                defaults = settings_defaults(path, method)
            known = {action.dest for action in command._actions}
            command.set_defaults(**{key: value for key, value in defaults.items() if key in known})
            args = parser.parse_args(argv)
            args.settings_files = files
        return args.run(args)
    except (InputError, WeightsUnavailableError) as error:
        print(f"patchcore-kit: error: {error}", file=sys.stderr)
        return 2
    except MemoryError:
        print("patchcore-kit: error: out of memory; lower --image-size or --batch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # also during start-up: torch and the rest load inside this try
        print("patchcore-kit: interrupted", file=sys.stderr)
        return 130
