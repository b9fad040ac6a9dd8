"""``patchcore-kit evaluate``: fit on a dataset's training pool, evaluate its test set, write the figures."""

from __future__ import annotations

import time
from pathlib import Path

from .options import (
    BASELINE_RUNTIME,
    PATCHCORE_ONLY,
    baseline_from_settings,
    check_cache,
    check_memory,
    format_metric,
    model_from_args,
    model_method,
)


def cmd_evaluate(args) -> int:
    import json
    import platform

    from ..atomic import display, write_csv, write_text
    from ..data import load_dataset
    from ..evaluate import evaluate
    from ..outputs import check_output_folder, claim_output_folder

    method = model_method(args)  # PatchCore, or the baseline a settings file is for
    # every parameter checked before any data is read
    model = (
        model_from_args(args, calibrate=False)
        if method == "patchcore"
        else baseline_from_settings(args, method, calibrate=False)
    )
    params = model.get_params()
    split = load_dataset(args.root, args.format, category=args.category, seed=params["seed"])
    if args.shots is not None:
        split = split.with_shots(args.shots, seed=params["seed"])
    # Everything that can be refused is refused before the first backbone pass.
    output = check_output_folder(args.output, args.overwrite, datasets=[args.root])
    check_cache(params["feature_cache"], [args.root])
    if method == "patchcore":  # the memory estimate knows PatchCore's bank; PaDiM and SPADE are far smaller at 224 px
        check_memory(args, params, n_train=len(split.train), n_test=len(split.test), pixel_metrics=split.has_masks)
    start = time.perf_counter()
    result = evaluate(model, split)  # reads (and checks) every mask before fitting
    metrics = {
        "dataset": split.name,
        "format": args.format,
        **{k: result.metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "per_defect")},
        "n_train": len(split.train),
        "n_test": len(split.test),
        "split_hash": split.split_hash(),
        "method": method,
        **{k: params[k] for k in ("backbone", "layers", "image_size")},
        **_model_metrics(model, method),
        "seed": params["seed"],
        "shots": args.shots,
        "seconds": {**result.seconds, "total": time.perf_counter() - start},
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    metrics["layers"] = list(metrics["layers"])
    if args.settings is not None:
        metrics["settings"] = str(args.settings)
        metrics["held_out"] = _held_out_figure(args.settings, split, result)
    claim_output_folder(output)
    write_text(output / "metrics.json", json.dumps(metrics, indent=2))
    write_csv(output / "scores.csv", result.score_rows())
    write_csv(output / "split.csv", [{k: r[k] for k in ("path", "split", "label")} for r in split.to_rows()])
    print(f"{split.name}: {len(split.train)} training images, {len(split.test)} test images")
    print(
        f"image AUROC {format_metric(metrics['image_auroc'])}  pixel AUROC {format_metric(metrics['pixel_auroc'])}"
        f"  AUPRO {format_metric(metrics['aupro'])}"
    )
    for defect, values in metrics["per_defect"].items():
        print(
            f"  {defect:<16} image {format_metric(values['image_auroc'])}  pixel {format_metric(values['pixel_auroc'])}"
            f"  AUPRO {format_metric(values['aupro'])}"
        )
    if metrics.get("held_out"):
        held = metrics["held_out"]
        print(
            f"held out from the tune ({held['n_nominal']} nominal + {held['n_defective']} defective images it never "
            f"scored): image AUROC {format_metric(held['image_auroc'])}"
        )
    print(f"wrote {display(output / 'metrics.json')}, scores.csv, split.csv")
    return 0


def _model_metrics(model, method: str) -> dict:
    """The model's own settings for ``metrics.json``: PatchCore's options and bank, or a baseline's params."""
    params = model.get_params()
    if method != "patchcore":
        shared = (
            "backbone",
            "layers",
            "image_size",
            "weights",
            "threshold_quantile",
            "calibrate",
            "progress",
            *BASELINE_RUNTIME,
        )
        return {key: value for key, value in params.items() if key not in shared}
    return {
        **{k: params[k] for k in PATCHCORE_ONLY if k not in ("sampler", "projection_dim", "search")},
        "memory_bank": list(model.memory_bank_.shape),
    }


def _held_out_figure(settings_path: Path, split, result) -> dict | None:
    """Image AUROC on the test images the tune never scored (real validation used half the defects)."""
    from ..metrics import image_auroc
    from ..tuning import read_settings
    from ..tuning.settings import held_out_mask

    settings = read_settings(settings_path)
    # Images are matched by their path inside the dataset, so a shots draw or another split of the
    # same dataset still leaves out exactly the defective images the tune scored.
    keep = held_out_mask(settings, [split.relative(s.path) for s in split.test], result.labels)
    labels = result.labels[keep]
    if labels.min() == labels.max():
        return None
    return {
        "image_auroc": image_auroc(labels, result.scores[keep]),
        "n_nominal": int((labels == 0).sum()),
        "n_defective": int((labels == 1).sum()),
        "defective_used_by_tune": len(settings.get("defective_used", [])),
    }
