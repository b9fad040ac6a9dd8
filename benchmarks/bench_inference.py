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

Before / after, measured side by side in this run: the backbone as loaded (``fuse=False``, what the
kit ran before) against the fused inference copy it runs now (``patchcore_kit.fuse``), on the same
image tensors; image loading (decode + resize) is timed apart, as the fusion does not touch it; and, when
``onnxruntime`` is installed, the same fused stages run by ONNX Runtime
(``load_backbone(..., fuse=True, runtime="onnxruntime")``, its one-off export timed apart). The
exact search against faiss HNSW (``search="hnsw"``), on the same patches; and ``model.score`` with
each.

    python benchmarks/bench_inference.py | tee docs/benchmarks/bench_inference.txt
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _common import Timer, footer, header, load, set_threads
from _features import cache_dir, mtd_root
from torch.utils.flop_counter import FlopCounterMode

from patchcore_kit.backbones import load_backbone
from patchcore_kit.base import upsample_and_smooth
from patchcore_kit.data import load_dataset
from patchcore_kit.features import flatten_patches
from patchcore_kit.images import image_tensor, to_pil_list
from patchcore_kit.onnx_backbone import onnxruntime_available
from patchcore_kit.patchcore import PatchCore, reweighted_image_scores


def matmul_gflops(seconds: float = 3.0, size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


# Figures committed before this run (other loads, so compare their ratios, not their seconds):
# "nothing gets slower" is read against these.
EARLIER = {
    "bench_inference.txt before #14 (load 4, 32.1 GFLOP/s)": "backbone incl. loading, unfused 0.294 s / image, 19.4x",
    "bench_inference_reduced.txt (load 14-16, 22.3 GFLOP/s)": "forward unfused 1.169 (53.6x), fused 0.548 (25.1x); "
    "incl. loading 1.330 / 0.708",
}


def forward_batches(sizes: list[int], n_images: int, rounds: int, batch: int) -> None:
    """The fused forward (lite0, stages 2+3, 224 px) over ``n_images`` real MTD test images in the
    estimators' batches of ``batch``, each batch passed through ``size`` images at a time
    (``Backbone.cpu_forward_batch``); the sizes alternate round by round on the same tensors."""
    from patchcore_kit.fuse import CPU_FORWARD_BATCH

    header("Fused backbone forward: images per pass on the CPU")
    model = PatchCore(calibrate=False)
    split = load_dataset(mtd_root(), "mtd", seed=0)
    images = image_tensor(to_pil_list(split.test_paths[:n_images]), model.image_size)
    fused = load_backbone(model.backbone, model.weights, fuse=True, runtime="torch")
    with FlopCounterMode(display=False) as counter:
        fused(images[:1], model.layers)
    gflop = counter.get_total_flops() / 1e9
    for size in sizes:  # warm-up: oneDNN picks its kernels per shape
        fused.cpu_forward_batch = size
        fused(images[:batch], model.layers)
    peak = matmul_gflops()
    seconds = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            fused.cpu_forward_batch = size
            start = time.perf_counter()
            for first in range(0, len(images), batch):
                fused(images[first : first + batch], model.layers)
            seconds[size].append((time.perf_counter() - start) / len(images))
    bound = gflop / peak
    print(
        f"{len(images)} MTD test images at {model.image_size} px in batches of {batch}; {gflop:.2f} GFLOP per image; "
        f"matmul {peak:.0f} GFLOP/s -> bound {bound * 1e3:.2f} ms per image; {rounds} rounds, sizes alternating\n"
    )
    print("images per pass   ms / image (median)   measured / bound   every round (x bound)")
    for size, values in seconds.items():
        median = statistics.median(values)
        rounds_text = " ".join(f"{value / bound:.2f}" for value in values)
        default = "  <- the kit's CPU_FORWARD_BATCH" if size == CPU_FORWARD_BATCH else ""
        print(f"{size:15d}   {median * 1e3:19.2f}   {median / bound:15.2f}x   {rounds_text}{default}")
    footer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2, help="alternating before/after rounds (medians)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8, help="images per batch (the estimators' batch_size)")
    parser.add_argument(
        "--forward-batches",
        type=int,
        nargs="+",
        default=None,
        help="only time the fused forward with these CPU forward batches, alternating, then stop",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    if args.forward_batches:
        forward_batches(args.forward_batches, args.images, max(args.rounds, 5), args.batch)
        return
    header("PatchCore inference: seconds per image vs FLOP-bound estimate")

    split = load_dataset(mtd_root(), "mtd", seed=0)
    model = PatchCore(sampler="random", calibrate=False, feature_cache=str(cache_dir() / "maps"), batch_size=args.batch)
    with Timer() as fit:
        model.fit(split.train_paths)
    bank, dim = model.memory_bank_.shape
    print(
        f"fitted on {len(split.train_paths)} images ({model.n_patches_:,} patches, features from the cache) "
        f"in {fit.seconds:.0f} s; bank {bank:,} × {dim}; nearest-neighbour backend: {model._bank_index().backend}"
    )

    model.feature_cache = None  # score from the image files: the backbone runs
    test = split.test_paths[: args.images]
    # The same model scoring with faiss HNSW instead of the exact search (its index built once here).
    approx = copy.copy(model)
    approx.search = "hnsw"
    with Timer() as build:
        approx._bank_index()
    model.score_images(test[:1])  # load the backbone and warm up
    approx.score_images(test[:1])
    gflops_before = matmul_gflops()  # measured before and after the timings: the machine is shared

    # Whole scoring, exact and HNSW alternating (A, B, A, B): medians.
    totals = {"exact": [], "hnsw": []}
    for _ in range(args.rounds):
        for name, scorer in (("exact", model), ("hnsw", approx)):
            with Timer() as t:
                scorer.score_images(test)
            totals[name].append(t.seconds / len(test))
    per_image = {name: statistics.median(values) for name, values in totals.items()}

    # The parts, on the same images. Before/after pairs alternate batch by batch: the backbone as
    # loaded (``fuse=False``, what the kit ran before) and the fused copy the kit runs now; the exact
    # search and HNSW.
    index, approx_index = model._bank_index(), approx._bank_index()
    reference = load_backbone(model.backbone, model.weights)  # unfused
    fused = load_backbone(model.backbone, model.weights, fuse=True)  # the torch runtime, whatever the environment says
    backbones = {"forward, unfused (before)": reference, "forward, fused (after)": fused}
    onnx_first = None
    if onnxruntime_available():
        onnx_backbone = load_backbone(model.backbone, model.weights, fuse=True, runtime="onnxruntime")
        with Timer() as t:  # export + session, once per process, stage list and image size
            onnx_backbone(image_tensor(to_pil_list(test[:1]), model.image_size), model.layers)
        onnx_first = t.seconds
        backbones["forward, fused, onnxruntime"] = onnx_backbone
    differences = {name: 0.0 for name in backbones}
    parts = {
        name: []
        for name in (
            "image loading",
            *backbones,
            "embedding",
            "nearest neighbour, exact",
            "nearest neighbour, HNSW",
            "re-weighting + maps",
        )
    }
    h, w = model.feature_shape_
    for _ in range(args.rounds):
        for start in range(0, len(test), model.batch_size):
            batch = test[start : start + model.batch_size]
            n = len(batch)
            with Timer() as t:
                images = image_tensor(to_pil_list(batch), model.image_size)
            parts["image loading"].append(t.seconds / n)
            outputs = {}
            for name, backbone in backbones.items():  # alternating on the same images
                with Timer() as t:
                    outputs[name] = backbone(images, model.layers)
                parts[name].append(t.seconds / n)
            for name, got in outputs.items():  # largest difference from the unfused maps, relative to their range
                for a, b in zip(outputs["forward, unfused (before)"], got):
                    differences[name] = max(differences[name], ((b - a).abs().max() / a.abs().max()).item())
            maps = outputs["forward, fused (after)"]
            with Timer() as t:
                flat = flatten_patches(model.embed(maps))
            parts["embedding"].append(t.seconds / n)
            with Timer() as t:
                distances, nearest = index.search(flat, k=1)
            parts["nearest neighbour, exact"].append(t.seconds / n)
            with Timer() as t:
                approx_index.search(flat, k=1)
            parts["nearest neighbour, HNSW"].append(t.seconds / n)
            with Timer() as t:
                patch_scores = distances[:, 0].reshape(n, h * w)
                reweighted_image_scores(
                    patch_scores,
                    nearest[:, 0].reshape(n, h * w),
                    flat.reshape(n, h * w, -1),
                    index,
                    model.num_neighbors,
                )
                upsample_and_smooth(patch_scores.reshape(n, h, w), model.image_size)
            parts["re-weighting + maps"].append(t.seconds / n)
    parts = {name: statistics.median(values) for name, values in parts.items()}

    # floating-point operations per image (folding batch norm removes none of the counted ones:
    # the counter counts convolutions and matrix products)
    image = torch.zeros(1, 3, 224, 224)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        reference(image, model.layers)
    backbone_flops = counter.get_total_flops()
    nn_flops = 2 * h * w * bank * dim
    flops = {**{name: backbone_flops for name in backbones}, "nearest neighbour, exact": nn_flops}
    gflops_after = matmul_gflops()
    gflops = max(gflops_before, gflops_after)  # the faster one gives the lower (stricter) bound
    print(
        f"measured float32 matmul (2048 × 2048, {torch.get_num_threads()} threads): {gflops_before:.1f} GFLOP/s before "
        f"the timings, {gflops_after:.1f} after; the bound uses {gflops:.1f}\n"
    )

    def row(name: str, seconds: float, flop: float | None) -> None:
        if flop:
            bound = flop / gflops / 1e9
            print(f"{name:36} {seconds:10.3f} {flop / 1e9:14.2f} {bound:13.3f} {seconds / bound:16.1f}x")
        else:
            print(f"{name:36} {seconds:10.3f} {'':>14} {'':>13} {'':>17}")

    print(f"{'part':36} {'s / image':>10} {'GFLOP / image':>14} {'FLOP-bound s':>13} {'measured / bound':>17}")
    for name, seconds in parts.items():
        row(name, seconds, flops.get(name))
    load_s = parts["image loading"]
    row("backbone incl. loading, before", load_s + parts["forward, unfused (before)"], backbone_flops)
    row("backbone incl. loading, after", load_s + parts["forward, fused (after)"], backbone_flops)
    if onnx_first is not None:
        row("backbone incl. loading, onnxruntime", load_s + parts["forward, fused, onnxruntime"], backbone_flops)
    row("total (model.score), exact", per_image["exact"], backbone_flops + nn_flops)
    row("total (model.score), HNSW", per_image["hnsw"], None)
    print(
        f"\n{len(test)} test images, batch {model.batch_size}, {args.rounds} rounds; each part's figure is the median over "
        f"batches and rounds (s / image); model.score medians over rounds; load average now {load()}"
    )
    print(
        f"backbone forward: fused {parts['forward, unfused (before)'] / parts['forward, fused (after)']:.2f}x the speed "
        f"of unfused; nearest neighbour: HNSW {parts['nearest neighbour, exact'] / parts['nearest neighbour, HNSW']:.1f}x "
        f"the speed of exact (HNSW index built once per bank in {build.seconds:.1f} s); model.score: HNSW "
        f"{per_image['exact'] / per_image['hnsw']:.1f}x the speed of exact"
    )
    if onnx_first is not None:
        print(
            f"backbone forward: onnxruntime {parts['forward, unfused (before)'] / parts['forward, fused, onnxruntime']:.2f}x "
            f"the speed of unfused, {parts['forward, fused (after)'] / parts['forward, fused, onnxruntime']:.2f}x that of "
            f"fused torch; its one-off export + session: {onnx_first:.1f} s"
        )
    else:
        print("onnxruntime not installed: its row is left out (pip install 'patchcore-kit[onnx]')")
    print(
        "largest map difference from the unfused backbone (max |difference| / max |map|): "
        + ", ".join(
            f"{name.removeprefix('forward, ')} {value:.1e}"
            for name, value in differences.items()
            if name != "forward, unfused (before)"
        )
    )
    print("earlier committed figures: " + "; ".join(f"{where}: {what}" for where, what in EARLIER.items()))
    print(
        "FLOP-bound s = the part's floating-point operations / the measured matmul speed: the time its arithmetic "
        "alone would take at full matrix-product speed (backbone FLOPs from torch.utils.flop_counter, "
        "nearest neighbour = 2 × patches × bank entries × dims; HNSW computes far fewer distances, so it has no such bound). "
        "The earlier 'backbone' row (0.294 s, 19.4x) was image loading + unfused forward."
    )
    footer()


if __name__ == "__main__":
    main()
