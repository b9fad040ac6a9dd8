"""A tune over the default grid on one MVTec-sized category: how long it takes on this machine.

Issue #12 asks that ``patchcore-kit tune`` over its default grid finish in under 15 minutes on the
2-core machine for one MVTec-sized category (bottle: 209 training images; the shared copy is
downscaled to 512 × 512 px, MVTec's own is 900 × 900). This runs
it from a cold start (fresh output folder and feature cache, so the backbone passes and, for
synthetic validation, the painting are counted) and prints the wall time, split into painting the
synthetic anomalies, the backbone passes (one per stage set and size), and the fits (candidate ×
fold), with the slowest candidates. Fits run as ``tune`` runs them by default (``--jobs`` unset:
as many at once as the CPUs and the memory allow, :mod:`patchcore_kit.tuning.jobs`).

    python benchmarks/bench_tune.py --root ../shared/data/mvtec --category bottle | tee docs/benchmarks/bench_tune.txt
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import time
from pathlib import Path

from _common import Timer, footer, header, peak_rss_mib, set_threads  # noqa: I001  (puts the checkout on sys.path)

from patchcore_kit.neighbors import faster_exact_backend
from patchcore_kit.tuning import DEFAULT_GRID, run, tune
from patchcore_kit.tuning.grid import load_grid
from patchcore_kit.tuning.jobs import usable_cpus

BUDGET_S = 15 * 60


def _time_phase(module, name: str, phases: dict, phase: str) -> None:
    """Wrap ``module.name`` so that its wall time is added to ``phases[phase]``."""
    original = getattr(module, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[phase] += time.perf_counter() - start

    setattr(module, name, timed)


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
    parser.add_argument("--jobs", type=int, default=None, help="default: tune's own (CPUs and memory decide)")
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
        f"validation {args.validation}; shots {args.shots or 'all'}; "
        f"jobs {args.jobs or f'auto ({usable_cpus()} usable CPUs)'}; exact kNN backend {faster_exact_backend()}",
        flush=True,
    )
    if args.output.exists() and not args.keep:
        shutil.rmtree(args.output)
    phases = {"painting": 0.0, "fits": 0.0}
    _time_phase(run, "synthetic_anomalies", phases, "painting")
    _time_phase(run, "run_tasks", phases, "fits")
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
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with (args.output / "candidates.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    fits = sum(float(r["seconds"]) for r in rows)
    passes = {r["features_s"] for r in rows}
    features = sum(float(s) for s in passes if s)
    rest = total.seconds - phases["painting"] - features - phases["fits"]
    cpu = total.cpu_seconds + children.ru_utime + children.ru_stime
    print(f"\n{len(rows)} candidates scored on {args.folds} folds ({len(rows) * args.folds} fits)")
    print(f"painting the anomalies  : {phases['painting']:8.1f} s")
    print(f"backbone passes ({len(passes)})    : {features:8.1f} s")
    print(f"fits and scoring (wall) : {phases['fits']:8.1f} s   (the fits' own times add up to {fits:.1f} s)")
    print(f"start-up and the rest   : {rest:8.1f} s")
    print(
        f"whole tune (wall)       : {total.seconds:8.1f} s = {total.seconds / 60:.1f} min "
        f"({'within' if total.seconds <= BUDGET_S else 'OVER'} the 15-minute budget); CPU {cpu:.0f} s "
        f"(this process and its workers); peak memory {peak_rss_mib():.0f} MiB here, "
        f"{children.ru_maxrss / 1024:.0f} MiB in the largest worker"
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
