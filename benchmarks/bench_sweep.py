"""Sample-efficiency sweep: its wall time vs one feature-extraction pass over the same images.

The sweep (``patchcore_kit.experiments.sample_efficiency``) runs the backbone once over every image
it needs — the test set and the union of all training draws — into a fresh feature cache, then
fits and scores every (method, shots, seed) from that cache. So the backbone's cost is paid once,
not once per fit. This script runs a grid on MTD (601 test images) and prints the whole sweep's
wall time against that one pass (the sweep measures its own pass, ``summary["feature_pass"]``),
splits the rest into fitting, scoring from the cache, and metrics, and estimates what the backbone
alone would have cost had every fit extracted its own images (measured seconds per image × images).

``--grid small`` (default) is 3 methods × shots 1/5/20 × seed 0 = 9 fits; ``--grid full`` is the
MTD figure's grid, shots 1 2 5 10 16 20 50 × seeds 0 1 2 = 63 fits. ``--spade-matching per_layer``
runs SPADE as its reference code matches pixels (see ``baselines.spade``); ``--compare-spade``
measures both matchings side by side on one draw (5 shots, every 5th test image). ``--metrics-only``
skips the sweep and times the metrics of one real map stack both ways (per call vs one sort).
Today's figures (before this version) are printed beside the new ones.

    python benchmarks/bench_sweep.py | tee docs/benchmarks/bench_sweep.txt
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import Timer, footer, header, set_threads
from _features import mtd_root

from patchcore_kit.data import load_dataset
from patchcore_kit.evaluate import ground_truth_masks
from patchcore_kit.experiments import DEFAULT_SHOTS, sample_efficiency
from patchcore_kit.metrics import PixelGroundTruth, aupro, pixel_auroc

GRIDS = {"small": ((1, 5, 20), (0,)), "full": (DEFAULT_SHOTS, (0, 1, 2))}
#: What the committed runs before this version measured (docs/benchmarks/bench_sweep.txt of
#: 2026-11-29 and issue #14): the small grid in extraction passes, and the full grid.
BEFORE = {"small": 7.38, "full": 31.0}
#: Metrics per fit before this version, measured on the small grid (71.2 s over 9 fits).
BEFORE_METRICS_PER_FIT = 71.2 / 9


def time_metrics(split) -> None:
    """Pixel AUROC + AUPRO of one fit's map stack, per call (before) vs from one sort (now).

    The masks are MTD's real test masks; the maps are made as the kit makes them (a 56 x 56 grid
    per image, upsampled and smoothed by ``upsample_and_smooth``), from seeded random grids lifted
    inside the defects, so that the timing needs no backbone.
    """
    import torch

    from patchcore_kit.base import upsample_and_smooth

    masks = ground_truth_masks(split, 224)
    grids = torch.rand(len(masks), 56, 56, generator=torch.Generator().manual_seed(0))
    grids += torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(masks).float(), 56)
    maps = upsample_and_smooth(grids, 224)
    with Timer() as per_call:
        expected = (pixel_auroc(masks, maps), aupro(masks, maps))
    with Timer() as labelling:
        truth = PixelGroundTruth(masks)
    with Timer() as one_sort:
        got = truth.metrics(maps)
    same = got[0] == expected[0] and abs(got[1] - expected[1]) <= 1e-12
    print(f"metrics of one fit ({maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]}, {maps.size:,} pixels):")
    print(
        f"  per call (pixel_auroc + aupro, before): {per_call.seconds:6.2f} s wall, {per_call.cpu_seconds:6.2f} s CPU"
    )
    print(
        f"  one sort (PixelGroundTruth.metrics)   : {one_sort.seconds:6.2f} s wall, {one_sort.cpu_seconds:6.2f} s CPU"
        f"  ({per_call.cpu_seconds / max(one_sort.cpu_seconds, 1e-9):.1f}x less CPU)"
    )
    print(
        f"  labelling the regions, once per sweep : {labelling.seconds:6.2f} s wall, {labelling.cpu_seconds:6.2f} s CPU"
    )
    print(f"  same numbers: {same} (pixel AUROC {got[0]!r} vs {expected[0]!r}; AUPRO {got[1]!r} vs {expected[1]!r})")
    if not same:
        raise SystemExit("the one-sort metrics differ from the per-call ones")


def compare_spade_matching(split, shots: int = 5, every: int = 5) -> None:
    """SPADE's two pixel matchings on the same draw and test images: metrics and seconds per image."""
    import dataclasses

    from patchcore_kit.baselines import SPADE
    from patchcore_kit.evaluate import compute_metrics

    drawn = split.with_shots(shots, 0)
    sub = dataclasses.replace(drawn, test=drawn.test[::every])
    print(
        f"SPADE pixel matching, {shots} shots seed 0, every {every}th test image: {len(sub.test)} "
        f"({int(sub.test_labels.sum())} anomalous)"
    )
    masks = ground_truth_masks(sub, 224)
    with tempfile.TemporaryDirectory(prefix="bench_sweep_spade_") as cache:
        for matching in ("per_layer", "aligned"):
            model = SPADE(feature_cache=cache, calibrate=False, pixel_matching=matching).fit(sub.train_paths)
            model._extractor().layer_maps(sub.test_paths)  # the features are cached first: only the search is timed
            with Timer() as scoring:
                scores, maps = model.score_images(sub.test_paths)
            m = compute_metrics(sub, scores, maps, masks, per_defect=False)
            print(
                f"  {matching:10s} image AUROC {m['image_auroc']:.4f}  pixel AUROC {m['pixel_auroc']:.4f}  "
                f"AUPRO {m['aupro']:.4f}  | {scoring.seconds / len(sub.test):.3f} s/image wall, "
                f"{scoring.cpu_seconds / len(sub.test):.3f} s/image CPU",
                flush=True,
            )


