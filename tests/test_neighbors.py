"""Exact k-NN: the torch and faiss backends agree with brute force, tiles and chunks do not matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchcore_kit import neighbors
from patchcore_kit.neighbors import MemoryBankIndex, faiss_available, nearest_neighbors

BACKENDS = [
    "torch",
    pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="faiss not installed")),
]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def brute_force(queries, bank, k):
    """Float64 distances to every entry, sorted by (distance, index): the answer by definition."""
    d = torch.cdist(torch.as_tensor(queries).double(), torch.as_tensor(bank).double()).numpy()
    order = np.stack([np.lexsort((np.arange(d.shape[1]), row)) for row in d])[:, :k]
    return np.take_along_axis(d, order, 1), order


def random_data(n_queries=300, n_bank=700, dim=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(n_bank, dim, generator=g)
    queries = torch.cat([torch.randn(n_queries - 20, dim, generator=g), bank[:20]])  # some at distance 0
    return queries, bank


def tied_data():
    """A query at the origin with bank entries at exactly equal distances, and duplicated entries."""
    bank = torch.tensor(
        [[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, 0.0]]
    )
    queries = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5], [10.0, 10.0]])
    return queries, bank


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3, 9])
def test_matches_brute_force(backend, k):
    queries, bank = random_data()
    distances, indices = nearest_neighbors(queries, bank, k=k, backend=backend)
    expected_d, expected_i = brute_force(queries, bank, k)
    assert distances.shape == indices.shape == (len(queries), k)
    assert distances.dtype == torch.float32 and indices.dtype == torch.int64
    np.testing.assert_array_equal(indices.numpy(), expected_i)
    np.testing.assert_allclose(distances.numpy(), expected_d, rtol=1e-5, atol=1e-6)
    assert (distances[-20:, 0] == 0).all() and (indices[-20:, 0] == torch.arange(20)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_lower_bank_index(backend):
    queries, bank = tied_data()
    distances, indices = nearest_neighbors(queries, bank, k=6, backend=backend)
    _, expected = brute_force(queries, bank, 6)
    np.testing.assert_array_equal(indices.numpy(), expected)
    assert indices[0].tolist() == [1, 2, 3, 4, 5, 7]  # six entries at distance exactly 1
    assert distances[0].tolist() == [1.0] * 6


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("k", [1, 4])
def test_torch_and_faiss_give_identical_answers(k):
    queries, bank = random_data(n_queries=400, n_bank=1500, dim=152, seed=1)
    queries = queries * 5 + 3  # offset and scale: where the matrix-product form loses precision
    bank = bank * 5 + 3
    by_torch = nearest_neighbors(queries, bank, k=k, backend="torch")
    by_faiss = nearest_neighbors(queries, bank, k=k, backend="faiss")
    assert torch.equal(by_torch[1], by_faiss[1]) and torch.equal(by_torch[0], by_faiss[0])


def test_tiles_and_chunks_do_not_change_the_answer(monkeypatch):
    queries, bank = random_data(n_queries=250, n_bank=900, dim=16, seed=2)
    expected = nearest_neighbors(queries, bank, k=4, backend="torch")
    monkeypatch.setattr(neighbors, "TILE_ELEMENTS", 1000)  # 1-query tiles, 7-query exact chunks
    monkeypatch.setattr(neighbors, "QUERY_CHUNK", 37)
    tiled = nearest_neighbors(queries, bank, k=4, backend="torch")
    assert torch.equal(expected[0], tiled[0]) and torch.equal(expected[1], tiled[1])


def test_bank_larger_than_one_tile_column():
    queries, bank = random_data(n_queries=30, n_bank=40000, dim=4, seed=3)  # > 16384 entries: 3 bank chunks
    _, indices = nearest_neighbors(queries, bank, k=2, backend="torch")
    np.testing.assert_array_equal(indices.numpy(), brute_force(queries, bank, 2)[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_banks_and_empty_queries(backend):
    bank = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    distances, indices = nearest_neighbors(torch.tensor([[0.9, 0.9]]), bank, k=5, backend=backend)
    assert indices.tolist() == [[1, 0]]  # k is capped at the bank size
    assert distances[0, 0] == pytest.approx(0.1 * 2**0.5, rel=1e-6)
    distances, indices = nearest_neighbors(torch.empty(0, 2), bank, k=1, backend=backend)
    assert distances.shape == indices.shape == (0, 1)


def test_index_is_reusable_and_accepts_numpy():
    queries, bank = random_data(n_queries=50, n_bank=200, dim=8, seed=4)
    index = MemoryBankIndex(bank.numpy().astype(np.float64), backend="torch")
    first = index.search(queries.numpy(), k=2)
    second = index.search(queries, k=2)
    assert torch.equal(first[1], second[1]) and index.backend == "torch"


def test_auto_backend_is_the_probe_s_choice(monkeypatch):
    monkeypatch.setattr(neighbors, "_faster", None)
    choice = neighbors.faster_exact_backend()
    assert choice in (("torch", "faiss") if faiss_available() else ("torch",))
    assert MemoryBankIndex(torch.randn(5, 3)).backend == choice
    for verdict in ("torch", "faiss") if faiss_available() else ("torch",):
        monkeypatch.setattr(neighbors, "_faster", verdict)  # measured once per process, then reused
        assert MemoryBankIndex(torch.randn(5, 3)).backend == verdict
    assert MemoryBankIndex(torch.randn(5, 3), backend="torch").backend == "torch"  # asked for: no probe


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("slow", ["torch", "faiss"])
def test_probe_picks_the_faster_backend(monkeypatch, slow):
    """One backend made far slower than the other (a sleep; the other one's work replaced by nothing
    where the slow one is torch, so that a busy machine cannot make the fast side slow): the probe
    must choose the fast one."""
    import time

    real_torch, real_faiss = neighbors._candidates_torch, neighbors.faiss

    def slow_torch(*args):
        time.sleep(0.5)
        return real_torch(*args)

    class Index:  # does no work: as fast as a backend can be
        def add(self, bank):
            pass

        def search(self, queries, k):
            pass

    class FakeFaiss:
        def __init__(self, delay):
            self.delay = delay

        def __getattr__(self, name):
            return getattr(real_faiss, name)

        def IndexFlatL2(self, dim):  # noqa: N802 (faiss's name)
            time.sleep(self.delay)
            return Index() if self.delay == 0 else real_faiss.IndexFlatL2(dim)

    if slow == "torch":
        monkeypatch.setattr(neighbors, "_candidates_torch", slow_torch)
        monkeypatch.setattr(neighbors, "faiss", FakeFaiss(0))
    else:
        monkeypatch.setattr(neighbors, "faiss", FakeFaiss(2.0))
    monkeypatch.setattr(neighbors, "_faster", None)
    assert neighbors.faster_exact_backend() == ("faiss" if slow == "torch" else "torch")


def test_errors(monkeypatch):
    bank = torch.randn(10, 4)
    with pytest.raises(ValueError, match="unknown backend 'annoy'"):
        MemoryBankIndex(bank, backend="annoy")
    with pytest.raises(ValueError, match="non-empty"):
        MemoryBankIndex(torch.empty(0, 4))
    with pytest.raises(ValueError, match=r"queries of shape \(2, 3\) do not match the bank's 4 dims"):
        nearest_neighbors(torch.randn(2, 3), bank, backend="torch")
    with pytest.raises(ValueError, match="k must be at least 1"):
        nearest_neighbors(torch.randn(2, 4), bank, k=0, backend="torch")
    monkeypatch.setattr(neighbors, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        MemoryBankIndex(bank, backend="faiss")
    assert MemoryBankIndex(bank).backend == "torch"  # auto falls back quietly


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bank_gives_the_cpu_answer():
    queries, bank = random_data(seed=5)
    on_gpu = nearest_neighbors(queries, bank.cuda(), k=3, backend="auto")
    assert on_gpu[0].device.type == "cpu"
    np.testing.assert_array_equal(on_gpu[1].numpy(), brute_force(queries, bank, 3)[1])


# --- approximate search (faiss HNSW / IVF): candidates approximate, distances exact -----------------
APPROXIMATE = [
    pytest.param(s, marks=pytest.mark.skipif(not faiss_available(), reason="faiss not installed"))
    for s in ("hnsw", "ivf")
]


def clustered_data(n_queries=400, n_bank=6000, dim=32, seed=6):
    """Patch-like data: entries around 60 centres, queries near them (what a memory bank looks like)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(60, dim, generator=g) * 3
    bank = centres[torch.randint(60, (n_bank,), generator=g)] + torch.randn(n_bank, dim, generator=g)
    queries = centres[torch.randint(60, (n_queries,), generator=g)] + torch.randn(n_queries, dim, generator=g)
    return queries, bank


