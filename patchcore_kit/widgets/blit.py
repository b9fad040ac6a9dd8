"""Redraw only what changed: an Agg picture of a figure whose layout is frozen, updated region by region.

A full draw of notebook 04's gallery costs most of a tenth of a second (every axis, tick label and
title goes through the text engine again), while a change of threshold touches one row of images
and the colour bar. :class:`BlitCanvas` draws the figure once, then, for the artists an update
changed, repaints only the pixels they can reach — the documented blitting idea of matplotlib
(``copy_from_bbox``/``restore_region``/``draw_artist``), made exact:

1. the figure's draw order is written out once, as matplotlib's ``Figure.draw``/``Axes.draw``/
   ``Axis.draw`` walk it (figure patch; each Axes' patch, then its children by z-order, an axis
   as its drawn ticks' lines and labels, then its label), with each artist's *ink box*: the
   pixels it can reach (its clip box when clipped, else its extent, widened by its line width
   and two pixels of anti-aliasing);
2. an update's *dirty regions* are the ink boxes of the changed artists before and after the
   change;
3. each region is cleared and every artist whose ink box meets it is drawn again, in draw order,
   and the pixels outside the region are put back as they were.

Each region then holds what a full draw puts there: the same artists, drawn in the same order
onto the same pixels (Agg blends pixel by pixel). The tests compare every update with a full draw
of the same state, pixel for pixel. What costs is what changed — the static frames, colour bar
ticks and labels, and untouched panels are not drawn again.

The figure's layout must stay as it was at :meth:`BlitCanvas.draw` (positions, limits, ticks):
only data, colours, text and positions of the changed artists may change; call :meth:`draw`
again after anything else.

>>> canvas = BlitCanvas(figure)                          # doctest: +SKIP
>>> canvas.draw(); first = canvas.png()                  # doctest: +SKIP
>>> line.set_color("red"); canvas.redraw([line])         # doctest: +SKIP
>>> canvas.png() == figure_png(figure)                   # the same pixels  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator
from PIL import Image

_EVERYWHERE = (-np.inf, -np.inf, np.inf, np.inf)
_ANTIALIAS_PX = 2.0  # anti-aliased edges and glyph bitmaps reach at most a pixel past an extent


def _axis_order(axis: Axis) -> list[Artist]:
    """The artists :meth:`Axis.draw` draws, in its order: the ticks inside the view, label, offset text."""
    if not axis.get_visible():
        return []
    ticks = []
    for locator, locs, get_ticks in (
        (axis.get_major_locator(), axis.get_majorticklocs, axis.get_major_ticks),
        (axis.get_minor_locator(), axis.get_minorticklocs, axis.get_minor_ticks),
    ):
        if not isinstance(locator, NullLocator):
            ticks += get_ticks(len(locs()))
    low, high = sorted(axis.get_transform().transform(np.asarray(axis.get_view_interval(), float)))
    slack = (high - low) * 1e-10  # the tolerance Axis.draw admits ticks with
    drawn = [t for t in ticks if low - slack <= axis.get_transform().transform(t.get_loc()) <= high + slack]
    parts = [[t.gridline, t.tick1line, t.tick2line, t.label1, t.label2] for t in drawn if t.get_visible()]
    return [artist for part in parts for artist in part] + [axis.label, axis.offsetText]


def _axes_order(ax: Axes) -> list[Artist]:
    """The artists :meth:`Axes.draw` draws, in its order: the patch, then the children by z-order."""
    if not ax.get_visible():
        return []
    if ax.get_rasterization_zorder() is not None:
        raise ValueError("BlitCanvas: rasterised Axes are not supported")
    framed = ax.axison and ax.get_frame_on()
    artists = [a for a in ax.get_children() if a is not ax.patch and not a.get_animated()]
    if not framed:
        artists = [a for a in artists if a not in ax.spines.values()]
    if not ax.axison:
        artists = [a for a in artists if not isinstance(a, Axis)]
    order = [ax.patch] if framed else []
    for artist in sorted(artists, key=lambda a: a.get_zorder()):
        if isinstance(artist, Axis):
            order += _axis_order(artist)
        else:
            order += _axes_order(artist) if isinstance(artist, Axes) else [artist]  # an inset Axes too
    return order


def draw_order(figure: Figure) -> list[Artist]:
    """Every artist a full draw of ``figure`` draws, in the order it draws them (Axes and axes flattened)."""
    children = [a for a in figure.get_children() if a is not figure.patch and not a.get_animated()]
    order = [figure.patch]
    for artist in sorted(children, key=lambda a: a.get_zorder()):
        order += _axes_order(artist) if isinstance(artist, Axes) else [artist]
    return order


def ink_box(artist: Artist, renderer) -> tuple[float, float, float, float]:
    """Pixels (display units: x0, y0, x1, y1) that drawing ``artist`` can change; everywhere when unknown."""
    try:
        clip = artist.get_clip_box() if artist.get_clip_on() else None
        if clip is not None:  # Agg clips to this box, rounded to whole pixels: nothing reaches past it
            x0, y0, x1, y1 = clip.extents
            return (min(x0, x1) - 1, min(y0, y1) - 1, max(x0, x1) + 1, max(y0, y1) + 1)
        if isinstance(artist, Patch):  # its outline (a Spine's window extent also measures the ticks)
            box = artist.get_path().get_extents(artist.get_transform())
        else:
            box = artist.get_window_extent(renderer)
        x0, y0, x1, y1 = box.extents
    except Exception:  # an artist that cannot say where it draws is redrawn with every region
        return _EVERYWHERE
    if not np.all(np.isfinite([x0, y0, x1, y1])):
        return _EVERYWHERE
    width = 0.0  # line widths, marker sizes and edges (points) reach past the geometry
    for name in ("get_linewidth", "get_markersize", "get_markeredgewidth"):
        value = getattr(artist, name, None)
        if value is not None:
            width += float(np.max(value(), initial=0.0))
    pad = _ANTIALIAS_PX + width * renderer.dpi / 72.0
    return (min(x0, x1) - pad, min(y0, y1) - pad, max(x0, x1) + pad, max(y0, y1) + pad)


def _merge(boxes: list[tuple]) -> list[tuple]:
    """Overlapping boxes joined into their union, until none overlap."""
    merged: list[tuple] = []
    for box in boxes:
        while True:
            hit = next((m for m in merged if not _apart(m, box)), None)
            if hit is None:
                break
            merged.remove(hit)
            box = (min(box[0], hit[0]), min(box[1], hit[1]), max(box[2], hit[2]), max(box[3], hit[3]))
        merged.append(box)
    return merged


def _apart(a, b) -> bool:
    return a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def _pixel_box(box, shape) -> tuple[int, int, int, int] | None:
    """A display box as whole pixels of the buffer ``(x0, top, x1, bottom)``, rows from the top; None if empty."""
    height, width = shape[:2]
    x0, x1 = max(int(np.floor(box[0])), 0), min(int(np.ceil(box[2])), width)
    top, bottom = max(height - int(np.ceil(box[3])), 0), min(height - int(np.floor(box[1])), height)
    return (x0, top, x1, bottom) if x0 < x1 and top < bottom else None


class BlitCanvas:
    """One figure's Agg picture (at the figure's dpi), kept and repainted where artists changed.

    ``draws`` counts full draws, ``regions`` the regions repainted since (for tests and benchmarks).
    """

    def __init__(self, figure: Figure):
        self.figure = figure
        self.draws = 0
        self.regions = 0
        self._renderer: RendererAgg | None = None

    def draw(self) -> None:
        """A full draw (matplotlib's own), then the draw order and every artist's ink box, kept."""
        width, height = self.figure.bbox.size  # as FigureCanvasAgg sizes its renderer
        self._renderer = RendererAgg(width, height, self.figure.dpi)
        self._renderer.clear()
        self.figure.draw(self._renderer)
        self._order = draw_order(self.figure)
        self._boxes = np.array([ink_box(artist, self._renderer) for artist in self._order])
        self._index = {id(artist): i for i, artist in enumerate(self._order)}
        self.draws += 1

    def redraw(self, changed: Iterable[Artist]) -> int:
        """Repaint where the ``changed`` artists were and now are; returns the number of regions.

        Changed artists that the figure does not draw (an invisible Axes' children) change nothing.
        """
        if self._renderer is None:
            raise RuntimeError("BlitCanvas.redraw before the first BlitCanvas.draw")
        dirty = []
        for artist in changed:
            i = self._index.get(id(artist))
            if i is not None:
                before, self._boxes[i] = tuple(self._boxes[i]), ink_box(artist, self._renderer)
                dirty += [before, tuple(self._boxes[i])]
        pixels = np.asarray(self._renderer.buffer_rgba())
        regions = [r for r in (_pixel_box(box, pixels.shape) for box in _merge(dirty)) if r is not None]
        if regions:
            self._repaint(pixels, regions)
        self.regions += len(regions)
        return len(regions)

    def _repaint(self, pixels: np.ndarray, regions: list[tuple]) -> None:
        """Clear the regions, draw every artist that reaches one of them, and keep only the regions.

        One pass for all regions: an artist that does not reach a region leaves its pixels alone,
        so each region ends up with the artists that reach it, in draw order.
        """
        height = pixels.shape[0]
        meets = np.zeros(len(self._order), bool)
        for x0, top, x1, bottom in regions:
            box = (x0, height - bottom, x1, height - top)  # display units, y upwards
            meets |= ~(
                (self._boxes[:, 2] < box[0])
                | (self._boxes[:, 0] > box[2])
                | (self._boxes[:, 3] < box[1])
                | (self._boxes[:, 1] > box[3])
            )
        before = pixels.copy()
        for x0, top, x1, bottom in regions:
            pixels[top:bottom, x0:x1] = 0  # as renderer.clear() leaves it before a full draw
        for i in np.flatnonzero(meets):
            self._order[i].draw(self._renderer)
        inside = [pixels[top:bottom, x0:x1].copy() for x0, top, x1, bottom in regions]
        pixels[...] = before  # the artists drew outside the regions too: undo that
        for (x0, top, x1, bottom), region in zip(regions, inside):
            pixels[top:bottom, x0:x1] = region

    def rgba(self) -> np.ndarray:
        """The picture as an ``(H, W, 4)`` uint8 array (a copy)."""
        return np.asarray(self._renderer.buffer_rgba()).copy()

    def png(self, compress_level: int = 1) -> bytes:
        """The picture as PNG bytes (:func:`rgba_png`)."""
        return rgba_png(np.asarray(self._renderer.buffer_rgba()), compress_level)


def rgba_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """An ``(H, W, 4)`` uint8 picture as PNG bytes, RGB when it is opaque everywhere (a quarter less to encode).

    zlib level 1: the bytes only travel to a browser on this machine, and the default level took
    a quarter of an update's time. Decoded, the PNG gives back ``pixels`` exactly (alpha 255 when RGB).
    """
    height, width = pixels.shape[:2]
    if np.all(pixels[..., 3] == 255):
        image = Image.frombytes("RGB", (width, height), np.ascontiguousarray(pixels), "raw", "RGBX")
    else:
        image = Image.fromarray(np.ascontiguousarray(pixels), "RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=compress_level)
    return buffer.getvalue()
