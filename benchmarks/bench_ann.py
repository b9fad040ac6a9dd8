"""Exact vs approximate (faiss HNSW / IVF) nearest neighbours: seconds per image, recall@1, AUROC.

PatchCore (efficientnet_lite0, stages 2+3, 224 px, p=3, b=9) is fitted on the whole MTD training
pool (743 images, 582,512 patches) with a *random* 10 % bank, 58,251 × 152 — the size the default
greedy coreset gives and the bank of ``bench_inference.py`` (a random pick keeps this benchmark
short; the greedy one takes about 9 minutes here). The seed-0 test split (601 images) is then
scored with each search: the same embeddings (from the feature cache), the same bank, only the
index differs. Per batch of 8 images the searches run one after another (exact, HNSW, IVF, exact,
HNSW, ...), so the load of this shared machine falls on all of them alike; the medians over
batches are printed.

recall@1: the share of test patches whose returned nearest entry is the exact search's. The patch
score is always the exact distance to the entry returned, so a miss can only raise it a little.
Image and pixel AUROC: PatchCore's image score (Eq. 7) and smoothed maps, from each search.

    python benchmarks/bench_ann.py | tee docs/benchmarks/bench_ann.txt
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import Timer, footer, header, load, set_threads
from _features import cache_dir, mtd_root

from patchcore_kit import neighbors
from patchcore_kit.base import upsample_and_smooth
from patchcore_kit.data import load_dataset
from patchcore_kit.data.base import read_sample_mask
from patchcore_kit.features import flatten_patches
from patchcore_kit.images import as_hw, resize_mask
from patchcore_kit.metrics import image_auroc, pixel_auroc
from patchcore_kit.neighbors import MemoryBankIndex
from patchcore_kit.patchcore import PatchCore, reweighted_image_scores

SEARCHES = ("exact", "hnsw", "ivf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=None, help="score only N test images (a seeded random subset)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())  # faiss's OpenMP threads = torch's
    header("exact vs approximate nearest neighbours: s / image, recall@1, image and pixel AUROC (MTD)")

    split = load_dataset(mtd_root(), "mtd", seed=0)
    model = PatchCore(sampler="random", calibrate=False, feature_cache=str(cache_dir() / "maps"), batch_size=8)
    with Timer() as fit:
        model.fit(split.train_paths)
    bank = model.memory_bank_
    chosen = np.arange(len(split.test_paths))
    if args.images:  # a seeded random subset, so that both classes are in it
        chosen = np.sort(np.random.default_rng(0).choice(len(chosen), min(args.images, len(chosen)), replace=False))
    test = [split.test_paths[i] for i in chosen]
    labels = split.test_labels[chosen]
    print(
        f"fitted on {len(split.train_paths)} images ({model.n_patches_:,} patches) in {fit.seconds:.0f} s; "
        f"bank {bank.shape[0]:,} × {bank.shape[1]} (random 10 %); {len(test)} test images "
        f"({int(labels.sum())} defective), batch {model.batch_size}, b = {model.num_neighbors}"
    )
    print(
        f"HNSW: M = {neighbors.HNSW_M}, efConstruction = {neighbors.HNSW_EF_CONSTRUCTION}, efSearch = "
        f"{neighbors.HNSW_EF_SEARCH}; IVF-flat: {neighbors.IVF_LISTS_PER_SQRT} × sqrt(bank) cells, nprobe = "
        f"{neighbors.IVF_NPROBE}; every search re-ranks {neighbors.SPARE} spare candidates by exact distance\n"
    )

    indexes, build = {}, {}
    for search in SEARCHES:
        with Timer() as t:
            indexes[search] = MemoryBankIndex(bank, search=search, seed=model.seed)
        build[search] = t.seconds

    seconds = {s: [] for s in SEARCHES}  # search s / image, per batch
    scoring = {s: [] for s in SEARCHES}  # search + re-weighting + maps, s / image, per batch
    nearest = {s: [] for s in SEARCHES}
    patch_d = {s: [] for s in SEARCHES}
    scores = {s: [] for s in SEARCHES}
    maps = {s: [] for s in SEARCHES}
    h, w = model.feature_shape_
    extractor = model._extractor()
    start = time.perf_counter()
    for batch_maps in extractor.iter_layer_maps(test):
        flat = flatten_patches(model.embed(batch_maps))
        n = len(batch_maps[0])
        for search in SEARCHES:
            index = indexes[search]
            with Timer() as t_search:
                distances, found = index.search(flat, k=1)
            with Timer() as t_rest:
                grid = distances[:, 0].reshape(n, h * w)
                image = reweighted_image_scores(
                    grid, found[:, 0].reshape(n, h * w), flat.reshape(n, h * w, -1), index, model.num_neighbors
                )
                smoothed = upsample_and_smooth(grid.reshape(n, h, w), model.image_size)
            seconds[search].append(t_search.seconds / n)
            scoring[search].append((t_search.seconds + t_rest.seconds) / n)
            nearest[search].append(found[:, 0])
            patch_d[search].append(distances[:, 0])
            scores[search].append(image.numpy())
            maps[search].append(smoothed)
    print(
        f"scored {len(test)} images with all {len(SEARCHES)} searches in {time.perf_counter() - start:.0f} s; "
        f"load average now {load()}\n"
    )

    masks = np.stack([resize_mask(read_sample_mask(split.test[i]), as_hw(model.image_size)) for i in chosen])
    exact_nearest = torch.cat(nearest["exact"])
    exact_d = torch.cat(patch_d["exact"])
    exact_search = statistics.median(seconds["exact"])
    rows = {}
    for search in SEARCHES:
        found = torch.cat(nearest[search])
        d = torch.cat(patch_d[search])
        rows[search] = {
            "build": build[search],
            "search": statistics.median(seconds[search]),
            "scoring": statistics.median(scoring[search]),
            "recall": float((found == exact_nearest).float().mean()),
            "excess": float(((d - exact_d) / exact_d.clamp_min(1e-12)).mean()),
            "image": image_auroc(labels, np.concatenate(scores[search])),
            "pixel": pixel_auroc(masks, np.concatenate(maps[search])),
        }
    print(
        f"{'search':7} {'build s':>8} {'search s/img':>12} {'speed-up':>9} {'scoring s/img':>13} {'recall@1':>9} "
        f"{'score +%':>9} {'image AUROC':>11} {'Δ image':>8} {'pixel AUROC':>11} {'Δ pixel':>8}"
    )
    exact = rows["exact"]
    for search, r in rows.items():
        print(
            f"{search:7} {r['build']:8.1f} {r['search']:12.4f} {exact_search / r['search']:8.1f}x {r['scoring']:13.4f} "
            f"{r['recall']:9.4f} {100 * r['excess']:9.3f} {r['image']:11.4f} {r['image'] - exact['image']:+8.4f} "
            f"{r['pixel']:11.4f} {r['pixel'] - exact['pixel']:+8.4f}"
        )
    print(
        f"\nsearch s/img: median over {len(seconds['exact'])} batches of the k = 1 search (the searches alternate batch "
        "by batch); scoring s/img adds the re-weighting's k = b search and the maps; speed-up = exact search s / this "
        "search s; score +%: mean rise of the patch score (exact distance to the entry returned) over the exact "
        f"search's; build: once per fitted bank (the index is never saved). Exact here = faiss IndexFlatL2 candidates, "
        f"what the kit uses by default when faiss is installed."
    )
    footer()


if __name__ == "__main__":
    main()
