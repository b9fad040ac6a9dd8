"""``patchcore-kit fit`` and ``predict``: a model fitted on your nominal images, saved, and used to score."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .options import check_memory, model_from_args, model_method, show_progress


def collect_images(items: list[Path]) -> list[Path]:
    """Image files as given, and every image in each folder given."""
    from ..data.base import list_images

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

    from ..modelfile import FORMAT

    try:
        with safe_open(path, framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except Exception:  # anything unreadable is not one of our models
        return False


def _is_scores_csv(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(11) == b"path,score,"


def cmd_fit(args) -> int:
    from ..atomic import display
    from ..outputs import check_output_file, check_writable

    method = model_method(args)
    if method != "patchcore":
        label = {"padim": "PaDiM", "spade": "SPADE"}[method]
        raise InputError(
            f"{args.settings}: holds {label} settings; fit saves PatchCore models only ({label} has no "
            f"model file): use 'evaluate --settings' or {label}(**load_settings(path, {method!r})).fit(images)"
        )
    model = model_from_args(args)  # every parameter checked before any image is read
    images = collect_images(args.images)
    check_output_file(
        args.output, _is_saved_model, "model file", "model.safetensors", args.overwrite, inputs=[*images, *args.images]
    )
    if model.feature_cache:
        check_writable(Path(model.feature_cache))
    check_memory(args, model.get_params(), n_train=len(images))
    model.fit(images)
    model.save(args.output)
    threshold = "n/a" if model.threshold_ is None else f"{model.threshold_:.4f}"
    print(f"fitted on {len(images)} images: memory bank {tuple(model.memory_bank_.shape)}, threshold {threshold}")
    print(f"wrote {display(args.output)}")
    return 0


def _check_weights_source(args, model) -> None:
    """A weights URL inside a model file is never fetched unless the user says so (``--allow-download``)."""
    from ..backbones import hub_cache_path, is_url

    if (
        model.weights is not None
        and is_url(model.weights)
        and not hub_cache_path(model.weights).is_file()
        and not args.allow_download
    ):
        raise InputError(
            f"{args.model}: its backbone weights come from {model.weights}, which is not in the torch "
            f"hub cache; predict downloads nothing on its own: pass --allow-download to fetch it"
        )


def cmd_predict(args) -> int:
    from ..atomic import display, write_csv
    from ..outputs import check_output_file
    from ..params import check_device
    from ..patchcore import PatchCore

    model = PatchCore.load(args.model)
    check_device(model.device)
    _check_weights_source(args, model)
    model.set_params(progress=show_progress())
    images = collect_images(args.images)
    if args.output:  # before the slow part
        check_output_file(
            args.output,
            _is_scores_csv,
            "scores file",
            "scores.csv",
            args.overwrite,
            inputs=[args.model, *images, *args.images],
        )
    check_memory(args, model.get_params(), n_test=len(images), bank_rows=len(model.memory_bank_))
    scores = model.decision_function(images)
    threshold = model.threshold_
    rows = [
        {"path": str(path), "score": float(score), "anomalous": "" if threshold is None else int(score > threshold)}
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
