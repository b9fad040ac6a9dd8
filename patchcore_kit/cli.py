"""The ``patchcore-kit`` command line: thin wiring over the package.

    patchcore-kit demo [--output DIR] [--fast]
    patchcore-kit evaluate ROOT --format {mvtec,mtd,folder} [--category C] --output DIR
    patchcore-kit sweep ROOT --format ... [--category all] --shots 1 2 5 all --methods patchcore padim spade --seeds 0 1 2 --output DIR
    patchcore-kit fit IMAGES_OR_FOLDERS... --output model.safetensors
    patchcore-kit predict MODEL IMAGES_OR_FOLDERS... [--output scores.csv]
    patchcore-kit download {mvtec,mtd} DEST
    patchcore-kit tune ROOT --format ... [--validation {real,synthetic}] [--grid FILE] --output DIR

evaluate, fit and sweep take ``--settings DIR/settings.json`` (what ``tune`` chose); options given
on the command line still win over it. A settings file records its method: ``evaluate`` builds
PatchCore, PaDiM or SPADE from it; ``sweep --settings patchcore=A.json padim=B.json spade=C.json``
runs every method at its own setting (a plain path goes to the method its file records).

Every user error (bad file, missing folder, unknown backbone) is printed as one line naming the file
and the problem, with exit status 2 and no traceback, and everything that can be checked before the
compute is: parameters (``params``), masks, output folders (``outputs``: new, empty or the kit's, else
``--overwrite``; never inside the dataset; writable) and the memory the run needs (``memory``; more
than is available needs ``--max-memory``). Every output is written atomically (``atomic``).
"""
from __future__ import annotations

# Only the standard library and the light modules here: torch loads inside main(), where Ctrl-C
# during start-up is one line like every other interruption, and usage errors need no torch at all.
import argparse
import sys
import time
from pathlib import Path

from .errors import InputError, WeightsUnavailableError
from .params import AGGREGATIONS, BACKBONES, BORDERS, cli_type

# The settings this kit uses by default on each dataset format (see README, "Results on MTD").
DEFAULT_IMAGE_SIZE = 224
DEFAULT_LAYERS = ("layer2", "layer3")  # backbones.DEFAULT_LAYERS, without importing torch


def _max_memory(text: str) -> int:
    from .memory import parse_size

    try:
        value = parse_size(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"max memory must be a size like 16G or 512M, got {text!r}")
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


def _run_options(parser: argparse.ArgumentParser) -> None:
    """What every command that computes shares: where results may go and how much memory it may use."""
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output folder (or over a file) that patchcore-kit did not write")
    parser.add_argument("--max-memory", type=_max_memory, default=None, metavar="SIZE",
                        help="memory the run may use, e.g. 16G (default: what the machine has available); "
                             "a larger value runs what the estimate would refuse")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES)
    group.add_argument("--weights", default=None, help="backbone weights: local file or URL (default: ImageNet)")
    group.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS))
    group.add_argument("--image-size", type=cli_type("image_size"), default=DEFAULT_IMAGE_SIZE, help="N or HxW")
    group.add_argument("--patch-size", type=cli_type("patch_size"), default=3,
                       help="neighbourhood p x p each patch feature averages over (paper: 3; 1 = none)")
    group.add_argument("--coreset-ratio", type=cli_type("coreset_ratio"), default=0.1, help="fraction (0, 1] or count")
    group.add_argument("--sampler", default="greedy", choices=("greedy", "random", "none"))
    group.add_argument("--num-neighbors", type=cli_type("num_neighbors"), default=9)
    group.add_argument("--aggregation", default="mean", choices=AGGREGATIONS,
                       help="mean: average each p x p neighbourhood (paper); unfold: keep it whole (official code)")
    group.add_argument("--border", default="zeros", choices=BORDERS,
                       help="border patches' missing neighbours: zeros (official code), reflect, or valid (left out)")
    group.add_argument("--pretrain-dim", type=cli_type("pretrain_dim"), default=None,
                       help="unfold: per-layer size (default 1024)")
    group.add_argument("--target-dim", type=cli_type("target_dim"), default=None)
    group.add_argument("--projection-dim", type=cli_type("projection_dim"), default=128,
                       help="greedy coreset's random projection")
    group.add_argument("--search", default="exact", choices=("exact", "hnsw", "ivf", "auto"),
                       help="nearest-neighbour search while scoring: exact, or approximate faiss hnsw / ivf")
    group.add_argument("--device", type=cli_type("device"), default="cpu")
    group.add_argument("--batch-size", type=cli_type("batch_size"), default=8)
    group.add_argument("--seed", type=cli_type("seed"), default=0)
    group.add_argument("--feature-cache", default=None, help="directory to cache backbone features in")
    _run_options(parser)
    _settings_option(parser)


