"""The notebooks' render functions and their widget wiring, called directly on tiny data.

UMAP itself is exercised by notebook 02 (tests/test_notebooks.py); here it is replaced by a
stand-in so these tests take seconds, not numba's compile time.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from patchcore_kit import viz
from patchcore_kit.coreset import coreset_size, greedy_coreset
from patchcore_kit.widgets import (
    GalleryState,
    coreset_explorer,
    coreset_state,
    figure_png,
    gallery_explorer,
    gallery_metrics,
    patch_positions,
    render_coreset_view,
    render_gallery,
    render_sweep,
    sweep_explorer,
    umap_embedding,
)


class FakeUMAP:
    """Stands in for umap.UMAP: the first two coordinates, and a count of the fits."""

    fits = 0

    def __init__(self, **params):
        self.params = params

    def fit_transform(self, x):
        FakeUMAP.fits += 1
        return np.asarray(x)[:, :2] * 1.0


@pytest.fixture
def fake_umap(monkeypatch):
    FakeUMAP.fits = 0
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    return FakeUMAP


@pytest.fixture(scope="module")
def tiny_split(tiny_gravel_split):
    return tiny_gravel_split


@pytest.fixture(scope="module")
def gallery(tiny_split, tmp_path_factory):
    cache = tmp_path_factory.mktemp("features")
    return GalleryState(tiny_split, image_size=64, feature_cache=str(cache))


# --- small helpers ------------------------------------------------------------------------------
def test_patch_positions_undo_row_major_flattening():
    image, row, col = patch_positions([0, 5, 11, 12, 23], grid=(3, 4))
    assert image.tolist() == [0, 0, 0, 1, 1]
    assert row.tolist() == [0, 1, 2, 0, 2]
    assert col.tolist() == [0, 1, 3, 0, 3]


def test_umap_embedding_is_cached_by_data_and_settings(tmp_path, fake_umap):
    x = np.random.default_rng(0).normal(size=(30, 5))
    first = umap_embedding(x, cache_dir=tmp_path)
    again = umap_embedding(x, cache_dir=tmp_path)
    assert fake_umap.fits == 1 and np.array_equal(first, again)
    umap_embedding(x + 1, cache_dir=tmp_path)  # other data: a new embedding, never a stale one
    umap_embedding(x, n_neighbors=5, cache_dir=tmp_path)  # other settings too
    assert fake_umap.fits == 3
    assert len(list(tmp_path.glob("umap_*.npy"))) == 3
    assert not list(tmp_path.glob("*partial*"))


# --- 02: the coreset view -------------------------------------------------------------------------
@pytest.fixture
def coreset(fake_umap, tmp_path):
    features = torch.randn(2 * 6 * 6, 16, generator=torch.Generator().manual_seed(0))
    images = np.zeros((2, 48, 48, 3), dtype=np.uint8)
    return coreset_state(features, (6, 6), images, max_ratio=0.5, n_shown=50, projection_dim=None, cache_dir=tmp_path)


def test_coreset_state_holds_greedy_prefixes(coreset):
    n = len(coreset.features)
    for ratio in (0.05, 0.2, 0.5):
        expected = greedy_coreset(coreset.features, coreset_size(n, ratio), projection_dim=None)
        assert np.array_equal(coreset.coreset(ratio), expected)
    assert np.all(np.diff(coreset.radii) <= 1e-6)
    assert coreset.radius(0.5) < coreset.radius(0.05)
    # every pick is embedded, plus a uniform sample of the whole bank, each patch once
    assert set(coreset.order) <= set(coreset.shown) and len(set(coreset.shown)) == len(coreset.shown)
    assert coreset.in_sample.sum() == 50 and coreset.embedding.shape == (len(coreset.shown), 2)
    assert (
        coreset.in_sample | np.isin(coreset.shown, coreset.order) | np.isin(coreset.shown, coreset.random_order)
    ).all()
    with pytest.raises(ValueError, match="max_ratio"):
        coreset.coreset(0.9)


def test_render_coreset_view_changes_with_the_ratio(coreset):
    small, large = render_coreset_view(coreset, 0.05), render_coreset_view(coreset, 0.5)
    assert isinstance(small, Figure) and len(small.axes) == 2
    assert f"{len(coreset.coreset(0.05))} of {len(coreset.features)}" in small.axes[0].get_title()
    grey, orange = small.axes[0].collections  # the same uniform sample behind every ratio
    assert len(grey.get_offsets()) == coreset.in_sample.sum() == len(large.axes[0].collections[0].get_offsets())
    assert len(orange.get_offsets()) == len(coreset.coreset(0.05))
    assert figure_png(small) != figure_png(large)


def test_coreset_explorer_rerenders_when_the_slider_moves(coreset):
    box = coreset_explorer(coreset, ratios=(0.05, 0.2, 0.5))
    slider = box.children[0].children[0]
    picture = box.children[1]
    before = bytes(picture.value)
    slider.value = 0.5 if slider.value != 0.5 else 0.05
    assert bytes(picture.value) != before and bytes(picture.value).startswith(b"\x89PNG")


def test_the_coreset_state_holds_random_prefixes_too_and_the_explorer_switches(coreset):
    random_small, random_large = coreset.coreset(0.05, "random"), coreset.coreset(0.5, "random")
    assert np.array_equal(random_large[: len(random_small)], random_small)  # a prefix, like greedy's
    assert set(random_large) <= set(coreset.shown)  # every random pick is drawn too
    assert coreset.radius(0.2, "random") >= coreset.radius(0.2)  # greedy covers at least as well
    figure = render_coreset_view(coreset, 0.2, sampler="random")
    assert figure.axes[0].get_title().startswith("random coreset")
    box = coreset_explorer(coreset, ratios=(0.05, 0.2, 0.5))
    sampler = [c for row in box.children[:-1] for c in row.children if c.description == "sampler"][0]
    picture = box.children[-1]
    before = bytes(picture.value)
    sampler.value = "random"
    assert bytes(picture.value) != before


def test_the_coreset_explorer_builds_another_bank_only_when_chosen(coreset, fake_umap, tmp_path):
    calls = []

    def other():
        calls.append(1)
        features = torch.randn(2 * 6 * 6, 16, generator=torch.Generator().manual_seed(1))
        return coreset_state(
            features, (6, 6), coreset.images, max_ratio=0.5, n_shown=50, projection_dim=None, cache_dir=tmp_path
        )

    box = coreset_explorer(coreset, ratios=(0.05, 0.2, 0.5), variants={"default": coreset, "other": other})
    bank = [c for row in box.children[:-1] for c in row.children if c.description == "bank"][0]
    picture = box.children[-1]
    before = bytes(picture.value)
    assert calls == [] and bank.value == "default"
    bank.value = "other"
    assert calls == [1] and bytes(picture.value) != before
    bank.value = "default"
    bank.value = "other"
    assert calls == [1]  # built once, then kept


# --- 04: the gallery ----------------------------------------------------------------------------
def test_gallery_state_memoises_and_b_leaves_maps_alone(gallery):
    scores, maps = gallery.result(0.5, 1)
    stored = gallery.neighbors(0.5, 1)
    assert gallery.neighbors(0.5, 3) is stored  # scored once: b only re-weighs the stored distances
    assert gallery.result(0.5, 1)[1] is maps
    assert maps.shape == (len(gallery.split.test), 64, 64)
    scores_b3, maps_b3 = gallery.result(0.5, 3)
    assert np.array_equal(maps, maps_b3)
    model = gallery.model(0.5)
    for b, expected in ((1, scores), (3, scores_b3)):  # the same numbers as scoring again with this b
        model.set_params(num_neighbors=b)
        np.testing.assert_allclose(model.decision_function(gallery.split.test_paths), expected, rtol=1e-5)
    normalised = gallery.normalised_maps(0.5, 1)
    assert normalised.max() == pytest.approx(1.0)
    assert gallery.defect_choices[-1] == "good" and all(isinstance(d, str) for d in gallery.defect_choices)


def test_a_calibrated_gallery_measures_maps_in_nominal_threshold_units(tiny_split, tmp_path):
    state = GalleryState(tiny_split, image_size=64, feature_cache=str(tmp_path), calibrate=True)
    model = state.model(0.5)
    assert state.calibrated and model.pixel_threshold_ > 0
    np.testing.assert_allclose(state.normalised_maps(0.5, 1), state.result(0.5, 1)[1] / model.pixel_threshold_)
    assert state.model(0.5, patch_size=3) is model  # the state's own setting: no second fit
    assert state.model(0.5, patch_size=1) is not model
    figure = render_gallery(state, state.defect_choices[0], coreset_ratio=0.5, num_neighbors=1, patch_size=1)
    assert "nominal pixel threshold" in figure.axes[-1].get_xlabel()


def test_render_gallery_columns_and_threshold(gallery):
    defect = gallery.defect_choices[0]
    figure = render_gallery(gallery, defect, threshold=0.5, coreset_ratio=0.5, num_neighbors=1)
    assert len(figure.axes) == 3 + 1  # one image of this type: 3 views + the colour bar
    assert figure.axes[0].get_title().startswith(f"{defect} #")
    good = render_gallery(gallery, "good", threshold=0.5, coreset_ratio=0.5, num_neighbors=1, max_images=3)
    assert len(good.axes) == 2 * 3 + 1  # two nominal test images
    lower = render_gallery(gallery, defect, threshold=0.1, coreset_ratio=0.5, num_neighbors=1)
    assert figure_png(figure) != figure_png(lower)
    with pytest.raises(ValueError, match="no test images of defect type 'dent'"):
        render_gallery(gallery, "dent")


def test_gallery_metrics_iou_matches_its_definition(gallery):
    table = gallery_metrics(gallery, coreset_ratio=0.5, num_neighbors=1, threshold=0.0)
    assert list(table.index) == [d for d in gallery.defect_choices if d != "good"]
    assert {"image AUROC", "pixel AUROC", "IoU @ 0.00"} <= set(table.columns)
    # threshold 0 marks (almost) every pixel, so IoU = defect area / image area
    defect = table.index[0]
    truth = gallery.masks[gallery.defect_types == defect]
    predicted = gallery.normalised_maps(0.5, 1)[gallery.defect_types == defect] > 0.0
    expected = (truth & predicted).sum() / (truth | predicted).sum()
    assert table.loc[defect, "IoU @ 0.00"] == pytest.approx(expected, abs=1e-3)
    assert table["images"].tolist() == [1] * len(table)


def test_gallery_explorer_follows_every_control(gallery):
    box = gallery_explorer(gallery, ratios=(0.25, 0.5), num_neighbors=(1, 3))
    controls = [c for row in box.children[:-2] for c in row.children]
    picture, table = box.children[-2], box.children[-1]
    assert [c.description for c in controls] == [
        "defect type",
        "threshold",
        "colour map",
        "coreset ratio",
        "neighbours b",
    ]
    seen = {bytes(picture.value)}
    defect, threshold, cmap, ratio, _ = controls
    threshold.value = 0.2
    seen.add(bytes(picture.value))
    cmap.value = "gray"
    seen.add(bytes(picture.value))
    defect.value = defect.options[1]
    seen.add(bytes(picture.value))
    html = table.value
    ratio.value = 0.25
    assert len(seen) == 4 and "IoU @ 0.20" in html and table.value != html


# --- 03: the sweep ------------------------------------------------------------------------------
def sweep_table(offset: float = 0.0) -> pd.DataFrame:
    rows = []
    for method, base in (("patchcore", 0.8), ("padim", 0.7), ("spade", 0.6)):
        for shots in (1, 2, 5):
            for seed in (0, 1):
                rows.append(
                    {
                        "method": method,
                        "shots": shots,
                        "seed": seed,
                        "image_auroc": base + offset + 0.02 * shots + 0.01 * seed,
                        "pixel_auroc": base,
                        "aupro": None,
                    }
                )
    return pd.DataFrame(rows)


def test_render_sweep_draws_only_the_chosen_methods():
    figure = render_sweep(sweep_table(), methods=["padim", "patchcore"], reference=None, title="demo / brick")
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert "PatchCore" in labels and "PaDiM" in labels and "SPADE" not in labels
    assert figure.axes[0].get_title() == "demo / brick"
    with pytest.raises(ValueError, match="not in the results"):
        render_sweep(sweep_table(), methods=["cflow"])
    with pytest.raises(ValueError, match="at least one method"):
        render_sweep(sweep_table(), methods=[])


def test_sweep_explorer_switches_tables_and_methods():
    box = sweep_explorer({"demo / brick": sweep_table(), "mtd": sweep_table(-0.3)})
    dataset, methods, metric = box.children[0].children
    paper = box.children[1].children[0]
    picture = box.children[-1]
    assert [value for _, value in metric.options] == ["image_auroc", "pixel_auroc"]  # aupro is all missing
    seen = {bytes(picture.value)}
    dataset.value = "mtd"
    seen.add(bytes(picture.value))
    methods.value = ("spade",)
    seen.add(bytes(picture.value))
    paper.value = False
    seen.add(bytes(picture.value))
    assert len(seen) == 4


# --- figure functions used by the notebooks -------------------------------------------------------
def test_pca_rgb_shares_one_basis_and_stays_in_range():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 5, 6)), rng.normal(size=(8, 3, 4))
    rgb_a, rgb_b = viz.pca_rgb([a, b])
    assert rgb_a.shape == (5, 6, 3) and rgb_b.shape == (3, 4, 3)
    assert 0.0 <= min(rgb_a.min(), rgb_b.min()) and max(rgb_a.max(), rgb_b.max()) <= 1.0
    # the same positions in a second map get the same colours under a shared basis
    same_a, same_copy = viz.pca_rgb([a, a.copy()])
    assert np.allclose(same_a, same_copy)


def test_receptive_fields_grow_with_depth():
    from patchcore_kit.backbones import load_backbone
    from patchcore_kit.receptive_fields import receptive_field_maps

    backbone = load_backbone("efficientnet_lite0")
    image = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    fields = receptive_field_maps(backbone, image, ["layer1", "layer2"])
    widths = {layer: int((field.max(axis=0) > 0).sum()) for layer, field in fields.items()}
    assert 0 < widths["layer1"] < widths["layer2"] <= 96
    # the centre pixel matters; the far corner is outside layer1's field
    assert fields["layer1"][48, 48] > 0 and fields["layer1"][0, 0] == 0
    figure = viz.plot_receptive_fields(np.zeros((96, 96, 3), np.uint8), fields, backbone.strides)
    assert "stride 4" in figure.axes[0].get_title()


def test_patch_pca_figure_colours_each_group():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(40, 2))
    groups = np.array(["nominal"] * 30 + ["scratch"] * 6 + ["hole"] * 4)
    figure = viz.plot_patch_pca(coords, np.arange(40) // 8 % 5, np.arange(40) % 8, (5, 8), groups)
    legend = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    assert legend == ["nominal", "scratch", "hole"]
    colours = viz.position_colours(np.array([0, 4]), np.array([0, 7]), (5, 8))
    assert colours[0, 0] < colours[1, 0] and colours[0, 2] < colours[1, 2]  # right = redder, down = bluer


def test_the_gallery_explorer_offers_patch_size_and_refits_from_the_cache(gallery):
    box = gallery_explorer(
        gallery, ratios=(0.5,), num_neighbors=(1,), patch_sizes=(1, 3), aggregations=("mean", "unfold")
    )
    controls = {c.description: c for row in box.children[:-2] for c in row.children}
    assert {"patch size p", "aggregation"} <= set(controls)
    picture = box.children[-2]
    before = bytes(picture.value)
    controls["patch size p"].value = 1
    assert bytes(picture.value) != before
    assert gallery.model(0.5, patch_size=1).patch_size == 1


# --- 05: decisions --------------------------------------------------------------------------------
def test_decision_state_thresholds_come_from_calibration_scores_only(tiny_split, tmp_path):
    from patchcore_kit.patchcore import PatchCore
    from patchcore_kit.widgets import DecisionState, decision_table, errors_explorer, render_errors

    model = PatchCore(image_size=64, coreset_ratio=0.5, feature_cache=str(tmp_path)).fit(tiny_split.train_paths)
    state = DecisionState.from_model(model, tiny_split)
    assert len(state.calibration_scores) == len(tiny_split.train)
    table = decision_table(state, [0.0, 0.5])
    assert table.loc[0.0, "threshold"] == pytest.approx(state.calibration_scores.max())
    assert table.loc[0.5, "threshold"] <= table.loc[0.0, "threshold"]
    for kind in ("misses", "false alarms"):
        assert isinstance(render_errors(state, 0.5, kind), Figure)
    with pytest.raises(ValueError, match="kind"):
        render_errors(state, 0.5, "both")
    box = errors_explorer(state, budgets=(0.0, 0.5))
    assert "threshold" in box.children[-1].value  # the counts table below the picture
    with pytest.raises(ValueError, match="calibrate=True"):
        DecisionState.from_model(
            PatchCore(image_size=64, calibrate=False, feature_cache=str(tmp_path)).fit(tiny_split.train_paths),
            tiny_split,
        )
