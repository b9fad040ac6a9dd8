"""The sweep on Dask: a 2-worker LocalCluster against the serial run, same grid, same rows.

On MTD by default (``--dataset bottle``: MVTec AD bottle, a seventh of the test images, for a
loaded machine). The serial sweep runs first into a fresh feature cache (its one extraction pass included); the Dask
sweep then reads that cache (``--scheduler processes``, 2 single-threaded worker processes; its
extraction pass finds every image cached). So the comparison is of the cells — fits, scoring and
metrics — and the wall times are printed with and without each run's extraction pass. The rows
are asserted equal, every metric digit; ``fit_s`` and ``infer_s`` are timings and differ.

    nice -n 19 python benchmarks/bench_dask_sweep.py | tee docs/benchmarks/bench_dask_sweep.txt
"""

from __future__ import annotations

import argparse
import tempfile

import pandas as pd
from _common import Timer, footer, header, set_threads
from _features import mtd_root

from patchcore_kit.data import load_dataset
from patchcore_kit.experiments import sample_efficiency

METRICS = ["image_auroc", "pixel_auroc", "aupro"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["patchcore", "padim", "spade"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the serial run")
    parser.add_argument(
        "--dataset",
        choices=("mtd", "bottle"),
        default="mtd",
        help="bottle: MVTec AD bottle (83 test images), for a loaded machine",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    header(f"sample-efficiency sweep: serial vs Dask LocalCluster ({args.workers} workers × 1 thread)")

    if args.dataset == "mtd":
        split = load_dataset(mtd_root(), "mtd", seed=0)
    else:
        split = load_dataset(mtd_root().parent / "mvtec", "mvtec", category="bottle")
    grid = dict(shots=args.shots, methods=args.methods, seeds=args.seeds, progress=False)
    with tempfile.TemporaryDirectory(prefix="bench_dask_sweep_") as cache:
        with Timer() as serial_wall:
            serial = sample_efficiency(split, cache_dir=cache, **grid)
        with Timer() as dask_wall:
            dask = sample_efficiency(split, cache_dir=cache, scheduler="processes", workers=args.workers, **grid)
    keys = ["method", "shots", "seed"]
    same = serial[keys + ["full"] + METRICS].sort_values(keys, ignore_index=True)
    other = dask[keys + ["full"] + METRICS].sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(same, other, check_exact=True)  # every digit of every metric

    s_pass, d_pass = (t.attrs["summary"]["feature_pass"] for t in (serial, dask))
    print(
        f"dataset {split.name}; grid: methods {args.methods} × shots {args.shots} × seeds {args.seeds} = {len(serial)} cells, "
        f"each scored on all {len(split.test)} test images"
    )
    print(f"serial (torch threads {serial.attrs['summary']['machine']['torch_threads']}):")
    print(
        f"  extraction pass            : {s_pass['seconds']:8.1f} s  ({s_pass['computed']} of {s_pass['images']} "
        f"images computed)"
    )
    print(f"  cells                      : {serial_wall.seconds - s_pass['seconds']:8.1f} s")
    print(f"  whole sweep                : {serial_wall.seconds:8.1f} s")
    print(f"Dask, {dask.attrs['summary']['scheduler']['workers']} workers (cache already filled):")
    print(f"  extraction pass (all cached): {d_pass['seconds']:7.1f} s  ({d_pass['computed']} computed)")
    print(f"  cells, cluster start incl. : {dask_wall.seconds - d_pass['seconds']:8.1f} s")
    print(f"  whole sweep                : {dask_wall.seconds:8.1f} s")
    cells = (serial_wall.seconds - s_pass["seconds"]) / (dask_wall.seconds - d_pass["seconds"])
    print(f"cells, serial / Dask         : {cells:8.2f}x  (ideal {args.workers}x on {args.workers} idle cores)")
    print(f"SPADE tables on Dask         : {dask.attrs['summary']['spade_table']}")
    print(f"rows equal (all metric digits): yes, {len(serial)} of {len(serial)}\n")
    print(
        pd.concat(
            [
                serial.set_index(keys)[METRICS + ["fit_s", "infer_s"]],
                dask.set_index(keys)[["fit_s", "infer_s"]].add_prefix("dask_"),
            ],
            axis=1,
        )
        .round(3)
        .to_string()
    )
    footer()


if __name__ == "__main__":
    main()
