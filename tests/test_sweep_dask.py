"""The sweep on Dask: a 2-worker LocalCluster gives the serial sweep's rows, resumes, and shuts down clean."""

from __future__ import annotations

import pandas as pd
import psutil
import pytest

from patchcore_kit.data import load_dataset
from patchcore_kit.errors import InputError
from patchcore_kit.experiments import sample_efficiency
from patchcore_kit.experiments import scheduler as scheduler_module
from patchcore_kit.experiments import sweep as sweep_module

SIZE = 32
# SPADE with its shared pair table (one task per seed on Dask), PatchCore and PaDiM one task per cell
GRID = dict(
    shots=(1, 2, "all"),
    methods=("patchcore", "padim", "spade"),
    seeds=(0, 1),
    image_size=SIZE,
    progress=False,
    padim={"n_features": 16},
)
KEYS = ["method", "shots", "seed"]
TIMINGS = ["fit_s", "infer_s"]

pytestmark = pytest.mark.slow  # each LocalCluster starts two Python processes that import torch


@pytest.fixture
def split(make_mvtec):
    root = make_mvtec(n_train=4, test={"good": 3, "scratch": 3}, size=(SIZE, SIZE))
    return load_dataset(root, "mvtec", category="widget")


def rows_of(path) -> pd.DataFrame:
    """A results file as a set of rows: sorted, timings dropped (they differ between runs)."""
    return pd.read_csv(path).drop(columns=TIMINGS).sort_values(KEYS, ignore_index=True)


def children() -> set[int]:
    """This process's worker processes (multiprocessing's resource tracker, started once and kept, aside)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:  # ended while we looked
            pass
    return found


def test_dask_sweep_equals_the_serial_sweep_row_by_row(split, tmp_path):
    cache = tmp_path / "cache"
    serial = sample_efficiency(split, cache_dir=cache, results_path=tmp_path / "serial.csv", **GRID)
    before = children()
    dask = sample_efficiency(
        split, cache_dir=cache, results_path=tmp_path / "dask.csv", scheduler="processes", workers=2, **GRID
    )
    assert children() <= before  # the LocalCluster's worker processes are gone
    assert len(serial) == 3 * 3 * 2
    # Every metric digit: the CSV holds each float's repr, compared exactly.
    pd.testing.assert_frame_equal(rows_of(tmp_path / "dask.csv"), rows_of(tmp_path / "serial.csv"), check_exact=True)
    pd.testing.assert_frame_equal(dask.drop(columns=TIMINGS), serial.drop(columns=TIMINGS), check_exact=True)
    summary = dask.attrs["summary"]
    assert summary["scheduler"] == {"scheduler": "processes", "workers": 2}
    assert summary["spade_table"]["tables"] == 2  # SPADE's cells: one task (and table) per seed
    assert summary["feature_pass"]["computed"] == 0  # the serial run filled the cache; the workers only read it


def test_interrupted_dask_sweep_resumes(split, tmp_path, monkeypatch):
    cache, results = tmp_path / "cache", tmp_path / "results.csv"
    small = dict(GRID, methods=("patchcore", "padim"), shots=(1, 2))
    original = sweep_module._append_row
    written = {"n": 0}

    def interrupt_after_three(path, row):
        original(path, row)
        written["n"] += 1
        if written["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C while the workers run the other cells

    monkeypatch.setattr(sweep_module, "_append_row", interrupt_after_three)
    before = children()
    with pytest.raises(KeyboardInterrupt):
        sample_efficiency(split, cache_dir=cache, results_path=results, scheduler="processes", workers=2, **small)
    assert children() <= before  # cluster closed on the interruption: no orphan worker processes
    assert len(pd.read_csv(results)) == 3

    monkeypatch.setattr(sweep_module, "_append_row", original)
    resumed = sample_efficiency(split, cache_dir=cache, results_path=results, scheduler="processes", workers=2, **small)
    assert resumed.attrs["summary"]["rows_resumed"] == 3 and len(pd.read_csv(results)) == 8
    fresh = sample_efficiency(split, cache_dir=cache, results_path=tmp_path / "fresh.csv", **small)
    pd.testing.assert_frame_equal(rows_of(results), rows_of(tmp_path / "fresh.csv"), check_exact=True)
    assert len(fresh) == 8


def test_bad_schedulers_are_refused_clearly(split, tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler_module, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(InputError, match=r"tcp://127\.0\.0\.1:9: no Dask scheduler answers there within 2 s"):
        sample_efficiency(split, cache_dir=tmp_path / "cache", scheduler="tcp://127.0.0.1:9", **GRID)
    assert not (tmp_path / "cache").exists()  # refused before the extraction pass
    with pytest.raises(InputError, match="scheduler must be 'serial', 'processes', a Dask scheduler address"):
        sample_efficiency(split, scheduler="cluster", **GRID)
    with pytest.raises(InputError, match="give cache_dir"):  # a cluster cannot see a temporary cache
        sample_efficiency(split, scheduler="tcp://127.0.0.1:9", **GRID)
    with pytest.raises(InputError, match="no such Dask scheduler file"):
        sample_efficiency(split, cache_dir=tmp_path / "cache", scheduler=str(tmp_path / "scheduler.json"), **GRID)
    with pytest.raises(InputError, match="workers must be"):
        sample_efficiency(split, scheduler="processes", workers=0, **GRID)


def test_cli_sweep_passes_the_scheduler(monkeypatch, tmp_path, make_mvtec):
    from patchcore_kit import cli, experiments

    calls = []
    monkeypatch.setattr(experiments, "run_sweep", lambda *a, **k: calls.append(k))
    root = make_mvtec(n_train=2, test={"good": 1, "scratch": 1})
    base = ["sweep", str(root), "--format", "mvtec", "--output", str(tmp_path / "out")]
    assert cli.main(base) == 0 and calls[-1]["scheduler"] == "serial" and calls[-1]["workers"] is None
    assert cli.main(base + ["--scheduler", "processes", "--workers", "3"]) == 0
    assert (calls[-1]["scheduler"], calls[-1]["workers"]) == ("processes", 3)
