"""Inference seconds per image vs a FLOP-bound estimate from this machine's measured matmul speed.

PatchCore (efficientnet_lite0, stages 2+3, 224 px, defaults otherwise) is fitted on the whole MTD
training pool (743 images) with a *random* 10 % bank: 58,251 entries, the size the default
greedy coreset gives (which entries it holds does not change the cost, and a random pick keeps
this benchmark short). Then ``--images`` test images are scored from their files — backbone
included, no feature cache — and the time is split into its parts.

The estimate: count each part's floating-point operations (the backbone with
``torch.utils.flop_counter``; the nearest-neighbour search as 2·D multiply-adds per patch and bank
entry), and divide by the GFLOP/s of a large float32 matrix product measured here, in this run.
That is the time the arithmetic alone would take at full matmul speed; the ratio says how far
each part is from it.

    python benchmarks/bench_inference.py | tee docs/benchmarks/bench_inference.txt
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import Timer, footer, header, load, set_threads
from _features import cache_dir, mtd_root

from patchcore_kit.base import upsample_and_smooth
from patchcore_kit.data import load_dataset
from patchcore_kit.features import flatten_patches
from patchcore_kit.patchcore import PatchCore, reweighted_image_scores


def matmul_gflops(seconds: float = 3.0, size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    header("PatchCore inference: seconds per image vs FLOP-bound estimate")

    split = load_dataset(mtd_root(), "mtd", seed=0)
    model = PatchCore(sampler="random", calibrate=False, feature_cache=str(cache_dir() / "maps"), batch_size=8)
    with Timer() as fit:
        model.fit(split.train_paths)
    bank, dim = model.memory_bank_.shape
    print(f"fitted on {len(split.train_paths)} images ({model.n_patches_:,} patches, features from the cache) "
          f"in {fit.seconds:.0f} s; bank {bank:,} × {dim}; nearest-neighbour backend: {model._bank_index().backend}")

    model.feature_cache = None  # score from the image files: the backbone runs
    test = split.test_paths[: args.images]
    model.score(test[:1])  # load the backbone and warm up
    gflops_before = matmul_gflops()  # measured before and after the timings: the machine is shared
    with Timer() as total:
        model.score(test)
    per_image = total.seconds / len(test)

    # the parts, on the same images
    extractor, index = model._extractor(), model._bank_index()
    parts = {"backbone": 0.0, "embedding": 0.0, "nearest neighbour": 0.0, "re-weighting + maps": 0.0}
    h, w = model.feature_shape_
    for start in range(0, len(test), model.batch_size):
        batch = test[start : start + model.batch_size]
        with Timer() as t:
            maps = extractor.layer_maps(batch)
        parts["backbone"] += t.seconds
        with Timer() as t:
            flat = flatten_patches(model.embed(maps))
        parts["embedding"] += t.seconds
        with Timer() as t:
            distances, nearest = index.search(flat, k=1)
        parts["nearest neighbour"] += t.seconds
        with Timer() as t:
            patch_scores = distances[:, 0].reshape(len(batch), h * w)
            reweighted_image_scores(patch_scores, nearest[:, 0].reshape(len(batch), h * w),
                                    flat.reshape(len(batch), h * w, -1), index, model.num_neighbors)
            upsample_and_smooth(patch_scores.reshape(len(batch), h, w), model.image_size)
        parts["re-weighting + maps"] += t.seconds
    parts = {name: seconds / len(test) for name, seconds in parts.items()}

    # floating-point operations per image
    image = torch.zeros(1, 3, 224, 224)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        extractor.backbone(image, model.layers)
    flops = {"backbone": counter.get_total_flops(), "nearest neighbour": 2 * h * w * bank * dim}
    gflops_after = matmul_gflops()
    gflops = max(gflops_before, gflops_after)  # the faster one gives the lower (stricter) bound
    print(f"measured float32 matmul (2048 × 2048, {torch.get_num_threads()} threads): {gflops_before:.1f} GFLOP/s before "
          f"the timings, {gflops_after:.1f} after; the bound uses {gflops:.1f}\n")

    print(f"{'part':22} {'s / image':>10} {'GFLOP / image':>14} {'FLOP-bound s':>13} {'measured / bound':>17}")
    for name, seconds in parts.items():
        if name in flops:
            bound = flops[name] / gflops / 1e9
            print(f"{name:22} {seconds:10.3f} {flops[name] / 1e9:14.2f} {bound:13.3f} {seconds / bound:16.1f}x")
        else:
            print(f"{name:22} {seconds:10.3f} {'':>14} {'':>13} {'':>17}")
    total_flops = sum(flops.values())
    bound = total_flops / gflops / 1e9
    print(f"{'total (model.score)':22} {per_image:10.3f} {total_flops / 1e9:14.2f} {bound:13.3f} {per_image / bound:16.1f}x")
    print(f"\n{len(test)} test images, batch {model.batch_size}; parts timed separately on the same images "
          f"(their sum {sum(parts.values()):.3f} s vs {per_image:.3f} s for model.score); load average now {load()}")
    print("FLOP-bound s = the part's floating-point operations / the measured matmul speed: the time its arithmetic "
          "alone would take at full matrix-product speed (backbone FLOPs from torch.utils.flop_counter, "
          "nearest neighbour = 2 × patches × bank entries × dims)")
    footer()


if __name__ == "__main__":
    main()
