"""torch's threads in the kit's loops of small operations.

A loop of many small matrix products (the lazy coreset's blocks, SPADE's cache-sized distance
blocks) gains little from torch's intra-op threads and, on a busy machine, loses a lot: each
operation ends at a barrier where every thread must arrive, so one descheduled thread holds up
the others, thousands of times. Measured on 2 shared cores: the coreset loop ran about 7x slower
with 2 threads than with 1, SPADE's search in 8 MiB blocks about 3x slower.

Two ways out, both here. :func:`at_most_threads` runs a loop on one thread. :func:`map_blocks`
runs independent blocks in a pool of Python threads, each block's operations single-threaded:
torch releases the GIL inside its operations, so the blocks run in parallel on an idle machine,
and on a busy one a descheduled thread holds up only its own block.

>>> import torch
>>> squares = torch.zeros(4)
>>> def square(i):
...     squares[i] = i * i
>>> map_blocks(square, range(4))
>>> squares.tolist()
[0.0, 1.0, 4.0, 9.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch


@contextmanager
def at_most_threads(threads: int | None):
    """Limit torch's intra-op threads for the duration (``None``: leave them alone)."""
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def map_blocks(work: Callable[[object], None], blocks: Iterable, threads: int | None = None) -> None:
    """Call ``work(block)`` for every block, in ``threads`` Python threads (default: torch's
    intra-op thread count), each with single-threaded torch operations.

    The blocks must be independent (each writes its own part of the result). An exception in any
    block is raised here.
    """
    threads = torch.get_num_threads() if threads is None else max(1, int(threads))
    with at_most_threads(1):
        if threads == 1:
            for block in blocks:
                work(block)
            return
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(work, blocks):  # consumed, so that an exception surfaces
                pass