def nearest_in_each_image_before(queries, train_positions, max_bytes: int = 512 * 2**20):
    """SPADE's per-image nearest distances as committed before this version (kept to compare):
    512 MiB blocks, ``min`` with indices, torch's own threads on every product."""
    import torch

    index = torch.arange(len(train_positions))
    b, p, d = queries.shape
    flat = queries.reshape(-1, d)
    query_norms = (flat * flat).sum(1, keepdim=True)
    p_train = train_positions.shape[1]
    rows = max(1, min(len(flat), max_bytes // max(4 * p_train, 1)))
    images = max(1, min(len(index), max_bytes // max(4 * p_train * rows, 1)))
    out = torch.empty(len(flat), len(index))
    for first in range(0, len(index), images):
        chosen = index[first : first + images]
        gallery = train_positions[chosen].reshape(-1, d)
        gallery_norms = (gallery * gallery).sum(1)
        for row in range(0, len(flat), rows):
            partial = torch.addmm(gallery_norms, flat[row : row + rows], gallery.T, beta=1, alpha=-2)
            out[row : row + rows, first : first + len(chosen)] = (
                partial.view(-1, len(chosen), p_train).min(dim=2).values
            )
    out = (out + query_norms).clamp_min_(0.0).sqrt_()
    return out.view(b, p, len(index)).permute(0, 2, 1)


def compare_spade_kernels(repeats: int = 3) -> None:
    """SPADE's pixel search (per test position, the nearest position of each training image) before
    and after this version, at its paper's shapes (layer1+2+3 of EfficientNet-Lite0 at 224 px: 3,136
    positions × 176 channels), in the two shapes a sweep calls it: one training image against many
    test images (the pair table) and one test image against its K = 50 training images (a fit)."""
    import time

    import torch

    from patchcore_kit.baselines.common import nearest_in_each_image

    generator = torch.Generator().manual_seed(0)
    shapes = {
        "pair table: 20 test images x 1 training image": (20, 1),
        "a fit: 1 test image x 50 training images": (1, 50),
    }
    print(
        f"SPADE pixel search, 3,136 positions x 176 channels, torch threads {torch.get_num_threads()}; median of {repeats}"
    )
    for label, (n_test, n_train) in shapes.items():
        queries = torch.randn(n_test, 3136, 176, generator=generator)
        gallery = torch.randn(n_train, 3136, 176, generator=generator)
        flops = 2 * n_test * n_train * 3136 * 3136 * 176
        results = {}
        for name, kernel in (("before", nearest_in_each_image_before), ("after", nearest_in_each_image)):
            walls, cpus = [], []
            for _ in range(repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                results[name] = kernel(queries, gallery)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            wall, cpu = float(np.median(walls)), float(np.median(cpus))
            print(
                f"  {label:48s} {name:6s} {wall:7.2f} s wall {cpu:7.2f} s CPU  "
                f"{flops / wall / 1e9:6.1f} GFLOP/s (wall)  {flops / cpu / 1e9:6.1f} GFLOP per CPU-second",
                flush=True,
            )
        print(f"  {'':48s} same distances: {bool(torch.equal(results['before'], results['after']))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="small")
    parser.add_argument("--shots", type=int, nargs="+", default=None, help="overrides the grid's shots")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="overrides the grid's seeds")
    parser.add_argument("--methods", nargs="+", default=["patchcore", "padim", "spade"])
    parser.add_argument("--spade-matching", choices=("aligned", "per_layer"), default="aligned")
    parser.add_argument(
        "--baseline-stages",
        choices=("paper", "shared"),
        default="paper",
        help="the baselines on their papers' stages (default) or on PatchCore's (the sweep before issue #10)",
    )
    parser.add_argument("--metrics-only", action="store_true")
    parser.add_argument("--compare-spade", action="store_true", help="SPADE aligned vs per_layer, then stop")
    parser.add_argument(
        "--spade-kernel", action="store_true", help="SPADE's pixel search before vs after this version, then stop"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--results", type=Path, default=None, help="also keep the sweep's results.csv and summary.json in this folder"
    )
    args = parser.parse_args()
    set_threads(args.threads)
    header("sample-efficiency sweep vs one extraction pass")

    if args.spade_kernel:
        compare_spade_kernels()
        footer()
        return
    split = load_dataset(mtd_root(), "mtd", seed=0)
    if args.compare_spade:
        compare_spade_matching(split)
        footer()
        return
    time_metrics(split)
    if args.metrics_only:
        footer()
        return
    shots = args.shots or GRIDS[args.grid][0]
    seeds = args.seeds or GRIDS[args.grid][1]
    spade = {"spade": {"pixel_matching": args.spade_matching}} if "spade" in args.methods else {}
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as cache, Timer() as wall:
        table = sample_efficiency(
            split,
            shots=shots,
            methods=args.methods,
            seeds=seeds,
            cache_dir=cache,
            progress=False,
            baseline_stages=args.baseline_stages,
            results_path=None if args.results is None else args.results / "results.csv",
            summary_path=None if args.results is None else args.results / "summary.json",
            **spade,
        )
    summary = table.attrs["summary"]
    one_pass = summary["feature_pass"]
    print(
        f"\ngrid: methods {args.methods} × shots {list(shots)} × seeds {list(seeds)} = {len(table)} fits, "
        f"each scored on all {summary['test_images']} test images; SPADE pixel matching {args.spade_matching}; "
        f"baselines on {args.baseline_stages} stages\n"
    )
    per_image = one_pass["seconds"] / one_pass["images"]
    rest = wall.seconds - one_pass["seconds"] - table.fit_s.sum() - table.infer_s.sum()
    print(
        f"one extraction pass          : {one_pass['seconds']:8.1f} s  ({one_pass['images']} images, "
        f"{one_pass['computed']} computed, fresh cache: {per_image:.3f} s per image)"
    )
    print(f"fits from the cache (total)  : {table.fit_s.sum():8.1f} s")
    print(
        f"scoring from the cache (total): {table.infer_s.sum():7.1f} s  (image scores and anomaly maps, all test images)"
    )
    print(
        f"metrics and the rest         : {rest:8.1f} s  (image/pixel AUROC, AUPRO per fit; reading masks; "
        f"before: about {BEFORE_METRICS_PER_FIT:.1f} s per fit)"
    )
    print(f"whole sweep                  : {wall.seconds:8.1f} s")
    passes = wall.seconds / one_pass["seconds"]
    # The earlier figures were measured with every method on PatchCore's stages (before issue #10).
    same_grid = args.shots is None and args.seeds is None and args.baseline_stages == "shared"
    before = BEFORE.get(args.grid) if same_grid else None
    print(f"sweep / one pass             : {passes:8.2f}x" + (f"   (before: {before:.2f}x)" if before else ""))
    naive = sum(shots + summary["test_images"] for shots in table.shots)
    print(
        f"without the shared cache every fit would extract its own train + test images: {naive:,} images, "
        f"about {naive * per_image:.0f} s of backbone alone ({naive * per_image / one_pass['seconds']:.1f} passes; "
        f"estimated from the measured seconds per image)\n"
    )
    print(table.round(3).to_string(index=False))
    print(f"\nSPADE pair table: {summary.get('spade_table')}")
    footer()


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
