"""``patchcore-kit sweep`` and ``tune``: the studies that fit many models on one dataset."""

from __future__ import annotations

from ..errors import InputError
from .options import SWEEP_PATCHCORE, SWEEP_WIDE, TUNE_FIXED, check_cache, check_memory, given, show_progress


def cmd_sweep(args) -> int:
    from ..data import load_dataset
    from ..experiments import run_sweep, sweep_categories
    from ..outputs import check_output_folder, claim_output_folder
    from ..params import check_device, check_params
    from ..patchcore import PatchCore

    defaults = PatchCore().get_params()  # the estimator's defaults, for what is not given
    wide = {**{k: defaults[k] for k in SWEEP_WIDE}, **given(args, SWEEP_WIDE)}
    # PatchCore settings go to the sweep only when given, so a resumed sweep's settings do not
    # change with the kit's defaults.
    patchcore = given(args, SWEEP_PATCHCORE)
    check_params("sweep settings", {"layers": wide["layers"], "border": defaults["border"], **patchcore})
    check_device(wide["device"])
    # The first category stands for all of them in the memory estimate (MVTec AD's are alike in size).
    split = load_dataset(args.root, args.format, sweep_categories(args.root, args.format, args.category)[0])
    output = check_output_folder(args.output, args.overwrite, datasets=[args.root])
    check_cache(wide["feature_cache"], [args.root])
    shots = [len(split.train) if n == "all" else min(n, len(split.train)) for n in args.shots]
    check_memory(
        args,
        {**defaults, **wide, **patchcore},
        n_train=max(shots),
        n_test=len(split.test),
        pixel_metrics=split.has_masks,
    )
    run_sweep(
        args.root,
        args.format,
        category=args.category,
        shots=tuple(args.shots),
        methods=tuple(args.methods),
        seeds=tuple(args.seeds),
        backbone=wide["backbone"],
        image_size=wide["image_size"],
        output=claim_output_folder(output),
        cache_dir=wide["feature_cache"],
        progress=show_progress(),
        layers=tuple(wide["layers"]),
        weights=wide["weights"],
        device=wide["device"],
        batch_size=wide["batch_size"],
        baseline_stages=args.baseline_stages,
        spade_table_gb=args.spade_table_gb,
        scheduler=args.scheduler,
        workers=args.workers,
        **({"patchcore": patchcore} if patchcore else {}),
        **_baseline_settings(args, wide),
    )
    return 0


def _baseline_settings(args, wide: dict) -> dict:
    """PaDiM's and SPADE's own settings files as the sweep's per-method parameters (stages, image size,
    their own options). The backbone and its weights stay sweep-wide: one feature cache for all."""
    from ..tuning import load_settings

    out = {}
    for method, path in (getattr(args, "settings_files", None) or {}).items():
        if method == "patchcore":
            continue  # PatchCore's settings filled the sweep's own options (main)
        params = load_settings(path, method)
        for key in ("backbone", "weights"):
            value = params.pop(key, None)
            if value != wide[key]:
                raise InputError(
                    f"{path}: {method} settings use {key} {value!r}, the sweep {wide[key]!r}; "
                    f"every method of a sweep reads one backbone (give --{key} or tune on it)"
                )
        if params.get("image_size") == wide["image_size"]:
            params.pop("image_size")  # the sweep's size: nothing per method
        out[method] = params
    return out


def cmd_tune(args) -> int:
    from ..outputs import check_output_folder, claim_output_folder
    from ..tuning import tune

    fixed = given(args, TUNE_FIXED)
    grid = args.grid
    if fixed:  # command-line model options join the grid's fixed ones
        from ..tuning.grid import method_grid, read_grid_file

        grid = dict(method_grid(args.method).default_grid if grid is None else read_grid_file(grid))
        grid["fixed"] = {**(grid.get("fixed") or {}), **fixed}
    settings = tune(
        args.root,
        args.format,
        args.category,
        shots=args.shots,
        seed=args.seed,
        output=claim_output_folder(check_output_folder(args.output, args.overwrite, datasets=[args.root])),
        grid=grid,
        validation=args.validation,
        folds=args.folds,
        groups=args.groups,
        metric=args.metric,
        method=args.method,
        feature_cache=args.feature_cache,
        jobs=args.jobs,
        device=args.device,
        progress=True,
    )
    print(
        f"use it: patchcore-kit evaluate {args.root} --format {args.format} --settings {args.output / 'settings.json'} ..."
    )
    from ..tuning.grid import METHODS

    label = METHODS[args.method].label
    print(
        f"        {label}(**load_settings({str(args.output / 'settings.json')!r}, {args.method!r}))  "
        f"[{settings['setting']}]"
    )
    return 0
