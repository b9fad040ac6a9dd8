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
skips the sweep and times the metrics of one real map stack per call, by the one sort of packed
keys before this version, and by ``PixelGroundTruth.metrics`` now.
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
from scipy import ndimage

from patchcore_kit.data import load_dataset
from patchcore_kit.evaluate import ground_truth_masks
from patchcore_kit.experiments import DEFAULT_SHOTS, sample_efficiency
from patchcore_kit.metrics import (
    _EIGHT_CONNECTED_PER_IMAGE,
    PixelGroundTruth,
    _area_up_to,
    _curve_from_ranking,
    aupro,
    pixel_auroc,
)

GRIDS = {"small": ((1, 5, 20), (0,)), "full": (DEFAULT_SHOTS, (0, 1, 2))}
#: What the committed runs before this version measured (docs/benchmarks/bench_sweep.txt of
#: 2026-11-29 and issue #14): the small grid in extraction passes, and the full grid.
BEFORE = {"small": 7.38, "full": 31.0}
#: Metrics per fit before this version, measured on the small grid (71.2 s over 9 fits).
BEFORE_METRICS_PER_FIT = 71.2 / 9


class OneSortMetricsBefore:
    """``PixelGroundTruth`` as committed before this version (kept to compare): every pixel one
    64-bit key (its score's order-preserving bits above its region number), all keys sorted."""

    _HIGH, _LOW = (1, 0) if np.little_endian else (0, 1)  # the halves of a key

    def __init__(self, masks: np.ndarray):
        regions, self.n_regions = ndimage.label(masks, structure=_EIGHT_CONNECTED_PER_IMAGE)
        self.pixels_per_region = np.bincount(regions.ravel(), minlength=self.n_regions + 1)
        self.n_nominal = int(self.pixels_per_region[0])
        self.n_defective = int(masks.size - self.n_nominal)
        self.region_of = regions.ravel().astype(np.uint64)

    def metrics(self, maps: np.ndarray, max_fpr: float = 0.3) -> tuple[float, float]:
        bits = (maps.ravel() + np.float32(0.0)).view(np.uint32)  # -0.0 -> 0.0
        flip = (bits.view(np.int32) >> 31).view(np.uint32)
        flip |= np.uint32(0x80000000)
        bits ^= flip
        keys = bits.astype(np.uint64)
        keys <<= np.uint64(32)
        keys |= self.region_of
        keys.sort()
        halves = keys.view(np.uint32).reshape(-1, 2)
        score_bits = np.ascontiguousarray(halves[:, self._HIGH])
        region = halves[:, self._LOW]
        defective_at = np.flatnonzero(region)
        return self._auroc(score_bits, defective_at), self._aupro(score_bits, region, defective_at, max_fpr)

    def _auroc(self, score_bits, defective_at) -> float:
        values = score_bits[defective_at]
        start = np.searchsorted(score_bits, values, side="left")
        end = np.searchsorted(score_bits, values, side="right")
        below = start - np.searchsorted(defective_at, start, side="left")
        upto = end - np.searchsorted(defective_at, end, side="left")
        count = int(below.sum(dtype=np.int64)) + int(upto.sum(dtype=np.int64))
        return float(count / (2.0 * self.n_defective * self.n_nominal))

    def _aupro(self, score_bits, region, defective_at, max_fpr: float) -> float:
        k = min(self.n_nominal, int(np.ceil(max_fpr * self.n_nominal)) + 1)
        nth = self.n_nominal - k
        kth = nth + int(np.searchsorted(defective_at - np.arange(defective_at.size), nth, side="right"))
        first = int(np.searchsorted(score_bits, score_bits[kth], side="left"))
        scores, region = score_bits[first:][::-1], region[first:][::-1]
        pro_step = np.zeros(self.n_regions + 1)
        pro_step[1:] = 1.0 / (self.pixels_per_region[1:] * self.n_regions)
        fpr, pro = _curve_from_ranking(scores, region, pro_step, self.n_nominal, max_fpr)
        return _area_up_to(fpr, pro, max_fpr) / max_fpr