@pytest.mark.parametrize("search", APPROXIMATE)
@pytest.mark.parametrize("k", [1, 5])
def test_approximate_search_finds_the_nearest_and_measures_exactly(search, k):
    queries, bank = clustered_data()
    distances, indices = nearest_neighbors(queries, bank, k=k, search=search)
    expected_d, expected_i = brute_force(queries, bank, k)
    assert distances.shape == indices.shape == (len(queries), k)
    recall_at_1 = (indices[:, 0].numpy() == expected_i[:, 0]).mean()
    assert recall_at_1 >= 0.95, recall_at_1
    # every returned distance is the exact |q - b| to the entry returned (not faiss's approximation)
    exact = torch.linalg.norm(queries[:, None].double() - bank[indices].double(), dim=2).numpy()
    np.testing.assert_allclose(distances.numpy(), exact, rtol=1e-5, atol=1e-6)
    # never nearer than the true nearest, nearest first, no entry twice
    assert (distances[:, 0].numpy() >= expected_d[:, 0] - 1e-5).all()
    assert (distances[:, 1:] >= distances[:, :-1]).all()
    assert all(len(set(row)) == k for row in indices.tolist())


@pytest.mark.parametrize("search", APPROXIMATE)
def test_approximate_search_is_repeatable_and_handles_tiny_banks(search):
    queries, bank = clustered_data(n_queries=100, n_bank=3000, seed=7)
    first = MemoryBankIndex(bank, search=search).search(queries, k=3)
    again = MemoryBankIndex(bank, search=search).search(queries, k=3)
    agree = (first[1] == again[1]).float().mean().item()
    assert agree >= 0.99  # IVF: seeded k-means; HNSW: the graph may differ slightly with threads
    tiny = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])  # fewer entries than candidates asked
    distances, indices = nearest_neighbors(torch.tensor([[0.9, 0.9]]), tiny, k=5, search=search)
    assert indices.tolist() == [[1, 0, 2]]
    assert distances[0, 0] == pytest.approx(0.1 * 2**0.5, rel=1e-6)


