"""``patchcore-kit sweep`` and ``tune``: the studies that fit many models on one dataset."""
from __future__ import annotations

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
    check_memory(args, {**defaults, **wide, **patchcore},
                 n_train=max(shots), n_test=len(split.test), pixel_metrics=split.has_masks)
    run_sweep(
        args.root, args.format, category=args.category, shots=tuple(args.shots), methods=tuple(args.methods),
        seeds=tuple(args.seeds), backbone=wide["backbone"], image_size=wide["image_size"],
        output=claim_output_folder(output), cache_dir=wide["feature_cache"], progress=show_progress(),
        layers=tuple(wide["layers"]), weights=wide["weights"], device=wide["device"], batch_size=wide["batch_size"],
        baseline_stages=args.baseline_stages, spade_table_gb=args.spade_table_gb, scheduler=args.scheduler,
        workers=args.workers,
        **({"patchcore": patchcore} if patchcore else {}),
    )
    return 0


def cmd_tune(args) -> int:
    from ..outputs import check_output_folder, claim_output_folder
    from ..tuning import tune

    fixed = given(args, TUNE_FIXED)
    grid = args.grid
    if fixed:  # command-line model options join the grid's fixed ones
        from ..tuning.grid import DEFAULT_GRID, read_grid_file

        grid = dict(DEFAULT_GRID if grid is None else read_grid_file(grid))
        grid["fixed"] = {**(grid.get("fixed") or {}), **fixed}
    settings = tune(
        args.root, args.format, args.category, shots=args.shots, seed=args.seed,
        output=claim_output_folder(check_output_folder(args.output, args.overwrite, datasets=[args.root])),
        grid=grid, validation=args.validation, folds=args.folds, groups=args.groups, metric=args.metric,
        feature_cache=args.feature_cache, jobs=args.jobs, device=args.device, progress=True,
    )
    print(f"use it: patchcore-kit evaluate {args.root} --format {args.format} --settings {args.output / 'settings.json'} ...")
    print(f"        PatchCore(**load_settings({str(args.output / 'settings.json')!r}))  [{settings['setting']}]")
    return 0
