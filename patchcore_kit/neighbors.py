"""Exact k-nearest-neighbour search against the memory bank, in bounded memory.

A test image at 224 px has ~800 patches and a memory bank holds tens of thousands of entries, so
the full distance matrix of a whole test set would not fit. The search runs in two steps:

1. **Candidates.** Squared distances ``|q|² - 2 q·b + |b|²`` (one matrix product) are computed
   tile by tile — at most :data:`TILE_ELEMENTS` floats at a time, whatever the number of queries
   or bank entries — keeping only each query's running best few. With faiss installed
   (``pip install faiss-cpu``) its exact ``IndexFlatL2`` does this step instead.
2. **Exact distances.** The matrix-product form loses precision when a query is very close to a
   bank entry, so each candidate's distance is recomputed directly as ``|q - b|``; the answer is
   the ``k`` nearest by that distance, ties going to the lower bank index. A few spare candidates
   (:data:`SPARE`) make the two backends agree even where rounding reorders near-ties.

So both backends return the same indices and the same distances, to the last bit whenever they
find the same candidates. Results are CPU tensors, nearest first. Which one is faster depends on the
machine's matrix-product library: on an AMD EPYC faiss was 1.1-1.3x torch's speed, on an Intel Xeon
with torch's MKL (AVX-512) torch was 2-4x faiss's (docs/benchmarks/bench_neighbors.txt). So
``backend="auto"`` on a CPU times both once per process on a small problem
(:func:`faster_exact_backend`, a few tenths of a second) and uses the faster; the answers are the
same either way.

**Approximate search** (``search="hnsw"`` or ``"ivf"``, faiss only) replaces step 1 by a faiss
graph (HNSW) or inverted-file (IVF-flat) index: it visits a small part of the bank, so it is many
times faster on a large bank, but it may miss a query's true nearest entry. Step 2 still runs: a
returned distance is always the exact ``|q - b|`` to the entry returned, never the index's
approximation; only *which* entry comes back can differ (recall@1 < 1), and then the distance is
a little larger than the exact search's. ``search="auto"`` is exact for banks below
:data:`AUTO_MIN_BANK` entries and HNSW from there up. The default is ``"exact"``: the kit never
switches on its own. docs/benchmarks.md measures speed, recall and the AUROC change on MTD.

>>> bank = torch.randn(500, 16)
>>> distances, indices = nearest_neighbors(bank[:3] + 0.01, bank, k=1)
>>> indices.ravel().tolist()
[0, 1, 2]
"""

from __future__ import annotations

import numpy as np
import torch

from .threads import map_blocks

try:  # optional accelerator
    import faiss  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

#: Largest distance tile (queries × bank entries) held at once: 2**24 floats = 64 MiB.
TILE_ELEMENTS = 2**24
#: Bank entries per tile (the rest of a tile's elements are queries).
BANK_CHUNK = 16384
#: Distances per block of the k = 1 search (4 MiB of float32: reduced while in the cache).
BLOCK_ELEMENTS = 2**20
#: Extra candidates per query, re-ranked by exact distance (guards against rounding near ties).
SPARE = 8
#: At most this many queries per pass of the exact step and of faiss.
QUERY_CHUNK = 4096
#: What finds the candidates: the exact search, or an approximate faiss index (see the module doc).
SEARCHES = ("exact", "hnsw", "ivf", "auto")
#: ``search="auto"`` uses HNSW from this many bank entries up. Below it the exact search costs at
#: most about 0.25 s per 784-patch image on 2 cores (0.75 s at 58k entries, docs/benchmarks.md).
AUTO_MIN_BANK = 20_000
#: HNSW graph: links per entry, breadth while building, breadth while searching (recall vs speed).
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 64, 64
#: IVF-flat: ``IVF_LISTS_PER_SQRT × sqrt(bank)`` k-means cells, of which ``IVF_NPROBE`` are searched.
IVF_LISTS_PER_SQRT, IVF_NPROBE = 4, 16


def faiss_available() -> bool:
    return faiss is not None


