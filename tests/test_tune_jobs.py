"""tune's fits in parallel: how many at once (memory, CPUs, size), dearest first, same rows as serial."""

from __future__ import annotations

import csv
import json

import pytest

from patchcore_kit import tune
from patchcore_kit.patchcore import PatchCore
from patchcore_kit.tuning import jobs
from patchcore_kit.tuning.jobs import fit_bytes, fit_cost, longest_first, resolve_jobs, training_patches


def _params(layers, image_size=224, **changes) -> dict:
    return {**PatchCore(layers=layers, image_size=image_size, **changes).get_params(), "layers": tuple(layers)}


BOTTLE = [_params(("layer2", "layer3")), _params(("layer3",)), _params(("layer2", "layer3", "layer4"))]


def test_training_patches_and_cost_follow_the_finest_grid_and_the_width():
    assert training_patches(_params(("layer2", "layer3")), 167) == 167 * 28 * 28  # stride 8 at 224 px
    assert training_patches(_params(("layer3", "layer4")), 167) == 167 * 14 * 14
    assert training_patches(_params(("layer3",), image_size=(256, 224)), 10) == 10 * 16 * 14
    order = longest_first(
        [("a", _params(("layer3",))), ("b", _params(("layer2", "layer3"))), ("c", _params(("layer3", "layer4")))]
        + [("d", _params(("layer2", "layer3", "layer4"))), ("e", _params(("layer3",)))],
        lambda task: fit_cost(task[1]),
    )
    # 784 cells x 472 channels, 784 x 152, 196 x 432, 196 x 112 (twice: equal costs keep their order)
    assert [name for name, _ in order] == ["d", "b", "c", "a", "e"]


def test_jobs_default_to_the_cpus_the_memory_and_the_size_of_the_fits(monkeypatch):
    monkeypatch.setattr(jobs, "usable_cpus", lambda: 4)
    monkeypatch.setattr(jobs, "available_bytes", lambda: 2**50)
    assert resolve_jobs(None, 60, BOTTLE, 167, 84, "image_auroc", "patchcore", "cpu") == 4
    assert resolve_jobs(None, 3, BOTTLE, 167, 84, "image_auroc", "patchcore", "cpu") == 3  # no more than fits
    # memory for two of the largest fit, not three: two at once
    largest = max(fit_bytes(p, 167, 84, "image_auroc") for p in BOTTLE)
    assert largest > fit_bytes(BOTTLE[1], 167, 84, "image_auroc")  # the widest, finest candidate is the largest
    monkeypatch.setattr(jobs, "available_bytes", lambda: int(2.5 * largest))
    assert resolve_jobs(None, 60, BOTTLE, 167, 84, "image_auroc", "patchcore", "cpu") == 2
    monkeypatch.setattr(jobs, "available_bytes", lambda: largest // 2)
    assert resolve_jobs(None, 60, BOTTLE, 167, 84, "image_auroc", "patchcore", "cpu") == 1
    monkeypatch.setattr(jobs, "available_bytes", lambda: 2**50)
    # fits too small to repay starting a process, the baselines and other devices: one at a time
    tiny = [_params(("layer3",), image_size=64)]
    assert training_patches(tiny[0], 9) < jobs.MIN_PARALLEL_PATCHES
    assert resolve_jobs(None, 6, tiny, 9, 8, "image_auroc", "patchcore", "cpu") == 1
    assert resolve_jobs(None, 60, BOTTLE, 167, 84, "image_auroc", "padim", "cpu") == 1
    assert resolve_jobs(None, 60, BOTTLE, 167, 84, "image_auroc", "patchcore", "cuda") == 1
    # asked for: as many as asked, but never more than there are fits
    assert resolve_jobs(3, 60, tiny, 9, 8, "image_auroc", "padim", "cpu") == 3
    assert resolve_jobs(8, 2, BOTTLE, 167, 84, "image_auroc", "patchcore", "cpu") == 2


def _rows(path):
    with path.open() as handle:
        return sorted(
            ({k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)),
            key=lambda r: (r["setting"], r["fold"]),
        )


@pytest.mark.usefixtures("one_thread")
def test_parallel_tune_scores_exactly_as_the_serial_one(make_mvtec, tmp_path):
    root = make_mvtec(n_train=9, test={"good": 3, "scratch": 4, "dent": 4}, size=(48, 48))
    grid = {"layers": [["layer3"], ["layer2", "layer3"]], "patch_size": [1, 3], "image_size": [64]}
    grid["fixed"] = {"coreset_ratio": 0.5}
    kwargs = dict(grid=grid, folds=3, validation="real", progress=False, feature_cache=tmp_path / "cache")
    serial = tune(root, "mvtec", "widget", output=tmp_path / "serial", jobs=1, **kwargs)
    parallel = tune(root, "mvtec", "widget", output=tmp_path / "parallel", jobs=2, **kwargs)
    assert len(_rows(tmp_path / "serial" / "folds.csv")) == 12  # 4 candidates x 3 folds
    assert _rows(tmp_path / "parallel" / "folds.csv") == _rows(tmp_path / "serial" / "folds.csv")
    assert json.dumps(parallel, sort_keys=True) == json.dumps(serial, sort_keys=True)
