"""BlitCanvas repaints only where artists changed, and the picture equals a full draw, pixel for pixel.

The oracle is matplotlib itself: after every change the repainted picture is compared with a full
draw (``savefig``) of the same figure. The figure has what notebook 04's gallery has — images under
a heat map, titles, a colour bar with ticks, a line and an annotation on it — and a few more kinds
of artist (axis ticks and labels, a plotted line, a text inside an Axes).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.axis import Axis, Tick
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from patchcore_kit.widgets import figure_png
from patchcore_kit.widgets.blit import BlitCanvas, draw_order, rgba_png

DPI = 72


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def full_draw(figure) -> np.ndarray:
    return pixels(figure_png(figure, dpi=DPI))


def spy_on_draws(artists, monkeypatch) -> list:
    """A list that each of ``artists`` appends itself to when it is drawn."""
    drawn = []
    for artist in artists:
        monkeypatch.setattr(artist, "draw", lambda renderer, a=artist, f=artist.draw: (drawn.append(a), f(renderer)))
    return drawn


def assert_same_pixels(canvas: BlitCanvas, figure) -> None:
    shown, full = pixels(canvas.png()), full_draw(figure)
    assert shown.shape == full.shape
    wrong = np.argwhere(np.any(shown != full, axis=2))
    assert len(wrong) == 0, f"{len(wrong)} pixels differ from a full draw, e.g. (row, column) {wrong[:3].tolist()}"


@pytest.fixture
def figure():
    rng = np.random.default_rng(0)
    figure = Figure(figsize=(5, 3.4), dpi=DPI, layout="constrained")
    left, right, plot = figure.subplots(1, 3)
    for ax in (left, right):
        ax.imshow(rng.random((12, 12, 3)), interpolation="nearest")
        ax.imshow(rng.random((12, 12)), cmap="inferno", vmin=0, vmax=1, alpha=0.6, interpolation="bilinear")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("first\nsecond", fontsize=9)
    left.set_ylabel("row label")
    plot.plot(np.linspace(0, 1, 20), rng.random(20), linewidth=2)
    plot.text(0.5, 0.5, "inside", ha="center")
    plot.set_xlabel("x")
    bar = figure.colorbar(ScalarMappable(Normalize(0, 2), "inferno"), ax=[left, right], location="bottom", shrink=0.7)
    bar.ax.axvline(1.0, color="#c44e52", linewidth=2)
    bar.ax.annotate(
        "threshold", xy=(1.0, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2), textcoords="offset points"
    )
    figure.draw_without_rendering()
    figure.set_layout_engine(None)  # the layout stays as it is: what BlitCanvas requires
    return figure


def test_every_change_is_repainted_as_a_full_draw_paints_it(figure):
    left, right, plot, bar = figure.axes
    canvas = BlitCanvas(figure)
    canvas.draw()
    assert_same_pixels(canvas, figure)
    rng = np.random.default_rng(1)
    solids = [c for c in bar.collections if c.get_array() is not None]
    changes = [  # (what, the artists, what is done to each)
        ("image data", [left.images[0]], lambda a: a.set_data(rng.random((12, 12, 3)))),
        ("heat map colour map", [left.images[1], right.images[1]], lambda a: a.set_cmap("viridis")),
        ("title text (longer)", [right.title], lambda a: a.set_text("a much longer title\nthan before")),
        ("title text (shorter)", [right.title], lambda a: a.set_text("x\ny")),
        ("colour bar colours", solids, lambda a: a.set_cmap("jet")),
        ("threshold line moved", bar.lines, lambda a: a.set_xdata([0.25, 0.25])),
        ("line colour", bar.lines, lambda a: a.set_color("white")),
        ("annotation moved", bar.texts, lambda a: setattr(a, "xy", (1.75, 1.0))),
        ("plotted line", plot.lines, lambda a: a.set_ydata(rng.random(20))),
        ("text inside an Axes", plot.texts, lambda a: a.set_text("moved")),
    ]
    for name, artists, change in changes:
        assert artists, name
        for artist in artists:
            change(artist)
        assert canvas.redraw(artists) >= 1, name
        assert_same_pixels(canvas, figure)
    # several changes at once, some regions overlapping
    left.images[0].set_data(rng.random((12, 12, 3)))
    for line in bar.lines:
        line.set_xdata([2.0, 2.0])
    for text in bar.texts:
        text.xy = (2.0, 1.0)
    canvas.redraw([left.images[0], *bar.lines, *bar.texts])
    assert_same_pixels(canvas, figure)


def test_a_change_draws_only_the_artists_that_reach_its_region(figure, monkeypatch):
    left, right, plot, bar = figure.axes
    canvas = BlitCanvas(figure)
    canvas.draw()
    drawn = spy_on_draws(draw_order(figure), monkeypatch)
    right.title.set_text("new\ntitle")
    canvas.redraw([right.title])
    assert right.title in drawn
    tick_labels = [t.label1 for t in bar.xaxis.get_major_ticks()]
    assert not set(drawn) & {*tick_labels, *left.images, plot.lines[0], bar.xaxis.label, left.title}
    assert_same_pixels(canvas, figure)


def test_draw_order_is_the_order_of_a_full_draw(figure, monkeypatch):
    """Every artist that a full draw draws itself (not through its children), in the same order."""
    containers = (Figure, Axes, Axis, Tick)  # these draw their children
    called = spy_on_draws([a for a in figure.findobj() if not isinstance(a, containers)], monkeypatch)
    figure_png(figure, dpi=DPI)
    assert [id(a) for a in draw_order(figure)] == [id(a) for a in called]


def test_redraw_needs_a_first_draw(figure):
    with pytest.raises(RuntimeError, match="before the first"):
        BlitCanvas(figure).redraw([figure.axes[0].title])


def test_rgba_png_gives_back_the_pixels():
    rng = np.random.default_rng(2)
    opaque = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    opaque[..., 3] = 255
    translucent = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    for picture, mode in ((opaque, "RGB"), (translucent, "RGBA")):
        image = Image.open(io.BytesIO(rgba_png(picture)))
        assert image.mode == mode
        np.testing.assert_array_equal(np.asarray(image.convert("RGBA")), picture)
