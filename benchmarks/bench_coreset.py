"""Greedy coreset: the kit's lazy implementation vs the plain loop, side by side in one run.

Cases (real PatchCore features, see ``_features.py``), 10 % coreset, 128-d projection, seed 0:

* ``50k``  — 64 MTD training images, efficientnet_lite0 stages 2+3: 50,176 × 152.
* ``157k`` — 200 MTD training images lifted to 1024 dims (fixed random linear map + small noise,
  the width of PatchCore's WideResNet50 features): 156,800 × 1024.
* ``600k`` — all 743 MTD training images: 582,512 × 152. The plain loop would take hours here,
  so it runs for ``--prefix`` steps and its full time is **extrapolated** (one plain step costs
  the same at every step: one pass over all points); the prefix choices are compared.

For full runs the two index lists must be identical (or, if float rounding ever flipped a
near-tie, the covering radius after every step must agree to 1e-4 relative); the script stops
with an error otherwise.

    python benchmarks/bench_coreset.py --threads 1 | tee docs/benchmarks/coreset.txt
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import Timer, footer, header, set_threads
from _features import lifted_features, mtd_patch_features

from patchcore_kit.coreset import coreset_size, covering_radius, greedy_coreset, greedy_coreset_plain

CASES = {
    "50k": lambda: mtd_patch_features(64),
    "157k": lambda: lifted_features(200 * 784, dim=1024),
    "600k": lambda: mtd_patch_features(None),
}


def compare_radii(features: torch.Tensor, fast: np.ndarray, plain: np.ndarray, checkpoints: int = 20) -> float:
    """Largest relative difference of the covering radii of both prefixes at a few checkpoints."""
    worst = 0.0
    for k in np.unique(np.linspace(1, len(fast), checkpoints).astype(int)):
        a, b = covering_radius(features, fast[:k], 128), covering_radius(features, plain[:k], 128)
        worst = max(worst, abs(a - b) / max(b, 1e-12))
    return worst


def run_case(name: str, ratio: float, prefix: int | None) -> None:
    with Timer() as load:
        features = torch.from_numpy(np.ascontiguousarray(CASES[name]()))
    n = coreset_size(len(features), ratio)
    print(f"## {name}: {len(features):,} patches × {features.shape[1]} dims -> {n:,} centres "
          f"(data ready in {load.seconds:.0f} s)", flush=True)

    with Timer() as fast_time:
        fast, radii = greedy_coreset(features, n, seed=0, return_radii=True)
    print(f"lazy greedy_coreset      : {fast_time.seconds:9.1f} s   final covering radius {radii[-1]:.4f}", flush=True)
    assert np.all(np.diff(radii) <= 0), "covering radius must never grow"

    steps = n if prefix is None else min(prefix, n)
    with Timer() as plain_time:
        plain = greedy_coreset_plain(features, steps, seed=0)
    if prefix is None:
        plain_seconds, label = plain_time.seconds, "measured"
    else:
        plain_seconds, label = plain_time.seconds / steps * n, f"EXTRAPOLATED from the first {steps} steps ({plain_time.seconds:.1f} s)"
    print(f"plain greedy_coreset_plain: {plain_seconds:9.1f} s   ({label})")

    same = np.array_equal(fast[:steps], plain)
    if same:
        print(f"choices: identical ({steps:,} of {n:,} compared)")
    else:
        differ = int(np.argmax(fast[:steps] != plain))
        gap = compare_radii(features, fast[:steps], plain)
        print(f"choices: first difference at step {differ}; covering radii differ by at most {gap:.2e} (relative)")
        if gap > 1e-4:
            raise SystemExit(f"{name}: lazy and plain greedy disagree")
    print(f"speed-up: {plain_seconds / fast_time.seconds:.1f}x{' (against the extrapolated plain time)' if prefix else ''}\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--prefix", type=int, default=300, help="plain-loop steps timed for the 600k case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    set_threads(args.threads)
    header("greedy coreset: lazy (kit) vs plain loop, same run")
    for name in args.cases:
        run_case(name, args.ratio, args.prefix if name == "600k" else None)
    footer()


if __name__ == "__main__":
    main()
