"""Sample-efficiency sweep: its wall time vs one feature-extraction pass over the same images.

The sweep (``patchcore_kit.experiments.sample_efficiency``) runs the backbone once over every image
it needs — the test set and the union of all training draws — into a fresh feature cache, then
fits and scores every (method, shots, seed) from that cache. So the backbone's cost is paid once,
not once per fit. This script runs a small grid on MTD (601 test images) and prints the whole
sweep's wall time against that one pass (the sweep measures its own pass, ``summary["feature_pass"]``),
splits the rest into fitting, scoring from the cache, and metrics, and estimates what the backbone
alone would have cost had every fit extracted its own images (measured seconds per image × images).

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
    per_image = one_pass["seconds"] / one_pass["images"]
    rest = wall.seconds - one_pass["seconds"] - table.fit_s.sum() - table.infer_s.sum()
    print(f"one extraction pass          : {one_pass['seconds']:8.1f} s  ({one_pass['images']} images, "
          f"{one_pass['computed']} computed, fresh cache: {per_image:.3f} s per image)")
    print(f"fits from the cache (total)  : {table.fit_s.sum():8.1f} s")
    print(f"scoring from the cache (total): {table.infer_s.sum():7.1f} s  (image scores and anomaly maps, all test images)")
    print(f"metrics and the rest         : {rest:8.1f} s  (image/pixel AUROC, AUPRO per fit; reading masks)")
    print(f"whole sweep                  : {wall.seconds:8.1f} s")
    print(f"sweep / one pass             : {wall.seconds / one_pass['seconds']:8.2f}x")
    naive = sum(shots + summary["test_images"] for shots in table.shots)
    print(f"without the shared cache every fit would extract its own train + test images: {naive:,} images, "
          f"about {naive * per_image:.0f} s of backbone alone ({naive * per_image / one_pass['seconds']:.1f} passes; "
          f"estimated from the measured seconds per image)\n")
    print(table.round(3).to_string(index=False))
    footer()


if __name__ == "__main__":
    main()
