"""Scoring memory: exact kNN over growing test sets in bounded working memory; torch vs faiss.

The bank is 58,251 real MTD patch features (152-d, efficientnet_lite0 stages 2+3): the size of a
10 % coreset of the 743-image training pool (which rows it holds does not change the cost). The
queries are the patches of 5, 20 and 80 MTD images. Each measurement runs in a fresh process;
its peak resident memory (Linux ``VmHWM``, reset just before the search) minus what it held before
the search, minus the answer itself, is the search's *working* memory. It must not grow with
the number of queries.

    python benchmarks/bench_neighbors.py | tee docs/benchmarks/bench_neighbors.txt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import footer, header, set_threads
from _common import vm_mib as _vm

BANK_ROWS = 58_251  # 10 % of 743 × 784 patches
PATCHES_PER_IMAGE = 784


#: The torch backend's k = 1 search as it was before the blocked argmin (issue #14, this version).
BEFORE = "torch-topk"


def _general_path(index, queries, n_candidates):
    """The k = 1 search through the general path: top-k candidates over 64 MiB tiles, then the
    sure/near-tie check (what ``MemoryBankIndex.search`` ran for k = 1 before this version)."""
    import torch

    from patchcore_kit.neighbors import _candidates_torch, _nearest_one, _rounding_bound

    out_d, out_i = torch.empty(len(queries), 1), torch.empty(len(queries), 1, dtype=torch.long)
    for q0 in range(0, len(queries), 4096):
        q = queries[q0 : q0 + 4096]
        candidates, approximate = _candidates_torch(q, index.bank, index._bank_sq, n_candidates)
        bound = _rounding_bound(q, index._bank_norm_max)
        out_d[q0 : q0 + 4096], out_i[q0 : q0 + 4096] = _nearest_one(q, index.bank, candidates, approximate, bound)
    return out_d, out_i


def child(backend: str, n_images: int, k: int) -> dict:
    import torch
    from _features import mtd_patch_features

    from patchcore_kit.neighbors import MemoryBankIndex, faiss_available

    if faiss_available():  # faiss runs its own OpenMP threads: give it the same number as torch
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
    features = mtd_patch_features(None, verbose=False)
    rng = np.random.default_rng(0)
    bank = torch.from_numpy(features[np.sort(rng.choice(len(features), BANK_ROWS, replace=False))])
    queries = torch.from_numpy(features[-n_images * PATCHES_PER_IMAGE :].copy())
    del features
    index = MemoryBankIndex(bank, backend="torch" if backend == BEFORE else backend)
    if backend == BEFORE:  # k = 1 as before this version: a top-k over large tiles (the general path)
        index._nearest_one_cpu = lambda queries, n_candidates, chunk: _general_path(index, queries, n_candidates)
    index.search(queries[:10], k)  # warm up (thread pools, first allocations)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux >= 4.0)
    before = _vm("VmRSS")
    start = time.perf_counter()
    distances, indices = index.search(queries, k)
    seconds = time.perf_counter() - start
    peak = _vm("VmHWM")
    answer_mib = (distances.numel() * 4 + indices.numel() * 8) / 2**20
    return {
        "backend": backend,
        "images": n_images,
        "queries": len(queries),
        "k": k,
        "seconds": seconds,
        "before_mib": before,
        "peak_mib": peak,
        "answer_mib": answer_mib,
        "queries_mib": queries.numel() * 4 / 2**20,
        "working_mib": peak - before - answer_mib,
        "checksum": float(distances.double().sum()),
        "first_indices": indices[:2000].numpy().tolist(),
    }


def measure(backend: str, n_images: int, k: int, threads: int | None, env: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--child", backend, str(n_images), str(k)]
    if threads:
        command += ["--threads", str(threads)]
    env = {**os.environ, **env} if env else None
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[5, 20, 80])
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "IMAGES", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.child:
        backend, n_images, k = args.child
        print(json.dumps(child(backend, int(n_images), int(k))))
        return

    from patchcore_kit.neighbors import QUERY_CHUNK, TILE_ELEMENTS, faiss_available

    header("exact kNN scoring: working memory vs test-set size, torch vs faiss")
    print(
        f"bank {BANK_ROWS:,} × 152 real MTD patch features; k = {args.k}; tile {TILE_ELEMENTS:,} floats "
        f"({TILE_ELEMENTS * 4 / 2**20:.0f} MiB), at most {QUERY_CHUNK} queries per exact pass\n"
    )
    backends = ["torch"] + (["faiss"] if faiss_available() else []) + ([BEFORE] if args.k == 1 else [])
    print(
        f"{'backend':8} {'images':>6} {'queries':>9} {'queries MiB':>11} {'answer MiB':>10} "
        f"{'peak RSS MiB':>12} {'working MiB':>11} {'seconds':>8} {'µs/query':>8}"
    )
    results = {}
    for n_images in args.images:
        for backend in backends:
            r = measure(backend, n_images, args.k, args.threads)
            results[backend, n_images] = r
            print(
                f"{backend:8} {n_images:6d} {r['queries']:9,d} {r['queries_mib']:11.1f} {r['answer_mib']:10.1f} "
                f"{r['peak_mib']:12.1f} {r['working_mib']:11.1f} {r['seconds']:8.2f} "
                f"{r['seconds'] / r['queries'] * 1e6:8.1f}",
                flush=True,
            )
    print()
    for backend in backends:
        working = [results[backend, n]["working_mib"] for n in args.images]
        print(
            f"{backend}: working memory {min(working):.0f}–{max(working):.0f} MiB while the queries grew "
            f"{args.images[-1] // args.images[0]}× ({args.images[0]} -> {args.images[-1]} images)"
        )
    # glibc raises its mmap threshold after large frees, so later temporaries come from a heap it
    # keeps: peak RSS then creeps up with the number of passes. A fixed threshold shows what the
    # search itself needs.
    fixed = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    ends = [
        measure(backends[0], n, args.k, args.threads, fixed)["working_mib"] for n in (args.images[0], args.images[-1])
    ]
    print(
        f"{backends[0]} again with a fixed malloc mmap threshold (MALLOC_MMAP_THRESHOLD_=131072): working memory "
        f"{ends[0]:.0f} MiB at {args.images[0]} images, {ends[1]:.0f} MiB at {args.images[-1]}: the growth above is the "
        "allocator keeping freed memory, not the search"
    )
    if BEFORE in backends:
        for n in args.images:
            a, b = results["torch", n], results[BEFORE, n]
            same = a["first_indices"] == b["first_indices"] and a["checksum"] == b["checksum"]
            print(
                f"{n} images: k = 1 now (blocked argmin) {b['seconds'] / a['seconds']:.2f}x the speed of before "
                f"(top-k over 64 MiB tiles); answers {'identical' if same else 'DIFFERENT'}"
            )
    if "faiss" in backends:
        for n in args.images:
            a, b = results["torch", n], results["faiss", n]
            same = a["first_indices"] == b["first_indices"] and a["checksum"] == b["checksum"]
            print(
                f"{n} images: torch and faiss answers {'identical' if same else 'DIFFERENT'} "
                f"(indices of the first 2000 queries, sum of all distances); faiss {a['seconds'] / b['seconds']:.1f}x the speed of torch"
            )
    footer()


if __name__ == "__main__":
    main()
