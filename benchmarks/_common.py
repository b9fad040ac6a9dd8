"""Small helpers shared by the benchmark scripts: command-line threads, a header, peak memory."""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def header(title: str) -> None:
    """Print what the figures below depend on: machine, threads, load."""
    load = os.getloadavg()
    print(f"# {title}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  torch {torch.__version__}  "
          f"cpus {os.cpu_count()}  torch threads {torch.get_num_threads()}  "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(flush=True)


def footer() -> None:
    load = os.getloadavg()
    print(f"\n# finished {time.strftime('%Y-%m-%d %H:%M')}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