def test_auto_search_switches_at_the_bank_size(monkeypatch):
    assert neighbors.resolve_search("auto", neighbors.AUTO_MIN_BANK - 1) == "exact"
    expected = "hnsw" if faiss_available() else "exact"
    assert neighbors.resolve_search("auto", neighbors.AUTO_MIN_BANK) == expected
    assert MemoryBankIndex(torch.randn(50, 4), search="auto").search_kind == "exact"
    with pytest.raises(ValueError, match="unknown search 'annoy'"):
        MemoryBankIndex(torch.randn(50, 4), search="annoy")
    monkeypatch.setattr(neighbors, "faiss", None)
    with pytest.raises(ImportError, match="search='hnsw' needs faiss: pip install faiss-cpu"):
        MemoryBankIndex(torch.randn(50, 4), search="hnsw")
    assert neighbors.resolve_search("auto", 10**9) == "exact"  # without faiss, auto stays exact


@pytest.mark.parametrize("backend", BACKENDS)
def test_k1_checks_only_the_first_candidate_where_it_is_sure_and_answers_the_same(backend):
    """k = 1 skips the other candidates where the first leads by more than twice the rounding bound:
    the answer is bit for bit that of checking every candidate, on clear leads, near-ties and ties."""
    g = torch.Generator().manual_seed(3)
    bank = torch.randn(400, 32, generator=g) * 4 + 10
    bank = torch.cat([bank, bank[:20], bank[:10] + 1e-6])  # duplicated and nearly duplicated entries
    queries = torch.cat([torch.randn(2000, 32, generator=g) * 4 + 10, bank[:40], bank[:10] + 1e-7])
    index = MemoryBankIndex(bank, backend=backend)
    distances, indices = index.search(queries, k=1)
    if backend == "faiss":
        candidates, approximate = index._faiss_candidates(queries, 1 + neighbors.SPARE)
    else:
        candidates, approximate = neighbors._candidates_torch(queries, bank, index._bank_sq, 1 + neighbors.SPARE)
    every_d, every_i = neighbors._exact_k_nearest(queries, bank, candidates, 1)
    assert torch.equal(indices, every_i) and torch.equal(distances, every_d)
    sure = (approximate[:, 1] - approximate[:, 0]) > 2 * neighbors._rounding_bound(queries, index._bank_norm_max)
    assert 0 < int(sure.sum()) < len(queries)  # both ways were taken
    assert not sure[2000:2020].any()  # a query on a duplicated entry is a tie: never "sure"
    # The nearest distance by definition (which of two entries 1e-6 apart is nearer, float32 cannot say).
    expected_d, _ = brute_force(queries, bank, 1)
    np.testing.assert_allclose(distances.numpy(), expected_d, atol=1e-4)


def test_k1_over_many_tiles_answers_as_every_candidate_compared(monkeypatch):
    """The k = 1 path merges the two smallest values tile by tile: with tiny tiles (many bank and
    query tiles, a tie split across two tiles) the answer is still the general path's, bit for bit."""
    monkeypatch.setattr(neighbors, "BANK_CHUNK", 37)
    monkeypatch.setattr(neighbors, "BLOCK_ELEMENTS", 37 * 50)
    g = torch.Generator().manual_seed(5)
    bank = torch.randn(300, 16, generator=g) * 3
    bank = torch.cat([bank, bank[5:15], bank[:3] + 1e-6])  # duplicates land in other tiles
    queries = torch.cat([torch.randn(400, 16, generator=g) * 3, bank[:20]])
    index = MemoryBankIndex(bank, backend="torch")
    distances, indices = index.search(queries, k=1)
    candidates, _ = neighbors._candidates_torch(queries, bank, index._bank_sq, 1 + neighbors.SPARE)
    every_d, every_i = neighbors._exact_k_nearest(queries, bank, candidates, 1)
    assert torch.equal(indices, every_i) and torch.equal(distances, every_d)
    _, best, second = neighbors._two_nearest_torch(queries, bank, index._bank_sq)
    full = torch.addmm(index._bank_sq, queries, bank.T, alpha=-2).sort(dim=1).values
    np.testing.assert_allclose(best, full[:, 0].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(second, full[:, 1].numpy(), rtol=1e-5, atol=1e-3)