def _settings_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", type=Path, default=None,
                        help="settings.json written by 'patchcore-kit tune' (explicit options win over it)")


def _settings_defaults(path: Path, method: str) -> dict:
    """A tune's chosen parameters as argparse defaults: the settings fill in, explicit flags override."""
    from .tuning import load_settings

    params = load_settings(path, method)
    defaults = dict(params)
    if "layers" in defaults:
        defaults["layers"] = list(defaults["layers"])
    return defaults


_METHOD_NAMES = ("patchcore", "padim", "spade")
#: Model options only PatchCore has: given with another method's settings they would be ignored.
_PATCHCORE_ONLY = ("patch_size", "aggregation", "border", "pretrain_dim", "target_dim", "coreset_ratio", "sampler",
                   "num_neighbors", "projection_dim", "search")


def _settings_files(items) -> dict[str, Path]:
    """``--settings`` as ``{method: path}``: a plain path is for the method its file records, and
    ``METHOD=PATH`` must name the method the file holds (else one error naming both)."""
    from .tuning import load_settings, read_settings
    from .tuning.settings import settings_method

    files: dict[str, Path] = {}
    for item in items if isinstance(items, list) else [items]:
        text, said = str(item), None
        head, sep, tail = text.partition("=")
        if sep and head in _METHOD_NAMES:
            said, text = head, tail
        path = Path(text)
        method = settings_method(read_settings(path), path)
        if said is not None:
            load_settings(path, said)  # a PaDiM file given as patchcore=...: the standard message
        if method in files:
            raise InputError(f"--settings: two settings files for {method} ({files[method]} and {path}); give one")
        files[method] = path
    return files


def _model_method(args) -> str:
    """The estimator an evaluate/fit run builds: the settings file's method, else PatchCore."""
    files = getattr(args, "settings_files", None) or {}
    return next(iter(files), "patchcore")


def _refuse_patchcore_options(args, method: str, path: Path) -> None:
    """A PatchCore-only flag given with another method's settings is refused, not silently ignored."""
    defaults = build_parser().subcommands[args.command]
    for name in _PATCHCORE_ONLY:
        if hasattr(args, name) and getattr(args, name) != defaults.get_default(name):
            raise InputError(f"--{name.replace('_', '-')} is a PatchCore option, but {path} holds {method} settings; "
                             f"leave it out (or use a PatchCore tune's settings)")


def _baseline_from_settings(args, method: str, calibrate: bool = True):
    """PaDiM or SPADE from its settings file; the options every estimator shares come from the
    command line (which the settings filled in, so an explicit flag wins as for PatchCore)."""
    from .tuning import load_settings
    from .tuning.run import estimator_class

    path = args.settings_files[method]
    _refuse_patchcore_options(args, method, path)
    params = load_settings(path, method)
    params.update(backbone=args.backbone, layers=tuple(args.layers), image_size=args.image_size, weights=args.weights)
    return estimator_class(method)(**params, device=args.device, batch_size=args.batch_size, seed=args.seed,
                                   feature_cache=args.feature_cache, calibrate=calibrate, progress=_show_progress())


def _show_progress() -> bool:
    """Progress bars on a terminal only: in logs and pipes their carriage returns are noise."""
    return sys.stderr.isatty()