def time_metrics(split, repeats: int = 3) -> None:
    """Pixel AUROC + AUPRO of one fit's map stack: per call, the one-sort version before this one,
    and ``PixelGroundTruth.metrics`` now (each the fastest of ``repeats`` calls, side by side).

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
    with Timer() as labelling_before:
        before = OneSortMetricsBefore(masks)
    with Timer() as labelling:
        truth = PixelGroundTruth(masks)

    print(f"metrics of one fit ({maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]}, {maps.size:,} pixels):")
    print(
        f"  per call (pixel_auroc + aupro)          : {per_call.seconds:6.2f} s wall, {per_call.cpu_seconds:6.2f} s CPU"
    )
    # Before and now alternate, so that both see the same load; each keeps its fastest call.
    fastest = {}
    for _ in range(repeats):
        for name, metrics in (("before", before.metrics), ("now", truth.metrics)):
            with Timer() as timer:
                got = metrics(maps)
            if name not in fastest or timer.seconds < fastest[name][1].seconds:
                fastest[name] = got, timer
    (got_before, was), (got, now) = fastest["before"], fastest["now"]
    print(f"  one sort of 64-bit keys (before)        : {was.seconds:6.2f} s wall, {was.cpu_seconds:6.2f} s CPU")
    print(
        f"  PixelGroundTruth.metrics (now)          : {now.seconds:6.2f} s wall, {now.cpu_seconds:6.2f} s CPU"
        f"  ({was.seconds / max(now.seconds, 1e-9):.1f}x less wall, {was.cpu_seconds / max(now.cpu_seconds, 1e-9):.1f}x less CPU than before)"
    )
    print(
        f"  labelling the masks, once per sweep     : {labelling.seconds:6.2f} s wall, {labelling.cpu_seconds:6.2f} s CPU"
        f" (before: {labelling_before.seconds:.2f} s wall, {labelling_before.cpu_seconds:.2f} s CPU)"
    )
    same = all(g[0] == expected[0] and abs(g[1] - expected[1]) <= 1e-12 for g in (got, got_before))
    print(
        f"  same numbers: {same} (pixel AUROC now {got[0]!r}, before {got_before[0]!r}, per call {expected[0]!r}; "
        f"AUPRO now {got[1]!r}, before {got_before[1]!r}, per call {expected[1]!r})"
    )
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


def unfused_pass(split, shots, seeds, layers) -> float:
    """Seconds of the sweep's extraction pass (the same images and stages, a fresh cache) through the
    backbone as it was when issue #14 set its target (no batch norm folding: ``fuse=False``)."""
    from patchcore_kit.backbones import load_backbone
    from patchcore_kit.features import FeatureExtractor

    train = list(dict.fromkeys(p for n in shots for seed in seeds for p in split.with_shots(n, seed).train_paths))
    with tempfile.TemporaryDirectory(prefix="bench_sweep_unfused_") as cache:
        extractor = FeatureExtractor("efficientnet_lite0", layers, 224, cache_dir=cache)
        extractor._backbone = load_backbone("efficientnet_lite0", fuse=False)  # the pass before #14 item 1
        with Timer() as timer:
            for _ in extractor.iter_layer_maps(train + split.test_paths):
                pass
    return timer.seconds


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
        f"metrics and the rest         : {rest:8.1f} s  (image/pixel AUROC, AUPRO per fit, measured behind the next "
        f"cell's fit and scoring, so mostly hidden; reading masks; before: about {BEFORE_METRICS_PER_FIT:.1f} s per fit)"
    )
    print(f"whole sweep                  : {wall.seconds:8.1f} s")
    passes = wall.seconds / one_pass["seconds"]
    # The earlier figures were measured with every method on PatchCore's stages (before issue #10).
    same_grid = args.shots is None and args.seeds is None and args.baseline_stages == "shared"
    before = BEFORE.get(args.grid) if same_grid else None
    print(
        f"sweep / one pass             : {passes:8.2f}x"
        + (f"   (issue #14's figure, measured under load 6-8 on older code: {before:.2f}x)" if before else "")
    )
    stages = sorted({stage for read in summary["stages"].values() for stage in read})  # layer1 < layer2 < ...
    unfused = unfused_pass(split, shots, seeds, stages)
    print(
        f"one pass, unfused backbone   : {unfused:8.1f} s  (the backbone before issue #14 item 1, as when the "
        f"target was set; {unfused / one_pass['seconds']:.2f}x today's pass)\n"
        f"sweep / one unfused pass     : {wall.seconds / unfused:8.2f}x   (target: 5)"
    )
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
