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

    python benchmarks/bench_coreset.py --threads 1 | tee docs/benchmarks/bench_coreset.txt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import Timer, footer, header, load, set_threads
from _features import lifted_features, mtd_patch_features

from patchcore_kit import coreset
from patchcore_kit.coreset import coreset_size, greedy_coreset, greedy_coreset_plain

CASES = {
    "50k": lambda: mtd_patch_features(64),
    "157k": lambda: lifted_features(200 * 784, dim=1024),
    "600k": lambda: mtd_patch_features(None),
}


def compare(fast: np.ndarray, fast_radii: np.ndarray, plain: np.ndarray, plain_radii: np.ndarray) -> str:
    """Same choices? Identical indices, or else the same covering radius after every step (1e-4 relative)."""
    steps = len(plain)
    gap = float(np.max(np.abs(fast_radii[:steps] - plain_radii) / np.maximum(plain_radii, 1e-12)))
    if np.array_equal(fast[:steps], plain):
        return f"identical indices at all {steps:,} steps; covering radius after every step: max relative difference {gap:.1e}"
    differ = int(np.argmax(fast[:steps] != plain))
    text = (
        f"indices first differ at step {differ:,} (a float near-tie); covering radius after every one of the "
        f"{steps:,} steps: max relative difference {gap:.1e}"
    )
    if gap > 1e-4:
        raise SystemExit(f"lazy and plain greedy disagree: {text}")
    return text


def run_case(name: str, ratio: float, prefix: int | None) -> dict:
    with Timer() as ready:
        features = torch.from_numpy(np.ascontiguousarray(CASES[name]()))
    n = coreset_size(len(features), ratio)
    print(
        f"## {name}: {len(features):,} patches × {features.shape[1]} dims -> {n:,} centres ({ratio:.0%}), "
        f"128-d projection, seed 0  (data ready in {ready.seconds:.0f} s; load average {load()})",
        flush=True,
    )

    with Timer() as fast_time:
        fast, fast_radii = greedy_coreset(features, n, seed=0, return_radii=True)
    assert np.all(np.diff(fast_radii) <= 0), "covering radius must never grow"

    steps = n if prefix is None else min(prefix, n)
    with Timer() as plain_time:
        plain, plain_radii = greedy_coreset_plain(features, steps, seed=0, return_radii=True)
    plain_wall, plain_cpu = plain_time.seconds / steps * n, plain_time.cpu_seconds / steps * n
    partial = steps < n

    print(f"{'':34} {'wall s':>9} {'CPU s':>9} {'wall ms / step':>15}")
    print(
        f"{'lazy greedy_coreset (kit)':34} {fast_time.seconds:9.1f} {fast_time.cpu_seconds:9.1f} {fast_time.seconds / n * 1e3:15.2f}"
    )
    label = f"plain loop, first {steps:,} steps" if partial else "plain loop (greedy_coreset_plain)"
    print(
        f"{label:34} {plain_time.seconds:9.1f} {plain_time.cpu_seconds:9.1f} {plain_time.seconds / steps * 1e3:15.2f}"
    )
    if partial:
        print(f"{'plain loop, all steps EXTRAPOLATED':34} {plain_wall:9.0f} {plain_cpu:9.0f} {'(same per step)':>15}")
    print(f"final covering radius {fast_radii[-1]:.4f} (started at {fast_radii[0]:.4f})")
    print(
        f"same choices: {compare(fast, fast_radii, plain, plain_radii)}"
        + (
            f" (the plain loop's {steps:,} steps are compared with the first {steps:,} of the lazy run)"
            if partial
            else ""
        )
    )
    speedup, cpu_speedup = plain_wall / fast_time.seconds, plain_cpu / fast_time.cpu_seconds
    note = (
        " against the EXTRAPOLATED full plain loop (its cost per step is the same at every step: one pass over all points)"
        if partial
        else ""
    )
    print(
        f"speed-up: {speedup:.1f}x wall time, {cpu_speedup:.1f}x CPU time{note}; load average now {load()}\n",
        flush=True,
    )
    return {
        "name": name,
        "shape": tuple(features.shape),
        "n": n,
        "fast": fast_time.seconds,
        "plain": plain_wall,
        "speedup": speedup,
        "cpu_speedup": cpu_speedup,
        "partial": partial,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--prefix", type=int, default=300, help="plain-loop steps timed for the 600k case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    set_threads(args.threads)
    header("greedy coreset: lazy (kit) vs plain loop, same run")
    print(
        f"lazy greedy_coreset: blocks of {coreset.BLOCK_SIZE} points, regrouped every {coreset.REGROUP_EVERY} steps, "
        f"its loop on {coreset.LOOP_THREADS} torch thread(s) on CPU; the plain loop uses the torch threads above."
    )
    print(
        "Both include the 128-d random projection; both return the covering radius after every step (the plain "
        "loop takes one extra max over all points per step for it).\n",
        flush=True,
    )
    results = [run_case(name, args.ratio, args.prefix if name == "600k" else None) for name in args.cases]
    print("summary (10 % coreset unless --ratio says otherwise):")
    print(
        f"{'case':6} {'patches × dims':>18} {'centres':>8} {'lazy s':>8} {'plain s':>9} {'speed-up (wall)':>16} {'(CPU)':>7}"
    )
    for r in results:
        shape = f"{r['shape'][0]:,} × {r['shape'][1]}"
        plain = f"{r['plain']:.0f}{'*' if r['partial'] else ''}"
        print(
            f"{r['name']:6} {shape:>18} {r['n']:8,d} {r['fast']:8.1f} {plain:>9} {r['speedup']:15.1f}x {r['cpu_speedup']:6.1f}x"
        )
    if any(r["partial"] for r in results):
        print(f"* extrapolated from the first {args.prefix} steps of the plain loop")
    footer()


if __name__ == "__main__":
    main()
