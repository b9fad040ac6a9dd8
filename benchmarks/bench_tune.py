"""A tune over the default grid on one MVTec-sized category: how long it takes on this machine.

Issue #12 asks that ``patchcore-kit tune`` over its default grid finish in under 15 minutes on the
2-core machine for one MVTec-sized category (bottle: 209 training images, 900 × 900 px). This runs
it from a cold start (fresh output folder and feature cache, so the backbone passes and, for
synthetic validation, the painting are counted) and prints the wall time, split into painting the
synthetic anomalies, the backbone passes (one per stage set and size), and the fits (candidate ×
fold), with the slowest candidates.

    python benchmarks/bench_tune.py --root ../shared/data/mvtec --category bottle | tee docs/benchmarks/bench_tune.txt
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from _common import Timer, footer, header, peak_rss_mib, set_threads  # noqa: I001  (puts the checkout on sys.path)

from patchcore_kit.tuning import DEFAULT_GRID, tune
from patchcore_kit.tuning.grid import load_grid

BUDGET_S = 15 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="../shared/data/mvtec")
    parser.add_argument("--format", default="mvtec")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--validation", default="synthetic", choices=("real", "synthetic"))
    parser.add_argument("--grid", default=None, help="grid file (default: the built-in default grid)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--shots", type=int, default=None, help="training images per fold (default: all of the other folds)"
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("runs/bench_tune"))
    parser.add_argument("--feature-cache", default=None, help="default: OUTPUT/feature_cache (removed with it)")
    parser.add_argument("--keep", action="store_true", help="reuse the output folder (a warm, resumed run)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    header("tune over a grid on one category, from a cold start")
    candidates, fixed = load_grid(args.grid)
    print(
        f"grid: {args.grid or json.dumps({k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in DEFAULT_GRID.items()})}"
    )
    print(
        f"{len(candidates)} candidates before resolving aspect; fixed {fixed}; {args.folds} folds; "
        f"validation {args.validation}; shots {args.shots or 'all'}; jobs {args.jobs}",
        flush=True,
    )
    if args.output.exists() and not args.keep:
        shutil.rmtree(args.output)
    with Timer() as total:
        settings = tune(
            args.root,
            args.format,
            args.category,
            output=args.output,
            grid=args.grid,
            validation=args.validation,
            folds=args.folds,
            jobs=args.jobs,
            shots=args.shots,
            feature_cache=args.feature_cache,
            progress=False,
        )
    with (args.output / "candidates.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    fits = sum(float(r["seconds"]) for r in rows)
    passes = {r["features_s"] for r in rows}
    features = sum(float(s) for s in passes if s)
    print(f"\n{len(rows)} candidates scored on {args.folds} folds ({len(rows) * args.folds} fits)")
    print(f"backbone passes ({len(passes)}): {features:8.1f} s")
    print(f"fits and scoring        : {fits:8.1f} s")
    print(f"painting and the rest   : {total.seconds - features - fits:8.1f} s")
    print(
        f"whole tune (wall)       : {total.seconds:8.1f} s = {total.seconds / 60:.1f} min "
        f"({'within' if total.seconds <= BUDGET_S else 'OVER'} the 15-minute budget); CPU {total.cpu_seconds:.0f} s; "
        f"peak memory {peak_rss_mib():.0f} MiB"
    )
    print("\nslowest candidates (fits + scoring over all folds):")
    for row in sorted(rows, key=lambda r: -float(r["seconds"]))[:6]:
        print(
            f"  {row['setting']:<34} {float(row['seconds']):7.1f} s   development image AUROC {float(row['image_auroc']):.3f}"
        )
    print(f"\nchosen: {settings['setting']} ({settings['development']['image_auroc']:.3f})")
    footer()


if __name__ == "__main__":
    main()
