"""Sample-efficiency sweep: its wall time vs one feature-extraction pass over the same images.

The sweep (``patchcore_kit.experiments.sample_efficiency``) runs the backbone once over every image
it needs — the test set and the union of all training draws — into a fresh feature cache, then
fits and scores every (method, shots, seed) from that cache. So the whole sweep should cost little
more than that one pass. This script runs a small grid on MTD (601 test images) and prints both
times and their ratio; the sweep measures its own extraction pass (``summary["feature_pass"]``).

    python benchmarks/bench_sweep.py | tee docs/benchmarks/bench_sweep.txt
"""
from __future__ import annotations

import argparse
import tempfile

from _common import Timer, footer, header, set_threads
from _features import mtd_root

from patchcore_kit.data import load_dataset
from patchcore_kit.experiments import sample_efficiency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["patchcore", "padim", "spade"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    header("sample-efficiency sweep vs one extraction pass")

    split = load_dataset(mtd_root(), "mtd", seed=0)
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as cache, Timer() as wall:
        table = sample_efficiency(split, shots=args.shots, methods=args.methods, seeds=args.seeds,
                                  cache_dir=cache, progress=False)
    summary = table.attrs["summary"]
    one_pass = summary["feature_pass"]
    print(f"grid: methods {args.methods} × shots {args.shots} × seeds {args.seeds} = {len(table)} fits, "
          f"each scored on all {summary['test_images']} test images\n")
    print(f"one extraction pass : {one_pass['seconds']:8.1f} s  ({one_pass['images']} images, "
          f"{one_pass['computed']} computed, fresh cache)")
    print(f"fits (total)        : {table.fit_s.sum():8.1f} s")
    print(f"scoring (total)     : {table.infer_s.sum():8.1f} s")
    print(f"whole sweep         : {wall.seconds:8.1f} s")
    print(f"sweep / one pass    : {wall.seconds / one_pass['seconds']:8.2f}x\n")
    print(table.round(3).to_string(index=False))
    footer()


if __name__ == "__main__":
    main()