def _check_model_args(args) -> None:
    """The cross-parameter rules and the device, before any data is read."""
    from .params import check_device, cross_problem

    text = cross_problem({"target_dim": args.target_dim, "layers": args.layers})
    if text is not None:
        raise InputError(f"--target-dim {args.target_dim}: {text}")
    text = cross_problem({"aggregation": args.aggregation, "border": args.border})
    if text is not None:
        raise InputError(f"--aggregation {args.aggregation} --border {args.border}: {text}")
    if len(set(args.layers)) != len(args.layers) or any(layer not in ("layer1", "layer2", "layer3", "layer4")
                                                        for layer in args.layers):
        bad = [layer for layer in args.layers if layer not in ("layer1", "layer2", "layer3", "layer4")]
        raise InputError(f"--layers {' '.join(args.layers)}: unknown layers {bad or 'repeated'}; "
                         f"choose from ['layer1', 'layer2', 'layer3', 'layer4'], each once")
    check_device(args.device)


def _check_memory(args, backbone: str, layers, image_size, n_train: int = 0, n_test: int = 0,
                  pixel_metrics: bool = False, bank_rows: int | None = None, batch_size: int = 8, **model) -> None:
    """Refuse a run whose estimated memory exceeds what is available (or ``--max-memory``)."""
    from .backbones import STAGE_CHANNELS
    from .memory import available_bytes, estimate, format_size

    need = estimate(image_size, list(layers), STAGE_CHANNELS[backbone], backbone, n_train=n_train, n_test=n_test,
                    batch_size=batch_size, pixel_metrics=pixel_metrics, bank_rows=bank_rows, **model)
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


def _model_from_args(args, calibrate: bool = True):
    from .patchcore import PatchCore

    return PatchCore(
        backbone=args.backbone, layers=tuple(args.layers), image_size=args.image_size, weights=args.weights,
        patch_size=args.patch_size, aggregation=args.aggregation, border=args.border, pretrain_dim=args.pretrain_dim,
        coreset_ratio=args.coreset_ratio, sampler=args.sampler, num_neighbors=args.num_neighbors,
        search=args.search, target_dim=args.target_dim, projection_dim=args.projection_dim, device=args.device,
        batch_size=args.batch_size, seed=args.seed,
        feature_cache=args.feature_cache, calibrate=calibrate, progress=_show_progress(),
    )


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="dataset folder")
    parser.add_argument("--format", required=True, choices=("mvtec", "mtd", "folder"))
    parser.add_argument("--category", default=None,
                        help="MVTec AD category (e.g. bottle); sweep: 'all' runs every category and averages them")


def _format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _check_cache(args, datasets) -> None:
    from .outputs import check_apart_from_data, check_writable

    if args.feature_cache:
        check_apart_from_data(Path(args.feature_cache), datasets, "feature cache folder")
        check_writable(Path(args.feature_cache))