#: The probe :func:`faster_exact_backend` times: (queries, bank entries, dims).
PROBE_SHAPE = (1024, 2048, 256)
_faster: str | None = None  # measured once per process


def faster_exact_backend() -> str:
    """``"torch"`` or ``"faiss"``: whichever finds exact-search candidates faster on this CPU, measured once.

    Both backends give the same answers (the module docstring), so this only decides speed. The
    step that differs (the candidates: one matrix product and a top-k) is timed twice for each
    on seeded random data of :data:`PROBE_SHAPE` and the best time kept; faiss is chosen only when it
    is clearly faster (by a fifth), so that a noisy probe on a busy machine does not flip the choice.
    Without faiss the answer is ``"torch"`` (no probe).
    """
    global _faster
    if faiss is None:
        return "torch"
    if _faster is None:
        import time

        n_queries, n_bank, dim = PROBE_SHAPE
        generator = torch.Generator().manual_seed(0)
        bank, queries = torch.randn(n_bank, dim, generator=generator), torch.randn(n_queries, dim, generator=generator)
        bank_sq, n_candidates = (bank * bank).sum(1), 1 + SPARE

        def by_faiss():
            index = faiss.IndexFlatL2(dim)
            index.add(bank.numpy())
            index.search(queries.numpy(), n_candidates)

        best = {}
        for backend, run in (
            ("torch", lambda: _candidates_torch(queries, bank, bank_sq, n_candidates)),
            ("faiss", by_faiss),
        ):
            times = []
            for _ in range(2):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            best[backend] = min(times)
        _faster = "faiss" if best["faiss"] < 0.8 * best["torch"] else "torch"
    return _faster


def _check_bank(bank: torch.Tensor) -> None:
    if bank.ndim != 2 or len(bank) == 0:
        raise ValueError(f"the memory bank must be a non-empty (entries, dims) matrix, got shape {tuple(bank.shape)}")


def _check_queries(queries: torch.Tensor, bank: torch.Tensor) -> None:
    if queries.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries of shape {tuple(queries.shape)} do not match the bank's {bank.shape[1]} dims")


