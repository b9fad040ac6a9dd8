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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load() -> str:
    """The 1-, 5- and 15-minute load averages, as printed in every output."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def header(title: str) -> None:
    """Print what the figures below depend on: machine, versions, threads, load."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# {title}")
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {_cpu_model()}, {cores} cores available to this process "
        f"({os.cpu_count()} in the machine), {_memory_gib():.0f} GiB memory"
    )
    print(
        f"# python {platform.python_version()}  torch {torch.__version__}  torch threads {torch.get_num_threads()}  "
        f"load average {load()} (1/5/15 min; the machine is shared, so wall times are noisy: compare the "
        f"figures measured side by side in this run)"
    )
    print(flush=True)


def footer() -> None:
    print(f"\n# finished {time.strftime('%Y-%m-%d %H:%M')}, load average {load()}", flush=True)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall) and ``t.cpu_seconds`` (this process's CPU time)."""

    def __enter__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


def vm_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")
