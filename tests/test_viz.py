"""The report's figure functions: pure array helpers compute the right pixels, plots return Figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests; the functions themselves never touch pyplot

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.figure import Figure

from patchcore_kit.viz import (
    mask_outline,
    metric_colour,
    overlay_anomaly_map,
    paint_mask,
    plot_coreset_embedding,
    plot_gallery,
    plot_metrics_table,
    plot_score_histogram,
    plot_shots_curve,
)


# ---- pure array helpers ----------------------------------------------------------------------
def test_mask_outline_is_the_ring_of_boundary_pixels():
    mask = np.zeros((9, 9), dtype=bool)
    mask[2:7, 2:7] = True  # a 5x5 square
    outline = mask_outline(mask)
    expected = mask.copy()
    expected[3:6, 3:6] = False  # the 3x3 interior is not part of the outline
    assert np.array_equal(outline, expected)
    thick = mask_outline(mask, thickness=2)
    assert thick.sum() == 25 - 1 and not thick[4, 4]  # only the centre pixel is 2 steps inside


def test_mask_outline_closes_at_the_image_border_and_ignores_empty_masks():
    mask = np.zeros((6, 6), dtype=bool)
    mask[:3, :] = True  # touches the top, left and right borders
    outline = mask_outline(mask)
    assert outline[0].all() and outline[2].all()  # top border row and the inner edge
    assert not outline[1, 1:5].any()
    assert not mask_outline(np.zeros((4, 4), dtype=bool)).any()
    with pytest.raises(ValueError, match="thickness"):
        mask_outline(mask, thickness=0)


def test_paint_mask_changes_only_masked_pixels():
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 2] = True
    painted = paint_mask(image, mask, colour=(1.0, 0.0, 0.0), alpha=0.5)
    assert painted.shape == (4, 4, 3) and painted.dtype == np.float64
    np.testing.assert_allclose(painted[1, 2], [0.5 * 100 / 255 + 0.5, 0.5 * 100 / 255, 0.5 * 100 / 255])
    np.testing.assert_allclose(painted[~mask], 100 / 255)
    with pytest.raises(ValueError, match="does not match"):
        paint_mask(image, np.zeros((3, 3), dtype=bool))


def test_overlay_fades_low_scores_and_colours_high_ones():
    image = np.full((2, 3, 3), 51, dtype=np.uint8)  # 0.2 grey
    amap = np.array([[0.0, 5.0, 10.0], [10.0, 20.0, -3.0]])
    out = overlay_anomaly_map(image, amap, vmin=0.0, vmax=10.0, cmap="viridis", alpha=1.0)
    top = np.asarray(colormaps["viridis"](1.0)[:3])
    middle = np.asarray(colormaps["viridis"](0.5)[:3])
    np.testing.assert_allclose(out[0, 0], 0.2)  # score at vmin: the image, untouched
    np.testing.assert_allclose(out[0, 1], 0.5 * 0.2 + 0.5 * middle)  # half opacity at half scale
    np.testing.assert_allclose(out[0, 2], top)  # at vmax: the colour map's top colour
    np.testing.assert_allclose(out[1, 1], top)  # above vmax: clipped
    np.testing.assert_allclose(out[1, 2], 0.2)  # below vmin: clipped
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_overlay_without_fade_blends_everywhere_and_defaults_to_the_maps_range():
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    amap = np.array([[2.0, 4.0]])
    out = overlay_anomaly_map(image, amap, cmap="gray", alpha=0.5, fade=False)
    np.testing.assert_allclose(out[0, 0], 0.0)  # gray(0) = black, on black
    np.testing.assert_allclose(out[0, 1], 0.5)  # gray(1) = white at half opacity
    with pytest.raises(ValueError, match="does not match"):
        overlay_anomaly_map(image, np.zeros((2, 2)))


def test_metric_colour_runs_from_red_to_green():
    poor, good = metric_colour(0.5), metric_colour(1.0)
    assert poor[0] > poor[1] and good[1] > good[0]
    assert metric_colour(None) == metric_colour(float("nan"))


# ---- figures ---------------------------------------------------------------------------------
def test_score_histogram_draws_both_classes_and_the_threshold():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1, 0.2, 30), rng.normal(3, 0.5, 20)])
    labels = np.repeat([0, 1], [30, 20])
    figure = plot_score_histogram(scores, labels, threshold=2.0, title="demo")
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["nominal", "anomalous"]
    assert any(list(line.get_xdata()) == [2.0, 2.0] for line in ax.lines)  # the threshold line
    heights = sum(patch.get_height() for patch in ax.patches)
    assert heights == 50  # every image in exactly one bar of its class
    with pytest.raises(ValueError):
        plot_score_histogram([1.0, 2.0], [0])


def test_score_histogram_draws_into_a_given_axes():
    base = Figure()
    ax = base.add_subplot()
    assert plot_score_histogram([1.0, 2.0, 3.0], [0, 0, 1], ax=ax) is base


@pytest.mark.parametrize("with_thresholded, rows", [(True, 3), (False, 2)])
def test_gallery_has_one_column_per_image(with_thresholded, rows):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 16, 16, 3), dtype=np.uint8)
    maps = rng.random((3, 16, 16))
    masks = [maps[0] > 0.7, None, np.zeros((16, 16), bool)]
    thresholded = maps > 0.8 if with_thresholded else None
    figure = plot_gallery(images, masks, maps, thresholded, titles=["a", "b", "c"], vmin=0.2, vmax=0.9)
    image_axes = [ax for ax in figure.axes if ax.get_images()]
    assert len(image_axes) == 3 * rows and len(figure.axes) == 3 * rows + 1  # + the colour bar
    assert [ax.get_title() for ax in image_axes[:3]] == ["a", "b", "c"]
    no_bar = plot_gallery(images, masks, maps, thresholded, colorbar=False)
    assert len(no_bar.axes) == 3 * rows


def test_gallery_paints_the_ground_truth_outline_on_the_image():
    images = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    figure = plot_gallery(images, [mask], np.zeros((1, 8, 8)), colorbar=False)
    shown = figure.axes[0].get_images()[0].get_array()
    green = np.all(np.isclose(shown, (0.0, 0.9, 0.2)), axis=2)
    assert np.array_equal(green, mask_outline(mask))


def test_gallery_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equally many"):
        plot_gallery(np.zeros((2, 8, 8, 3)), None, np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="thresholded"):
        plot_gallery(np.zeros((1, 8, 8, 3)), None, np.zeros((1, 8, 8)), thresholded=[])


def test_metrics_table_figure_tints_scores():
    table = pd.DataFrame({"image_auroc": [0.99, 0.6], "n_train": [40, 40]}, index=pd.Index(["a", "b"], name="category"))
    figure = plot_metrics_table(table, title="metrics")
    assert len(figure.axes) == 1
    cells = figure.axes[0].tables[0].get_celld()
    assert cells[(0, 1)].get_text().get_text() == "image AUROC"
    assert cells[(1, 1)].get_text().get_text() == "0.990"
    assert cells[(1, 1)].get_facecolor()[:3] == pytest.approx(metric_colour(0.99)[:3])
    assert cells[(1, 2)].get_facecolor()[:3] == pytest.approx((1, 1, 1))  # counts are not tinted


def test_shots_curve_has_one_line_per_category():
    table = pd.DataFrame(
        {
            "shots": [1, 5, 40] * 2,
            "image_auroc": [0.7, 0.9, 1.0, 0.6, 0.8, 0.95],
            "category": ["brick"] * 3 + ["grass"] * 3,
        }
    )
    figure = plot_shots_curve(table)
    ax = figure.axes[0]
    assert len(figure.axes) == 1 and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["brick", "grass"]
    with pytest.raises(ValueError, match="no values"):
        plot_shots_curve(table.assign(image_auroc=np.nan))


def test_coreset_embedding_draws_a_uniform_background_and_the_picks_on_top():
    embedding = np.arange(20, dtype=float).reshape(10, 2)
    selected = np.zeros(10, bool)
    selected[[0, 1, 2]] = True
    background = np.zeros(10, bool)
    background[[2, 3, 4, 5]] = True  # one pick (2) is also part of the sample
    ax = plot_coreset_embedding(embedding, selected, background=background).axes[0]
    grey, orange = ax.collections
    assert np.array_equal(grey.get_offsets(), embedding[background])  # the whole sample, pick 2 included
    assert np.array_equal(orange.get_offsets(), embedding[selected])  # drawn last: on top
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["memory bank (uniform sample of 4)", "coreset (3)"]
    # without a background every point that is not a pick is grey
    grey, _ = plot_coreset_embedding(embedding, selected).axes[0].collections
    assert np.array_equal(grey.get_offsets(), embedding[~selected])
