"""The ``patchcore-kit`` command line: thin wiring over the package.

    patchcore-kit demo [--output DIR] [--fast]
    patchcore-kit evaluate ROOT --format {mvtec,mtd,folder} [--category C] --output DIR
    patchcore-kit sweep ROOT --format ... [--category all] --shots 1 2 5 all --methods patchcore padim spade --seeds 0 1 2 --output DIR
    patchcore-kit fit IMAGES_OR_FOLDERS... --output model.safetensors
    patchcore-kit predict MODEL IMAGES_OR_FOLDERS... [--output scores.csv]
    patchcore-kit download {mvtec,mtd} DEST
    patchcore-kit tune ROOT --format ... [--validation {real,synthetic}] [--grid FILE] --output DIR

evaluate, fit and sweep take ``--settings DIR/settings.json`` (what ``tune`` chose); options given
on the command line still win over it.

Every user error (bad file, missing folder, unknown backbone) is printed as one line naming the file
and the problem, with exit status 2 and no traceback.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

from .backbones import BACKBONES, DEFAULT_LAYERS
from .features import AGGREGATIONS, BORDERS
from .errors import InputError, WeightsUnavailableError

# The settings this kit uses by default on each dataset format (see README, "Results on MTD").
DEFAULT_IMAGE_SIZE = 224


def _image_size(text: str):
    """``224`` or ``256x320`` (height x width)."""
    try:
        if "x" in text:
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}") from None


def _coreset_ratio(text: str):
    """A fraction in (0, 1] or a count > 1 of memory-bank entries."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"coreset ratio must be a number, got {text!r}") from None
    if value > 1 and value.is_integer():
        return int(value)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"coreset ratio must be in (0, 1] or a whole count > 1, got {text!r}")
    return value


def _patch_size(text: str) -> int:
    """An odd neighbourhood size >= 1 (a window centred on each feature position)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"patch size must be a whole number, got {text!r}") from None
    if value < 1 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"patch size must be odd and at least 1 (1, 3, 5, ...), got {text!r}")
    return value


def _shots(text: str):
    """A positive whole number of training images, or ``all`` (the whole training pool)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shots must be a whole number or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"shots must be at least 1, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line like every other error here (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES)
    group.add_argument("--weights", default=None, help="backbone weights: local file or URL (default: ImageNet)")
    group.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS))
    group.add_argument("--image-size", type=_image_size, default=DEFAULT_IMAGE_SIZE, help="N or HxW")
    group.add_argument("--patch-size", type=_patch_size, default=3,
                       help="neighbourhood p x p each patch feature averages over (paper: 3; 1 = none)")
    group.add_argument("--coreset-ratio", type=_coreset_ratio, default=0.1, help="fraction (0, 1] or count")
    group.add_argument("--sampler", default="greedy", choices=("greedy", "random", "none"))
    group.add_argument("--num-neighbors", type=int, default=9)
    group.add_argument("--aggregation", default="mean", choices=AGGREGATIONS,
                       help="mean: average each p x p neighbourhood (paper); unfold: keep it whole (official code)")
    group.add_argument("--border", default="zeros", choices=BORDERS,
                       help="border patches' missing neighbours: zeros (official code), reflect, or valid (left out)")
    group.add_argument("--pretrain-dim", type=int, default=None, help="unfold: per-layer size (default 1024)")
    group.add_argument("--target-dim", type=int, default=None)
    group.add_argument("--projection-dim", type=int, default=128, help="greedy coreset's random projection")
    group.add_argument("--device", default="cpu")
    group.add_argument("--batch-size", type=int, default=8)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--feature-cache", default=None, help="directory to cache backbone features in")
    _settings_option(parser)


def _settings_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", type=Path, default=None,
                        help="settings.json written by 'patchcore-kit tune' (explicit options win over it)")


def _settings_defaults(path: Path) -> dict:
    """A tune's chosen parameters as argparse defaults: the settings fill in, explicit flags override."""
    from .tuning import load_settings

    params = load_settings(path)
    defaults = dict(params)
    if "layers" in defaults:
        defaults["layers"] = list(defaults["layers"])
    return defaults


