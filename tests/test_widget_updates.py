"""Notebook 04's explorer answers b, threshold, colour map and defect type from stored results.

Two promises (issue #14, item 5): such a change never runs the backbone, the nearest-neighbour
search or a fit; and what it shows equals a fresh computation — the figure updated in place has
the arrays, colours and titles of a gallery built from scratch, and the metrics table the
numbers measured from scratch; and the PNG the explorer shows, repainted only where artists
changed, has the pixels of a full draw of the figure. (How fast it is, is measured by
benchmarks/bench_widgets.py.)
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from patchcore_kit.features import FeatureExtractor
from patchcore_kit.metrics import mask_iou, per_defect_metrics
from patchcore_kit.neighbors import MemoryBankIndex
from patchcore_kit.patchcore import PatchCore
from patchcore_kit.widgets import (
    GalleryFigure,
    GalleryState,
    figure_png,
    gallery_explorer,
    gallery_metrics,
    render_gallery,
)


@pytest.fixture(scope="module")
def state(tiny_gravel_split, tmp_path_factory):
    return GalleryState(
        tiny_gravel_split, image_size=64, feature_cache=str(tmp_path_factory.mktemp("features")), calibrate=True
    ).warm([0.5], [1, 3])


@pytest.fixture
def no_new_work(monkeypatch):
    """Every way to new numbers — backbone, feature reading, search, fit, scoring — records its call."""
    calls = []

    def spy(name):
        def called(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called")

        return called

    monkeypatch.setattr(FeatureExtractor, "_compute", spy("backbone"))
    monkeypatch.setattr(FeatureExtractor, "iter_layer_maps", spy("features"))
    monkeypatch.setattr(MemoryBankIndex, "search", spy("search"))
    monkeypatch.setattr(PatchCore, "fit", spy("fit"))
    monkeypatch.setattr(PatchCore, "score_neighbors", spy("score_neighbors"))
    return calls


def drawn(figure) -> dict:
    """What a gallery figure shows, artist by artist: pixels, colour maps, titles, the colour bar's line."""
    panels = figure.axes[:-1]
    colour_bar = figure.axes[-1]
    return {
        "pixels": [np.asarray(image.get_array()) for ax in panels for image in ax.images],
        "cmaps": [image.get_cmap().name for ax in panels for image in ax.images],
        "titles": [ax.get_title() for ax in panels],
        "bar cmap": [solids.get_cmap().name for solids in colour_bar.collections if solids.get_array() is not None],
        "bar line": [(list(line.get_xdata()), to_hex(line.get_color())) for line in colour_bar.lines],
        "bar label at": [text.xy[0] for text in colour_bar.texts],
    }


def assert_same_picture(figure, fresh) -> None:
    shown, expected = drawn(figure), drawn(fresh)
    assert len(shown["pixels"]) == len(expected["pixels"])
    for a, b in zip(shown["pixels"], expected["pixels"]):
        np.testing.assert_array_equal(a, b)
    assert {k: v for k, v in shown.items() if k != "pixels"} == {k: v for k, v in expected.items() if k != "pixels"}


def test_no_refit_controls_update_the_same_figure_and_show_what_a_fresh_gallery_shows(state, no_new_work):
    defects = [d for d in state.defect_choices if d != "good"]
    view = GalleryFigure(state, max_images=2)
    values = {"defect_type": defects[0], "threshold": 1.0, "coreset_ratio": 0.5, "num_neighbors": 3, "cmap": "inferno"}
    figure = view.render(**values)
    for change in (
        {"num_neighbors": 1},
        {"threshold": 0.4},
        {"cmap": "jet"},
        {"defect_type": defects[1]},
        {"threshold": 1.7, "cmap": "gray", "num_neighbors": 3},
        {"defect_type": defects[-1]},
    ):
        values.update(change)
        assert view.render(**values) is figure, change  # updated in place
        assert_same_picture(figure, render_gallery(state, max_images=2, **values))
    assert view.builds == 1 and view.updates == 6
    assert no_new_work == []
    # another number of columns ("good" has two test images) builds a new figure, then updates it again
    values["defect_type"] = "good"
    assert view.render(**values) is not figure and view.builds == 2
    values["threshold"] = 0.6
    assert_same_picture(view.render(**values), render_gallery(state, max_images=2, **values))
    assert no_new_work == []


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_each_control_repaints_the_pixels_of_a_full_draw(state, no_new_work):
    defects = [d for d in state.defect_choices if d != "good"]
    view = GalleryFigure(state, max_images=2)
    values = {"defect_type": defects[0], "threshold": 1.0, "coreset_ratio": 0.5, "num_neighbors": 3, "cmap": "inferno"}
    view.png(**values)
    assert view.canvas.draws == 1
    for change in (
        {"num_neighbors": 1},
        {"threshold": 0.4},
        {"threshold": 1.6},
        {"cmap": "jet"},
        {"cmap": "gray"},
        {"defect_type": defects[1]},
        {"threshold": 0.7, "cmap": "viridis", "num_neighbors": 3, "defect_type": defects[-1]},
        {"defect_type": "good"},  # two columns: a second figure, drawn in full once
        {"threshold": 1.2},
        {"defect_type": defects[0]},  # back to the first figure: repainted, not rebuilt
    ):
        values.update(change)
        shown = pixels(view.png(**values))
        full = pixels(figure_png(view.figure, dpi=view.dpi))
        assert shown.shape == full.shape, change
        assert np.array_equal(shown, full), (change, int(np.any(shown != full, axis=2).sum()))
        assert_same_picture(view.figure, render_gallery(state, max_images=2, **values))
    assert view.builds == 2 and view.canvas.draws == 1 and view.canvas.regions > 0
    assert no_new_work == []


def test_the_explorer_answers_b_threshold_colour_map_and_defect_type_without_new_work(state, no_new_work):
    box = gallery_explorer(state, ratios=(0.5,), num_neighbors=(1, 3))
    controls = {c.description.split(" (")[0]: c for row in box.children[:-2] for c in row.children}
    picture, table = box.children[-2], box.children[-1]
    seen = {bytes(picture.value)}
    for name, value in (
        ("neighbours b", 1),
        ("threshold", 0.5),
        ("colour map", "gray"),
        ("defect type", controls["defect type"].options[1]),
    ):
        controls[name].value = value
        seen.add(bytes(picture.value))
    assert len(seen) == 5  # every change drew something new
    assert no_new_work == []
    assert "IoU @ 0.50" in table.value


def test_stored_metrics_equal_metrics_measured_from_scratch(state):
    threshold = 0.7
    for b in (1, 3):
        table = gallery_metrics(state, coreset_ratio=0.5, num_neighbors=b, threshold=threshold)
        scores, maps = state.result(0.5, b)
        fresh = pd.DataFrame(per_defect_metrics(state.labels, state.defect_types, scores, state.masks, maps)).T
        for column, name in (
            ("image_auroc", "image AUROC"),
            ("pixel_auroc", "pixel AUROC"),
            ("aupro", "AUPRO (FPR ≤ 0.3)"),
        ):
            np.testing.assert_allclose(table[name].to_numpy(), fresh[column].astype(float).round(3).to_numpy())
        predicted = maps / state.model(0.5).pixel_threshold_ > threshold
        iou = [mask_iou(state.masks[state.defect_types == d], predicted[state.defect_types == d]) for d in table.index]
        np.testing.assert_allclose(table[f"IoU @ {threshold:.2f}"].to_numpy(), np.round(np.array(iou, float), 3))
