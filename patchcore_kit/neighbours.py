"""Exact k-nearest-neighbour search against the memory bank, in bounded memory.

A test image at 224 px has ~800 patches and a memory bank holds tens of thousands of entries, so
the full distance matrix of a whole test set would not fit. :func:`nearest_neighbours` walks
through queries and bank in chunks, keeping only the running k best per query: memory is
``query_chunk × bank_chunk`` floats, whatever the test-set or bank size. When faiss is installed
(``pip install faiss-cpu``), an exact ``IndexFlatL2`` gives the same answers faster.

>>> bank = torch.randn(500, 16)
>>> distances, indices = nearest_neighbours(bank[:3] + 0.01, bank, k=1)
>>> indices.ravel().tolist()
[0, 1, 2]
"""
from __future__ import annotations

import numpy as np
import torch

try:  # optional accelerator
    import faiss  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None


def faiss_available() -> bool:
    return faiss is not None


def _squared_distances(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor) -> torch.Tensor:
    # ||q - b||^2 = ||q||^2 - 2 q.b + ||b||^2: one matmul instead of a (q, b, D) difference tensor.
    return ((queries * queries).sum(1, keepdim=True) - 2.0 * queries @ bank.T + bank_sq).clamp_min_(0.0)


def nearest_neighbours_torch(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    query_chunk: int = 4096,
    bank_chunk: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked exact search: ``(distances, indices)`` of shape ``(Q, k)``, nearest first."""
    queries, bank = torch.as_tensor(queries).float(), torch.as_tensor(bank).float()
    k = min(k, len(bank))
    bank_sq = (bank * bank).sum(1)
    out_d = torch.empty(len(queries), k)
    out_i = torch.empty(len(queries), k, dtype=torch.long)
    for q0 in range(0, len(queries), query_chunk):
        q = queries[q0 : q0 + query_chunk]
        best_d = torch.full((len(q), k), float("inf"), device=q.device)
        best_i = torch.zeros((len(q), k), dtype=torch.long, device=q.device)
        for b0 in range(0, len(bank), bank_chunk):
            d = _squared_distances(q, bank[b0 : b0 + bank_chunk], bank_sq[b0 : b0 + bank_chunk])
            top_d, top_i = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
            merged_d = torch.cat([best_d, top_d], 1)
            merged_i = torch.cat([best_i, top_i + b0], 1)
            order = torch.topk(merged_d, k, dim=1, largest=False).indices
            best_d, best_i = merged_d.gather(1, order), merged_i.gather(1, order)
        out_d[q0 : q0 + len(q)] = best_d.sqrt().cpu()
        out_i[q0 : q0 + len(q)] = best_i.cpu()
    return out_d, out_i


class MemoryBankIndex:
    """An exact search structure over a fixed bank, built once and queried many times.

    ``backend``: ``"torch"`` (chunked matmul), ``"faiss"``, or ``"auto"`` (faiss on CPU when
    installed, else torch).
    """

    def __init__(self, bank: torch.Tensor, backend: str = "auto"):
        if backend not in ("auto", "torch", "faiss"):
            raise ValueError(f"unknown backend {backend!r}; choose 'auto', 'torch' or 'faiss'")
        self.bank = torch.as_tensor(bank).float()
        use_faiss = backend == "faiss" or (backend == "auto" and faiss is not None and self.bank.device.type == "cpu")
        if use_faiss and faiss is None:
            raise ImportError("faiss is not installed: pip install faiss-cpu")
        self._faiss = None
        if use_faiss:
            self._faiss = faiss.IndexFlatL2(self.bank.shape[1])
            self._faiss.add(np.ascontiguousarray(self.bank.cpu().numpy()))

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances, indices)``, each ``(Q, k)``, nearest first."""
        if self._faiss is None:
            return nearest_neighbours_torch(queries, self.bank, k)
        q = np.ascontiguousarray(torch.as_tensor(queries).float().cpu().numpy())
        d, i = self._faiss.search(q, min(k, len(self.bank)))
        return torch.from_numpy(np.sqrt(np.maximum(d, 0.0))), torch.from_numpy(i.astype(np.int64))


def nearest_neighbours(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean k-NN of each query row in ``bank``: ``(distances, indices)``, each ``(Q, k)``."""
    return MemoryBankIndex(bank, backend).search(queries, k)