def _show_progress() -> bool:
    """Progress bars on a terminal only: in logs and pipes their carriage returns are noise."""
    return sys.stderr.isatty()


def _model_from_args(args, calibrate: bool = True):
    from .patchcore import PatchCore

    return PatchCore(
        backbone=args.backbone, layers=tuple(args.layers), image_size=args.image_size, weights=args.weights,
        patch_size=args.patch_size, aggregation=args.aggregation, border=args.border, pretrain_dim=args.pretrain_dim,
        coreset_ratio=args.coreset_ratio, sampler=args.sampler, num_neighbors=args.num_neighbors,
        target_dim=args.target_dim, projection_dim=args.projection_dim, device=args.device, batch_size=args.batch_size, seed=args.seed,
        feature_cache=args.feature_cache, calibrate=calibrate, progress=_show_progress(),
    )


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="dataset folder")
    parser.add_argument("--format", required=True, choices=("mvtec", "mtd", "folder"))
    parser.add_argument("--category", default=None,
                        help="MVTec AD category (e.g. bottle); sweep: 'all' runs every category and averages them")


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)


def _check_output_folder(path: Path) -> Path:
    """Refuse an output folder that is (or lies below) an existing file: never overwrite user data."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"{folder}: exists and is not a folder")
            break
    return path


def _prepare_output(path: Path) -> Path:
    """Check, then create the output folder."""
    _check_output_folder(path).mkdir(parents=True, exist_ok=True)
    return path


def _format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def cmd_evaluate(args) -> int:
    from .data import load_dataset
    from .evaluate import evaluate

    split = load_dataset(args.root, args.format, category=args.category, seed=args.seed)
    if args.shots is not None:
        split = split.with_shots(args.shots, seed=args.seed)
    output = _check_output_folder(args.output)  # created only when there are results to write
    model = _model_from_args(args, calibrate=False)
    start = time.perf_counter()
    result = evaluate(model, split)
    metrics = {
        "dataset": split.name,
        "format": args.format,
        "image_auroc": result.metrics["image_auroc"],
        "pixel_auroc": result.metrics["pixel_auroc"],
        "aupro": result.metrics["aupro"],
        "per_defect": result.metrics["per_defect"],
        "n_train": len(split.train),
        "n_test": len(split.test),
        "split_hash": split.split_hash(),
        "backbone": args.backbone,
        "layers": list(args.layers),
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "aggregation": args.aggregation,
        "border": args.border,
        "pretrain_dim": args.pretrain_dim,
        "target_dim": args.target_dim,
        "coreset_ratio": args.coreset_ratio,
        "num_neighbors": args.num_neighbors,
        "seed": args.seed,
        "shots": args.shots,
        "memory_bank": list(model.memory_bank_.shape),
        "seconds": {**result.seconds, "total": time.perf_counter() - start},
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    if args.settings is not None:
        metrics["settings"] = str(args.settings)
        metrics["held_out"] = _held_out_figure(args.settings, split, result)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_csv(output / "scores.csv", result.score_rows())
    _write_csv(output / "split.csv", [{k: r[k] for k in ("path", "split", "label")} for r in split.to_rows()])
    print(f"{split.name}: {len(split.train)} training images, {len(split.test)} test images")
    print(f"image AUROC {_format_metric(metrics['image_auroc'])}  pixel AUROC {_format_metric(metrics['pixel_auroc'])}"
          f"  AUPRO {_format_metric(metrics['aupro'])}")
    for defect, values in metrics["per_defect"].items():
        print(f"  {defect:<16} image {_format_metric(values['image_auroc'])}  pixel {_format_metric(values['pixel_auroc'])}"
              f"  AUPRO {_format_metric(values['aupro'])}")
    if metrics.get("held_out"):
        held = metrics["held_out"]
        print(f"held out from the tune ({held['n_nominal']} nominal + {held['n_defective']} defective images it never "
              f"scored): image AUROC {_format_metric(held['image_auroc'])}")
    print(f"wrote {output / 'metrics.json'}, scores.csv, split.csv")
    return 0


def _held_out_figure(settings_path: Path, split, result) -> dict | None:
    """Image AUROC on the test images the tune never scored (real validation used half the defects)."""
    from .metrics import image_auroc
    from .tuning import read_settings
    from .tuning.settings import held_out_mask

    settings = read_settings(settings_path)
    # Images are matched by their path inside the dataset, so a shots draw or another split of the
    # same dataset still leaves out exactly the defective images the tune scored.
    keep = held_out_mask(settings, [split.relative(s.path) for s in split.test], result.labels)
    labels = result.labels[keep]
    if labels.min() == labels.max():
        return None
    return {"image_auroc": image_auroc(labels, result.scores[keep]), "n_nominal": int((labels == 0).sum()),
            "n_defective": int((labels == 1).sum()), "defective_used_by_tune": len(settings.get("defective_used", []))}


def _collect_images(items: list[Path]) -> list[Path]:
    from .data.base import list_images

    images = []
    for item in items:
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise InputError(f"{item}: folder holds no images")
            images.extend(found)
        elif item.exists():
            images.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    return images


def _is_saved_model(path: Path) -> bool:
    from safetensors import safe_open

    from .patchcore import FORMAT

    try:
        with safe_open(path, framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except Exception:  # anything unreadable is not one of our models
        return False


def _check_overwrite(path: Path, ours, kind: str, example: str) -> None:
    """Refuse to replace an existing file unless the kit wrote it (``ours(path)``): never clobber user data."""
    _check_output_folder(path.parent)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name like {example}")
    if path.exists() and not ours(path):
        raise InputError(f"{path}: exists and is not a {kind} written by patchcore-kit; refusing to overwrite it")


def _is_scores_csv(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(11) == b"path,score,"


def cmd_fit(args) -> int:
    images = _collect_images(args.images)
    _check_overwrite(args.output, _is_saved_model, "model file", "model.safetensors")
    model = _model_from_args(args).fit(images)
    model.save(args.output)
    threshold = "n/a" if model.threshold_ is None else f"{model.threshold_:.4f}"
    print(f"fitted on {len(images)} images: memory bank {tuple(model.memory_bank_.shape)}, threshold {threshold}")
    print(f"wrote {args.output}")
    return 0


def cmd_predict(args) -> int:
    from .patchcore import PatchCore

    model = PatchCore.load(args.model)
    model.progress = _show_progress()
    images = _collect_images(args.images)
    if args.output:
        _check_overwrite(args.output, _is_scores_csv, "scores file", "scores.csv")  # before the slow part
    scores = model.decision_function(images)
    threshold = model.threshold_
    rows = [
        {"path": str(path), "score": float(score),
         "anomalous": "" if threshold is None else int(score > threshold)}
        for path, score in zip(images, scores)
    ]
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(args.output, rows)
        print(f"wrote {args.output}")
    else:
        for row in rows:
            print(f"{row['score']:.4f}\t{row['anomalous']}\t{row['path']}")
    return 0


def cmd_demo(args) -> int:
    from .report import run_demo

    run_demo(output=args.output, fast=args.fast, progress=True)
    return 0


#: PatchCore settings the sweep command passes on when given (left out otherwise, so a resumed sweep's
#: settings do not change with the kit's defaults).
_SWEEP_PATCHCORE = ("patch_size", "aggregation", "border", "pretrain_dim", "target_dim", "coreset_ratio",
                    "sampler", "num_neighbors")


def _sweep_method_params(args) -> dict:
    patchcore = {name: getattr(args, name) for name in _SWEEP_PATCHCORE if getattr(args, name) is not None}
    return {"patchcore": patchcore} if patchcore else {}


def cmd_sweep(args) -> int:
    from .experiments import run_sweep

    run_sweep(
        args.root, args.format, category=args.category, shots=tuple(args.shots), methods=tuple(args.methods),
        seeds=tuple(args.seeds), backbone=args.backbone, image_size=args.image_size, output=_prepare_output(args.output),
        cache_dir=args.feature_cache, progress=_show_progress(), layers=tuple(args.layers), weights=args.weights,
        device=args.device, batch_size=args.batch_size, baseline_stages=args.baseline_stages,
        spade_table_gb=args.spade_table_gb, **_sweep_method_params(args),
    )
    return 0


def cmd_tune(args) -> int:
    from .tuning import tune

    fixed = {"backbone": args.backbone, "coreset_ratio": args.coreset_ratio, "num_neighbors": args.num_neighbors}
    grid = args.grid
    if any(value is not None for value in fixed.values()):  # command-line model options join the grid's fixed ones
        from .tuning.grid import DEFAULT_GRID, read_grid_file

        grid = dict(DEFAULT_GRID if grid is None else read_grid_file(grid))
        grid["fixed"] = {**(grid.get("fixed") or {}), **{k: v for k, v in fixed.items() if v is not None}}
    settings = tune(
        args.root, args.format, args.category, output=_prepare_output(args.output), shots=args.shots, seed=args.seed,
        grid=grid, validation=args.validation, folds=args.folds, groups=args.groups, metric=args.metric,
        feature_cache=args.feature_cache, jobs=args.jobs, device=args.device, progress=True,
    )
    print(f"use it: patchcore-kit evaluate {args.root} --format {args.format} --settings {args.output / 'settings.json'} ...")
    print(f"        PatchCore(**load_settings({str(args.output / 'settings.json')!r}))  [{settings['setting']}]")
    return 0


def cmd_download(args) -> int:
    from .data import download_mtd, download_mvtec

    path = download_mtd(args.dest) if args.dataset == "mtd" else download_mvtec(args.dest, args.categories)
    print(f"{args.dataset} is in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="patchcore-kit", description="PatchCore anomaly detection kit")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the embedded demo data, evaluate it, write an HTML report")
    demo.add_argument("--output", type=Path, default=None, help="report folder (default: runs/demo)")
    demo.add_argument("--fast", action="store_true", help="a tiny run (seconds), as in the tests")
    demo.set_defaults(run=cmd_demo)

    evaluate = commands.add_parser("evaluate", help="fit on a dataset's training pool and evaluate its test set")
    _dataset_options(evaluate)
    _model_options(evaluate)
    evaluate.add_argument("--shots", type=int, default=None, help="train on N images drawn (seeded) from the pool")
    evaluate.add_argument("--output", type=Path, required=True)
    evaluate.set_defaults(run=cmd_evaluate)

    sweep = commands.add_parser("sweep", help="sample-efficiency sweep: AUROC against number of training images")
    _dataset_options(sweep)
    sweep.add_argument("--shots", type=_shots, nargs="+", default=[1, 2, 5, 10, 16, 20, 50],
                       help="training images per fit; 'all' = the whole training pool (e.g. 1 2 5 all)")
    sweep.add_argument("--methods", nargs="+", default=["patchcore", "padim", "spade"])
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sweep.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES)
    sweep.add_argument("--image-size", type=_image_size, default=DEFAULT_IMAGE_SIZE)
    sweep.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS), help="PatchCore's stages")
    patchcore = sweep.add_argument_group("PatchCore (kit defaults when not given)")
    patchcore.add_argument("--patch-size", type=_patch_size, default=None)
    patchcore.add_argument("--aggregation", default=None, choices=AGGREGATIONS)
    patchcore.add_argument("--border", default=None, choices=BORDERS)
    patchcore.add_argument("--pretrain-dim", type=int, default=None)
    patchcore.add_argument("--target-dim", type=int, default=None)
    patchcore.add_argument("--coreset-ratio", type=_coreset_ratio, default=None)
    patchcore.add_argument("--sampler", default=None, choices=("greedy", "random", "none"))
    patchcore.add_argument("--num-neighbors", type=int, default=None)
    sweep.add_argument("--baseline-stages", choices=("paper", "shared"), default="paper",
                       help="paper: PaDiM layer1+2+3, SPADE layer1+2+3 + pooled layer4; "
                            "shared: all methods on PatchCore's --layers (the kit's earlier sweep)")
    sweep.add_argument("--weights", default=None, help="backbone weights: local file or URL (default: ImageNet)")
    sweep.add_argument("--device", default="cpu")
    sweep.add_argument("--batch-size", type=int, default=8)
    sweep.add_argument("--spade-table-gb", type=float, default=4.0,
                       help="memory SPADE's shared pair table may take (0: score SPADE row by row)")
    sweep.add_argument("--feature-cache", default=None)
    _settings_option(sweep)
    sweep.add_argument("--output", type=Path, required=True)
    sweep.set_defaults(run=cmd_sweep)

    fit = commands.add_parser("fit", help="fit PatchCore on your nominal images and save it")
    fit.add_argument("images", type=Path, nargs="+", help="image files or folders of nominal images")
    _model_options(fit)
    fit.add_argument("--output", type=Path, required=True, help="model file, e.g. model.safetensors")
    fit.set_defaults(run=cmd_fit)

    predict = commands.add_parser("predict", help="score images with a saved model")
    predict.add_argument("model", type=Path)
    predict.add_argument("images", type=Path, nargs="+")
    predict.add_argument("--output", type=Path, default=None, help="CSV file (default: print)")
    predict.set_defaults(run=cmd_predict)

    tune = commands.add_parser("tune", help="choose settings on development folds of the training pool (never the test set)")
    _dataset_options(tune)
    tune.add_argument("--shots", type=int, default=None, help="each fold trains on N images drawn from the other folds")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--grid", type=Path, default=None, help="YAML/JSON grid file (default: the built-in grid)")
    tune.add_argument("--validation", default="real", choices=("real", "synthetic"),
                      help="real: half the defective images per type; synthetic: defects painted on pool images")
    tune.add_argument("--folds", type=int, default=5, help="k development folds (default 5)")
    tune.add_argument("--groups", default=None, help="regex over file names naming the object (folder data)")
    tune.add_argument("--metric", default="image_auroc", choices=("image_auroc", "pixel_auroc"))
    tune.add_argument("--backbone", default=None, choices=BACKBONES, help="fixed for every candidate")
    tune.add_argument("--coreset-ratio", type=_coreset_ratio, default=None, help="fixed for every candidate (0.1)")
    tune.add_argument("--num-neighbors", type=int, default=None, help="fixed for every candidate (9)")
    tune.add_argument("--feature-cache", default=None, help="default: OUTPUT/feature_cache")
    tune.add_argument("--jobs", type=int, default=1, help="candidates fitted in parallel processes (memory permitting)")
    tune.add_argument("--device", default="cpu")
    tune.add_argument("--output", type=Path, required=True)
    tune.set_defaults(run=cmd_tune)

    download = commands.add_parser("download", help="download MVTec AD or MTD (needs internet)")
    download.add_argument("dataset", choices=("mvtec", "mtd"))
    download.add_argument("dest", type=Path)
    download.add_argument("--categories", nargs="+", default=None, help="MVTec AD categories (default: all)")
    download.set_defaults(run=cmd_download)
    parser.subcommands = {"evaluate": evaluate, "sweep": sweep, "fit": fit}
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "settings", None) is not None:
            # Parse again with the settings as defaults: every option not given explicitly comes from them.
            command = parser.subcommands[args.command]
            defaults = _settings_defaults(args.settings)
            known = {action.dest for action in command._actions}
            command.set_defaults(**{key: value for key, value in defaults.items() if key in known})
            args = parser.parse_args(argv)
        return args.run(args)
    except (InputError, WeightsUnavailableError) as error:
        print(f"patchcore-kit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patchcore-kit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