def _candidates_torch(
    queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(Q, k)`` of each query's ``k`` nearest entries by the matrix-product distance, and
    those distances less ``|q|²`` (the same for a whole row), nearest first."""
    bank_chunk = min(len(bank), BANK_CHUNK)
    query_chunk = max(1, TILE_ELEMENTS // bank_chunk)
    result = torch.empty(len(queries), k, dtype=torch.long, device=bank.device)
    result_d = torch.empty(len(queries), k, device=bank.device)
    for q0 in range(0, len(queries), query_chunk):
        q = queries[q0 : q0 + query_chunk].to(bank.device)
        best_d = torch.full((len(q), k), float("inf"), device=bank.device)
        best_i = torch.zeros((len(q), k), dtype=torch.long, device=bank.device)
        for b0 in range(0, len(bank), bank_chunk):
            # |q - b|^2 without the |q|^2 term, which is the same for every entry of a row
            d = torch.addmm(bank_sq[b0 : b0 + bank_chunk], q, bank[b0 : b0 + bank_chunk].T, alpha=-2)
            top_d, top_i = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
            merged_d = torch.cat([best_d, top_d], 1)
            merged_i = torch.cat([best_i, top_i + b0], 1)
            keep = torch.topk(merged_d, k, dim=1, largest=False).indices
            best_d, best_i = merged_d.gather(1, keep), merged_i.gather(1, keep)
        result[q0 : q0 + len(q)] = best_i
        result_d[q0 : q0 + len(q)] = best_d
    return result, result_d


def _two_nearest_torch(
    queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For k = 1 on a CPU bank: each query's nearest entry by the matrix-product distance, that
    distance and the second smallest (both less ``|q|²``).

    The queries go in blocks of about :data:`BLOCK_ELEMENTS` distances, small enough to be reduced
    while they are still in the cache, by numpy's vectorised ``argmin`` and ``min`` (no top-k: the
    two smallest values are all :func:`_nearest_one` needs to know whether the first candidate is
    surely the nearest). The blocks are independent and run single-threaded in a pool of threads
    (``threads.map_blocks``): 2.2x the speed of one large tile on torch's own threads here
    (benchmarks/bench_neighbors.py).
    """
    bank_chunk = min(len(bank), BANK_CHUNK)
    rows = max(1, min(QUERY_CHUNK, BLOCK_ELEMENTS // bank_chunk))
    nearest = np.zeros(len(queries), dtype=np.int64)
    best = np.full(len(queries), np.inf, dtype=np.float32)
    second = np.full(len(queries), np.inf, dtype=np.float32)

    def block(q0: int) -> None:
        q, at = queries[q0 : q0 + rows], slice(q0, q0 + rows)
        within = np.arange(len(q))
        for b0 in range(0, len(bank), bank_chunk):
            tile = torch.addmm(bank_sq[b0 : b0 + bank_chunk], q, bank[b0 : b0 + bank_chunk].T, alpha=-2)
            d = tile.numpy()  # the same memory
            first_i = d.argmin(axis=1)
            first = d[within, first_i]
            d[within, first_i] = np.inf  # the tile is ours: its runner-up is now its smallest
            # torch's amin: the same value as numpy's min, 1.4-3x faster on rows of a few hundred entries
            runner_up = tile.amin(dim=1).numpy()
            # the second smallest of {best, second} and {first, runner_up}, each pair ordered
            second[at] = np.minimum(np.maximum(best[at], first), np.minimum(second[at], runner_up))
            better = first < best[at]  # equal: kept, and second == best marks the row unsure anyway
            nearest[at] = np.where(better, first_i + b0, nearest[at])
            best[at] = np.where(better, first, best[at])

    map_blocks(block, range(0, len(queries), rows))
    return nearest, best, second


def _exact_k_nearest(queries: torch.Tensor, bank: torch.Tensor, candidates: torch.Tensor, k: int):
    """Exact ``|q - b|`` for each candidate; the ``k`` nearest, lower bank index first on ties."""
    by_index = torch.sort(candidates, dim=1).values
    distances = torch.linalg.norm(queries.to(bank.device)[:, None, :] - bank[by_index], dim=2)
    order = torch.sort(distances, dim=1, stable=True).indices[:, :k]
    return distances.gather(1, order).cpu(), by_index.gather(1, order).cpu()


def _rounding_bound(queries: torch.Tensor, bank_norm_max: float) -> torch.Tensor:
    """``(Q,)``: a bound on the error of a float32 matrix-product squared distance ``|q|² - 2 q·b + |b|²``.

    Each of the three terms is a sum of D products, rounded at every step: at most about
    ``D · 2⁻²⁴`` of ``(|q| + |b|)²`` in all. Four times that, for the rounding of the norms too.
    """
    dim = queries.shape[1]
    return 4 * dim * 2.0**-24 * (torch.linalg.norm(queries, dim=1) + bank_norm_max) ** 2


def _nearest_one(
    queries: torch.Tensor, bank: torch.Tensor, candidates: torch.Tensor, approximate: torch.Tensor, bound: torch.Tensor
):
    """:func:`_exact_k_nearest` with k = 1, checking only the candidates that could be the nearest.

    ``approximate`` are the candidates' matrix-product squared distances (nearest first; a constant
    per row does not matter) and ``bound`` their rounding bound per row. Where the first candidate
    leads the second by more than twice the bound, it is the exact nearest among the candidates,
    and only its distance is computed; the other rows (near-ties) take the full comparison. The
    answer is the same as :func:`_exact_k_nearest`'s, with a ninth of its work on most rows.
    """
    if candidates.shape[1] == 1:
        sure = torch.ones(len(candidates), dtype=torch.bool)
    else:
        sure = (approximate[:, 1] - approximate[:, 0]).cpu() > 2 * bound.cpu()
    distances = torch.empty(len(candidates), 1)
    indices = torch.empty(len(candidates), 1, dtype=torch.long)
    if sure.any():
        first = candidates[sure.to(candidates.device), :1]
        distances[sure], indices[sure] = _exact_k_nearest(queries[sure], bank, first, 1)
    if not sure.all():
        unsure = ~sure
        distances[unsure], indices[unsure] = _exact_k_nearest(
            queries[unsure], bank, candidates[unsure.to(candidates.device)], 1
        )
    return distances, indices


def resolve_search(search: str, n_bank: int) -> str:
    """``"exact"``, ``"hnsw"`` or ``"ivf"``: what ``search`` means for a bank of ``n_bank`` entries."""
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; choose from {', '.join(map(repr, SEARCHES))}")
    if search == "auto":
        return "hnsw" if n_bank >= AUTO_MIN_BANK and faiss is not None else "exact"
    return search


def _approximate_index(bank: np.ndarray, search: str, seed: int):
    """A faiss HNSW-flat or IVF-flat index over ``bank`` (float32, C order)."""
    dim = bank.shape[1]
    if search == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        index.add(bank)
        return index
    n_lists = max(
        1, min(len(bank) // 39, round(IVF_LISTS_PER_SQRT * len(bank) ** 0.5))
    )  # faiss wants >= 39 points a cell
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, n_lists)
    index.cp.seed = seed  # k-means initialisation: seeded, so the cells are the same every run
    index.train(bank)
    index.add(bank)
    index.nprobe = min(IVF_NPROBE, n_lists)
    return index


class MemoryBankIndex:
    """A search structure over a fixed bank, built once and queried many times.

    ``backend``: ``"torch"`` (tiled matrix products, on the bank's device), ``"faiss"``, or
    ``"auto"`` (for a CPU bank, the faster of the two on this machine, :func:`faster_exact_backend`;
    torch on another device); for the exact search.
    ``search``: ``"exact"`` (default), ``"hnsw"`` or ``"ivf"`` (approximate candidates from faiss,
    exact distances to them), or ``"auto"`` (HNSW from :data:`AUTO_MIN_BANK` entries up).
    ``seed`` seeds the IVF k-means. The index is rebuilt from the bank, never saved.

    >>> index = MemoryBankIndex(torch.eye(3), backend="torch")
    >>> index.search(torch.tensor([[0.9, 0.0, 0.0]]), k=2)[1].tolist()
    [[0, 1]]
    """

    def __init__(self, bank: torch.Tensor, backend: str = "auto", search: str = "exact", seed: int = 0):
        if backend not in ("auto", "torch", "faiss"):
            raise ValueError(f"unknown backend {backend!r}; choose 'auto', 'torch' or 'faiss'")
        self.bank = torch.as_tensor(bank).float()
        _check_bank(self.bank)
        self.search_kind = resolve_search(search, len(self.bank))
        if self.search_kind != "exact" and faiss is None:
            raise ImportError(f"search={search!r} needs faiss: pip install faiss-cpu (or use search='exact')")
        use_faiss = (
            backend == "faiss"
            or self.search_kind != "exact"
            or (backend == "auto" and self.bank.device.type == "cpu" and faster_exact_backend() == "faiss")
        )
        if use_faiss and faiss is None:
            raise ImportError("faiss is not installed: pip install faiss-cpu (or use backend='torch')")
        self.backend = "faiss" if use_faiss else "torch"
        self._bank_norm_max = float(torch.linalg.norm(self.bank, dim=1).max())
        self._faiss = None
        if self.search_kind != "exact":
            self._faiss = _approximate_index(np.ascontiguousarray(self.bank.cpu().numpy()), self.search_kind, seed)
        elif use_faiss:
            self._faiss = faiss.IndexFlatL2(self.bank.shape[1])
            self._faiss.add(np.ascontiguousarray(self.bank.cpu().numpy()))
        else:
            self._bank_sq = (self.bank * self.bank).sum(1)

    def _faiss_candidates(self, queries: torch.Tensor, n_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = np.ascontiguousarray(queries.cpu().numpy())
        if self.search_kind == "hnsw":  # the search breadth must cover the candidates asked for
            self._faiss.hnsw.efSearch = max(HNSW_EF_SEARCH, n_candidates)
        approximate, found = self._faiss.search(q, n_candidates)
        missing = (found < 0).any(1)
        if missing.any():  # an approximate index can come back short (IVF cells with few entries)
            exact_d, exact = faiss.knn(q[missing], np.ascontiguousarray(self.bank.cpu().numpy()), n_candidates)
            found[missing], approximate[missing] = exact, exact_d
        return torch.from_numpy(found.astype(np.int64)), torch.from_numpy(approximate)

    def _nearest_one_cpu(
        self, queries: torch.Tensor, n_candidates: int, chunk: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k = 1 with the torch backend on a CPU bank: the same answer as the general path (the
        first candidate where it is sure, every candidate of the near-ties; :func:`_nearest_one`),
        with the candidates of the sure rows found by :func:`_two_nearest_torch`."""
        nearest, best, second = _two_nearest_torch(queries, self.bank, self._bank_sq)
        distances = torch.empty(len(queries), 1)
        indices = torch.from_numpy(nearest)[:, None]
        for q0 in range(0, len(queries), chunk):  # in chunks: the norms' temporaries stay bounded
            q, at = queries[q0 : q0 + chunk], slice(q0, q0 + chunk)
            bound = _rounding_bound(q, self._bank_norm_max).numpy()
            sure = torch.from_numpy((second[at].astype(np.float64) - best[at]) > 2 * bound)
            # Every row's distance to its first candidate (the answer where sure): no masked copies of
            # the queries; the few unsure rows are overwritten below.
            distances[at, 0] = torch.linalg.norm(q - self.bank[indices[at, 0]], dim=1)
            if not sure.all():  # near-ties: every candidate compared
                unsure = ~sure
                candidates, _ = _candidates_torch(q[unsure], self.bank, self._bank_sq, n_candidates)
                distances[at][unsure], indices[at][unsure] = _exact_k_nearest(q[unsure], self.bank, candidates, 1)
        return distances, indices

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances, indices)``, each ``(Q, k)``, nearest first (CPU tensors)."""
        # Row-major, whatever the caller's layout: a distance's last bits then depend on its row only.
        queries = torch.as_tensor(queries).float().contiguous()
        _check_queries(queries, self.bank)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        k = min(k, len(self.bank))
        n_candidates = min(k + SPARE, len(self.bank))
        # the exact step holds (queries × candidates × dims) floats: keep that within one tile too
        chunk = max(1, min(QUERY_CHUNK, TILE_ELEMENTS // (n_candidates * self.bank.shape[1])))
        if k == 1 and self._faiss is None and self.bank.device.type == "cpu":
            return self._nearest_one_cpu(queries, n_candidates, chunk)
        out_d = torch.empty(len(queries), k)
        out_i = torch.empty(len(queries), k, dtype=torch.long)
        for q0 in range(0, len(queries), chunk):
            q = queries[q0 : q0 + chunk]
            if self._faiss is not None:
                candidates, approximate = self._faiss_candidates(q, n_candidates)
            else:
                candidates, approximate = _candidates_torch(q, self.bank, self._bank_sq, n_candidates)
            candidates = candidates.to(self.bank.device)
            if k == 1:  # the patch scores: most rows need only their first candidate's distance
                found = _nearest_one(q, self.bank, candidates, approximate, _rounding_bound(q, self._bank_norm_max))
            else:
                found = _exact_k_nearest(q, self.bank, candidates, k)
            out_d[q0 : q0 + len(q)], out_i[q0 : q0 + len(q)] = found
        return out_d, out_i


def nearest_neighbors(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, backend: str = "auto", search: str = "exact"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean k-NN of each query row in ``bank``: ``(distances, indices)``, each ``(Q, k)``."""
    return MemoryBankIndex(bank, backend, search).search(queries, k)