def cmd_evaluate(args) -> int:
    import json
    import platform

    from .atomic import display, write_csv, write_text
    from .data import load_dataset
    from .evaluate import evaluate
    from .outputs import check_output_folder, claim_output_folder

    _check_model_args(args)
    split = load_dataset(args.root, args.format, category=args.category, seed=args.seed)
    if args.shots is not None:
        split = split.with_shots(args.shots, seed=args.seed)
    # Everything that can be refused is refused before the first backbone pass.
    output = check_output_folder(args.output, args.overwrite, datasets=[args.root])
    _check_cache(args, [args.root])
    method = _model_method(args)
    if method == "patchcore":  # the memory estimate knows PatchCore's bank; PaDiM and SPADE are far smaller at 224 px
        _check_memory(args, args.backbone, args.layers, args.image_size, n_train=len(split.train),
                      n_test=len(split.test), pixel_metrics=split.has_masks, batch_size=args.batch_size,
                      target_dim=args.target_dim, coreset_ratio=args.coreset_ratio, sampler=args.sampler,
                      aggregation=args.aggregation, patch_size=args.patch_size)
    split_hash = split.split_hash()
    model = _model_from_args(args, calibrate=False) if method == "patchcore" else _baseline_from_settings(args, method, False)
    start = time.perf_counter()
    result = evaluate(model, split)  # reads (and checks) every mask before fitting
    metrics = {
        "dataset": split.name,
        "format": args.format,
        "image_auroc": result.metrics["image_auroc"],
        "pixel_auroc": result.metrics["pixel_auroc"],
        "aupro": result.metrics["aupro"],
        "per_defect": result.metrics["per_defect"],
        "n_train": len(split.train),
        "n_test": len(split.test),
        "split_hash": split_hash,
        "method": method,
        "backbone": args.backbone,
        "layers": list(args.layers),
        "image_size": args.image_size,
        **_model_metrics(args, model, method),
        "seed": args.seed,
        "shots": args.shots,
        "seconds": {**result.seconds, "total": time.perf_counter() - start},
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    if args.settings is not None:
        metrics["settings"] = str(args.settings)
        metrics["held_out"] = _held_out_figure(args.settings, split, result)
    claim_output_folder(output)
    write_text(output / "metrics.json", json.dumps(metrics, indent=2))
    write_csv(output / "scores.csv", result.score_rows())
    write_csv(output / "split.csv", [{k: r[k] for k in ("path", "split", "label")} for r in split.to_rows()])
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
    print(f"wrote {display(output / 'metrics.json')}, scores.csv, split.csv")
    return 0


def _model_metrics(args, model, method: str) -> dict:
    """The model's own settings for ``metrics.json``: PatchCore's options and bank, or a baseline's params."""
    if method != "patchcore":
        return {key: getattr(model, key) for key in model._param_names
                if key not in ("backbone", "layers", "image_size", "weights", "device", "batch_size", "seed",
                               "threshold_quantile", "calibrate", "feature_cache", "progress")}
    return {"patch_size": args.patch_size, "aggregation": args.aggregation, "border": args.border,
            "pretrain_dim": args.pretrain_dim, "target_dim": args.target_dim, "coreset_ratio": args.coreset_ratio,
            "num_neighbors": args.num_neighbors, "memory_bank": list(model.memory_bank_.shape)}


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

    from .modelfile import FORMAT

    try:
        with safe_open(path, framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except Exception:  # anything unreadable is not one of our models
        return False


def _is_scores_csv(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(11) == b"path,score,"


def cmd_fit(args) -> int:
    from .atomic import display
    from .outputs import check_output_file

    _check_model_args(args)
    method = _model_method(args)
    if method != "patchcore":
        label = {"padim": "PaDiM", "spade": "SPADE"}[method]
        raise InputError(f"{args.settings}: holds {label} settings; fit saves PatchCore models only ({label} has no "
                         f"model file): use 'evaluate --settings' or {label}(**load_settings(path, {method!r})).fit(images)")
    images = _collect_images(args.images)
    check_output_file(args.output, _is_saved_model, "model file", "model.safetensors", args.overwrite,
                      inputs=[*images, *args.images])
    if args.feature_cache:
        from .outputs import check_writable

        check_writable(Path(args.feature_cache))
    _check_memory(args, args.backbone, args.layers, args.image_size, n_train=len(images), batch_size=args.batch_size,
                  target_dim=args.target_dim, coreset_ratio=args.coreset_ratio, sampler=args.sampler,
                  aggregation=args.aggregation, patch_size=args.patch_size)
    model = _model_from_args(args).fit(images)
    model.save(args.output)
    threshold = "n/a" if model.threshold_ is None else f"{model.threshold_:.4f}"
    print(f"fitted on {len(images)} images: memory bank {tuple(model.memory_bank_.shape)}, threshold {threshold}")
    print(f"wrote {display(args.output)}")
    return 0


def _check_weights_source(args, model) -> None:
    """A weights URL inside a model file is never fetched unless the user says so (``--allow-download``)."""
    from .backbones import hub_cache_path, is_url

    if model.weights is not None and is_url(model.weights) and not hub_cache_path(model.weights).is_file() \
            and not args.allow_download:
        raise InputError(f"{args.model}: its backbone weights come from {model.weights}, which is not in the torch "
                         f"hub cache; predict downloads nothing on its own: pass --allow-download to fetch it")


def cmd_predict(args) -> int:
    from .atomic import display, write_csv
    from .outputs import check_output_file
    from .params import check_device
    from .patchcore import PatchCore

    model = PatchCore.load(args.model)
    check_device(model.device)
    _check_weights_source(args, model)
    model.progress = _show_progress()
    images = _collect_images(args.images)
    if args.output:  # before the slow part
        check_output_file(args.output, _is_scores_csv, "scores file", "scores.csv", args.overwrite,
                          inputs=[args.model, *images, *args.images])
    _check_memory(args, model.backbone, model.layers, model.image_size, n_test=len(images),
                  bank_rows=len(model.memory_bank_), batch_size=model.batch_size, target_dim=model.target_dim,
                  aggregation=getattr(model, "aggregation", "mean"), patch_size=model.patch_size)
    scores = model.decision_function(images)
    threshold = model.threshold_
    rows = [
        {"path": str(path), "score": float(score),
         "anomalous": "" if threshold is None else int(score > threshold)}
        for path, score in zip(images, scores)
    ]
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_csv(args.output, rows)  # atomic: a crash leaves the previous file whole
        print(f"wrote {display(args.output)}")
    else:
        for row in rows:
            print(f"{row['score']:.4f}\t{row['anomalous']}\t{display(row['path'])}")
    return 0


def cmd_demo(args) -> int:
    from .outputs import check_output_folder, claim_output_folder
    from .report import run_demo

    output = args.output if args.output is not None else Path("runs") / "demo"
    check_output_folder(output, args.overwrite)
    run_demo(output=claim_output_folder(output), fast=args.fast, progress=True)
    return 0


#: PatchCore settings the sweep command passes on when given (left out otherwise, so a resumed sweep's
#: settings do not change with the kit's defaults).
_SWEEP_PATCHCORE = ("patch_size", "aggregation", "border", "pretrain_dim", "target_dim", "coreset_ratio",
                    "sampler", "num_neighbors")


def _sweep_method_params(args) -> dict:
    patchcore = {name: getattr(args, name) for name in _SWEEP_PATCHCORE if getattr(args, name) is not None}
    out = {"patchcore": patchcore} if patchcore else {}
    out.update(_sweep_baseline_settings(args))
    return out


def _sweep_baseline_settings(args) -> dict:
    """PaDiM's and SPADE's own settings files as the sweep's per-method parameters (stages, image size,
    their own options). The backbone and its weights stay sweep-wide: one feature cache for all."""
    from .tuning import load_settings

    out = {}
    for method, path in (getattr(args, "settings_files", None) or {}).items():
        if method == "patchcore":
            continue  # PatchCore's settings filled the sweep's own options (main)
        params = load_settings(path, method)
        for key in ("backbone", "weights"):
            value = params.pop(key, None)
            if value != getattr(args, key):
                raise InputError(f"{path}: {method} settings use {key} {value!r}, the sweep {getattr(args, key)!r}; "
                                 f"every method of a sweep reads one backbone (give --{key} or tune on it)")
        if params.get("image_size") == args.image_size:
            params.pop("image_size")  # the sweep's size: nothing per method
        out[method] = params
    return out


def cmd_sweep(args) -> int:
    from .data import load_dataset
    from .experiments import run_sweep
    from .outputs import check_output_folder, claim_output_folder

    from .experiments import sweep_categories
    from .params import check_device, cross_problem

    check_device(args.device)
    text = cross_problem({"target_dim": args.target_dim, "layers": args.layers, "aggregation": args.aggregation,
                          "border": args.border or "zeros"})  # None: PatchCore's default
    if text is not None:
        raise InputError(f"sweep settings: {text}")
    # The first category stands for all of them in the memory estimate (MVTec AD's are alike in size).
    split = load_dataset(args.root, args.format, sweep_categories(args.root, args.format, args.category)[0])
    output = check_output_folder(args.output, args.overwrite, datasets=[args.root])
    _check_cache(args, [args.root])
    shots = [len(split.train) if n == "all" else min(n, len(split.train)) for n in args.shots]
    _check_memory(args, args.backbone, args.layers, args.image_size, n_train=max(shots), n_test=len(split.test),
                  pixel_metrics=split.has_masks, batch_size=args.batch_size, target_dim=args.target_dim,
                  coreset_ratio=args.coreset_ratio or 0.1, sampler=args.sampler or "greedy",
                  aggregation=args.aggregation or "mean", patch_size=args.patch_size or 3)
    run_sweep(
        args.root, args.format, category=args.category, shots=tuple(args.shots), methods=tuple(args.methods),
        seeds=tuple(args.seeds), backbone=args.backbone, image_size=args.image_size,
        output=claim_output_folder(output), cache_dir=args.feature_cache, progress=_show_progress(),
        layers=tuple(args.layers), weights=args.weights, device=args.device, batch_size=args.batch_size,
        baseline_stages=args.baseline_stages, spade_table_gb=args.spade_table_gb, scheduler=args.scheduler,
        workers=args.workers, **_sweep_method_params(args),
    )
    return 0


def cmd_tune(args) -> int:
    from .outputs import check_output_folder, claim_output_folder
    from .tuning import tune

    fixed = {"backbone": args.backbone, "coreset_ratio": args.coreset_ratio, "num_neighbors": args.num_neighbors}
    grid = args.grid
    if any(value is not None for value in fixed.values()):  # command-line model options join the grid's fixed ones
        from .tuning.grid import method_grid, read_grid_file

        grid = dict(method_grid(args.method).default_grid if grid is None else read_grid_file(grid))
        grid["fixed"] = {**(grid.get("fixed") or {}), **{k: v for k, v in fixed.items() if v is not None}}
    settings = tune(
        args.root, args.format, args.category, shots=args.shots, seed=args.seed,
        output=claim_output_folder(check_output_folder(args.output, args.overwrite, datasets=[args.root])),
        grid=grid, validation=args.validation, folds=args.folds, groups=args.groups, metric=args.metric,
        method=args.method, feature_cache=args.feature_cache, jobs=args.jobs, device=args.device, progress=True,
    )
    print(f"use it: patchcore-kit evaluate {args.root} --format {args.format} --settings {args.output / 'settings.json'} ...")
    from .tuning.grid import METHODS

    label = METHODS[args.method].label
    print(f"        {label}(**load_settings({str(args.output / 'settings.json')!r}, {args.method!r}))  [{settings['setting']}]")
    return 0


def cmd_download(args) -> int:
    from .atomic import display
    from .data import download_mtd, download_mvtec

    path = download_mtd(args.dest) if args.dataset == "mtd" else download_mvtec(args.dest, args.categories)
    print(f"{args.dataset} is in {display(path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="patchcore-kit", description="PatchCore anomaly detection kit")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the embedded demo data, evaluate it, write an HTML report")
    demo.add_argument("--output", type=Path, default=None, help="report folder (default: runs/demo)")
    demo.add_argument("--fast", action="store_true", help="a tiny run (seconds), as in the tests")
    demo.add_argument("--overwrite", action="store_true", help="write into a folder patchcore-kit did not write")
    demo.set_defaults(run=cmd_demo)

    evaluate = commands.add_parser("evaluate", help="fit on a dataset's training pool and evaluate its test set")
    _dataset_options(evaluate)
    _model_options(evaluate)
    evaluate.add_argument("--shots", type=cli_type("shots"), default=None, help="train on N images drawn (seeded) from the pool")
    evaluate.add_argument("--output", type=Path, required=True)
    evaluate.set_defaults(run=cmd_evaluate)

    sweep = commands.add_parser("sweep", help="sample-efficiency sweep: AUROC against number of training images")
    _dataset_options(sweep)
    sweep.add_argument("--shots", type=_shots, nargs="+", default=[1, 2, 5, 10, 16, 20, 50],
                       help="training images per fit; 'all' = the whole training pool (e.g. 1 2 5 all)")
    sweep.add_argument("--methods", nargs="+", default=["patchcore", "padim", "spade"])
    sweep.add_argument("--seeds", type=cli_type("seed"), nargs="+", default=[0, 1, 2])
    sweep.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES)
    sweep.add_argument("--image-size", type=cli_type("image_size"), default=DEFAULT_IMAGE_SIZE)
    sweep.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS), help="PatchCore's stages")
    patchcore = sweep.add_argument_group("PatchCore (kit defaults when not given)")
    patchcore.add_argument("--patch-size", type=cli_type("patch_size"), default=None)
    patchcore.add_argument("--aggregation", default=None, choices=AGGREGATIONS)
    patchcore.add_argument("--border", default=None, choices=BORDERS)
    patchcore.add_argument("--pretrain-dim", type=cli_type("pretrain_dim"), default=None)
    patchcore.add_argument("--target-dim", type=cli_type("target_dim"), default=None)
    patchcore.add_argument("--coreset-ratio", type=cli_type("coreset_ratio"), default=None)
    patchcore.add_argument("--sampler", default=None, choices=("greedy", "random", "none"))
    patchcore.add_argument("--num-neighbors", type=cli_type("num_neighbors"), default=None)
    sweep.add_argument("--baseline-stages", choices=("paper", "shared"), default="paper",
                       help="paper: PaDiM layer1+2+3, SPADE layer1+2+3 + pooled layer4; "
                            "shared: all methods on PatchCore's --layers (the kit's earlier sweep)")
    sweep.add_argument("--weights", default=None, help="backbone weights: local file or URL (default: ImageNet)")
    sweep.add_argument("--device", type=cli_type("device"), default="cpu")
    sweep.add_argument("--batch-size", type=cli_type("batch_size"), default=8)
    sweep.add_argument("--spade-table-gb", type=float, default=4.0,
                       help="memory SPADE's shared pair table may take (0: score SPADE row by row)")
    sweep.add_argument("--feature-cache", default=None)
    sweep.add_argument("--scheduler", default="serial", metavar="{serial,processes,ADDRESS}",
                       help="where the cells run: serial (here), processes (a Dask LocalCluster) or a Dask "
                            "scheduler's address (tcp://host:8786) or scheduler file; a cluster needs "
                            "--feature-cache and the data on storage every worker reads")
    sweep.add_argument("--workers", type=int, default=None, help="--scheduler processes: worker processes "
                       "(default: one per core)")
    sweep.add_argument("--settings", nargs="+", default=None, metavar="[METHOD=]FILE",
                       help="settings.json files written by 'patchcore-kit tune' (one per method, e.g. "
                            "patchcore=A.json padim=B.json spade=C.json): each method runs at its own setting; "
                            "PatchCore's fill the options above (explicit options win)")
    sweep.add_argument("--output", type=Path, required=True)
    _run_options(sweep)
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
    predict.add_argument("--allow-download", action="store_true",
                         help="fetch backbone weights from a URL stored in the model file")
    _run_options(predict)
    predict.set_defaults(run=cmd_predict)

    tune = commands.add_parser("tune", help="choose settings on development folds of the training pool (never the test set)")
    _dataset_options(tune)
    tune.add_argument("--shots", type=cli_type("shots"), default=None, help="each fold trains on N images drawn from the other folds")
    tune.add_argument("--seed", type=cli_type("seed"), default=0)
    tune.add_argument("--method", default="patchcore", choices=("patchcore", "padim", "spade"),
                      help="the estimator whose settings are chosen; each has its own grid keys and default grid")
    tune.add_argument("--grid", type=Path, default=None, help="YAML/JSON grid file (default: the method's built-in grid)")
    tune.add_argument("--validation", default="real", choices=("real", "synthetic"),
                      help="real: half the defective images per type; synthetic: defects painted on pool images")
    tune.add_argument("--folds", type=int, default=5, help="k development folds (default 5)")
    tune.add_argument("--groups", default=None, help="regex over file names naming the object (folder data)")
    tune.add_argument("--metric", default="image_auroc", choices=("image_auroc", "pixel_auroc"))
    tune.add_argument("--backbone", default=None, choices=BACKBONES, help="fixed for every candidate")
    tune.add_argument("--coreset-ratio", type=cli_type("coreset_ratio"), default=None, help="fixed for every candidate (0.1)")
    tune.add_argument("--num-neighbors", type=cli_type("num_neighbors"), default=None, help="fixed for every candidate (9)")
    tune.add_argument("--feature-cache", default=None, help="default: OUTPUT/feature_cache")
    tune.add_argument("--jobs", type=int, default=1, help="candidates fitted in parallel processes (memory permitting)")
    tune.add_argument("--device", type=cli_type("device"), default="cpu")
    tune.add_argument("--output", type=Path, required=True)
    _run_options(tune)
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
            # A sweep takes them from PatchCore's file only (its options are PatchCore's); evaluate from
            # whichever method the file is for.
            command = parser.subcommands[args.command]
            files = _settings_files(args.settings)
            if args.command == "sweep":
                defaults = _settings_defaults(files["patchcore"], "patchcore") if "patchcore" in files else {}
            else:
                (method, path), = files.items()
                defaults = _settings_defaults(path, method)
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


if __name__ == "__main__":
    sys.exit(main())
