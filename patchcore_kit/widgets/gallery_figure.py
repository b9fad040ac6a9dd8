"""Notebook 04's gallery as one figure kept between changes: controls update its artists in place.

Building a gallery from scratch (:func:`~patchcore_kit.widgets.gallery.render_gallery`) creates a
dozen axes and runs the constrained layout: most of a second, most of it matplotlib's. A change
of b, threshold, colour map or defect type needs none of that: the numbers come from the stored
results of the fit (:class:`~patchcore_kit.widgets.gallery.GalleryState`: neighbour distances,
normalised maps, metrics), and the picture only needs new data in the artists it already has —
titles for b, the thresholded row and the colour bar's line for the threshold, the heat maps'
colour map for the colour map, every panel's pixels for the defect type. The layout is computed
once, when the figure is built, and then kept.

Nor does the picture need a full draw: :meth:`GalleryFigure.png` repaints only the pixels the
changed artists reach (:class:`~patchcore_kit.widgets.blit.BlitCanvas`) — a row of panels and
the colour bar for the threshold, two titles for b — and gives the same pixels as a full draw.

A figure is built for each shape (number of columns, threshold line inside or outside the colour
bar's range) the first time it is needed and kept, so coming back to a shape is an update too.
Every update shows the same arrays, colours and titles that a fresh :func:`render_gallery` of the
same values shows, and its PNG the pixels of a full draw (tested).

>>> view = GalleryFigure(state)                                                   # doctest: +SKIP
>>> figure = view.render("scratch", threshold=1.2, coreset_ratio=0.1, num_neighbors=9)   # doctest: +SKIP
>>> view.render("scratch", threshold=0.8, coreset_ratio=0.1, num_neighbors=9) is figure  # doctest: +SKIP
True
>>> png = view.png("scratch", threshold=1.0, coreset_ratio=0.1, num_neighbors=9)   # repaints the changes  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from ..viz import gallery_views
from .blit import BlitCanvas
from .gallery import GalleryState, gallery_panels, gallery_scale, render_gallery

_ROWS = ("image", "overlay", "thresholded")  # plot_gallery's rows when it is given thresholded masks


def _threshold_colour(cmap: str) -> str:
    return "#c44e52" if cmap != "jet" else "white"  # as plot_gallery draws the colour bar's line


@dataclass
class _Picture:
    """One built figure, what it shows, and the artists changed since its canvas was last painted."""

    figure: Figure
    canvas: BlitCanvas
    shown: dict
    changed: list | None = field(default=None)  # None: never painted (the next png() draws it in full)


class GalleryFigure:
    """A gallery of one :class:`GalleryState` whose :meth:`render` updates a figure in place.

    ``builds`` counts the figures built from scratch, ``updates`` the changes made in place;
    :meth:`png` gives the picture at ``dpi``, repainting only what changed.
    """

    def __init__(self, state: GalleryState, max_images: int = 4, dpi: float = 90):
        self.state = state
        self.max_images = max_images
        self.dpi = dpi
        self.builds = 0
        self.updates = 0
        self._pictures: dict[tuple, _Picture] = {}  # one per shape, kept
        self._current: _Picture | None = None

    @property
    def figure(self) -> Figure | None:
        """The figure shown now (None before the first :meth:`render`)."""
        return None if self._current is None else self._current.figure

    @property
    def canvas(self) -> BlitCanvas | None:
        """The figure's picture, repainted by :meth:`png` (None before the first :meth:`render`)."""
        return None if self._current is None else self._current.canvas

    def render(
        self,
        defect_type: str,
        threshold: float | None = None,
        coreset_ratio: float = 0.1,
        num_neighbors: int = 9,
        cmap: str = "inferno",
        **settings,
    ) -> Figure:
        """The gallery of these values (the arguments of :func:`render_gallery`); the same figure when it can be."""
        panels = gallery_panels(
            self.state, defect_type, threshold, coreset_ratio, num_neighbors, self.max_images, **settings
        )
        low, high, _ = gallery_scale(self.state)
        shape = (len(panels.chosen), low <= panels.threshold <= high)
        picture = self._pictures.get(shape)
        if picture is None:
            figure = render_gallery(
                self.state,
                defect_type,
                panels.threshold,
                coreset_ratio,
                num_neighbors,
                cmap,
                self.max_images,
                **settings,
            )
            # Lay it out once, at the dpi it is shown at, then keep the positions: the constrained
            # layout is the costliest part of a draw, and nothing that an update changes needs a new one.
            figure.set_dpi(self.dpi)
            figure.draw_without_rendering()
            figure.set_layout_engine(None)  # None, not "none": any engine costs savefig a second draw
            picture = self._pictures[shape] = _Picture(figure, BlitCanvas(figure), {})
            self.builds += 1
        else:
            changed = self._update(picture, panels, cmap)
            if picture.changed is not None:
                picture.changed += changed
            self.updates += 1
        picture.shown = {
            "columns": shape[0],
            "chosen": panels.chosen,
            "maps": panels.maps,
            "threshold": panels.threshold,
            "cmap": cmap,
        }
        self._current = picture
        return picture.figure

    def png(self, *args, **kwargs) -> bytes:
        """The PNG of :meth:`render`'s gallery (same arguments), repainting only the changed artists.

        The same pixels as a full draw of the figure, ``figure_png(view.render(...), dpi=view.dpi)``
        (tested), in a fraction of the time: see :mod:`~patchcore_kit.widgets.blit`.
        """
        self.render(*args, **kwargs)
        picture = self._current
        if picture.changed is None:
            picture.canvas.draw()
        else:
            picture.canvas.redraw(picture.changed)
        picture.changed = []
        return picture.canvas.png()

    @staticmethod
    def _axes(picture: _Picture, row: str, column: int):
        return picture.figure.axes[_ROWS.index(row) * picture.shown["columns"] + column]

    def _update(self, picture: _Picture, panels, cmap: str) -> list:
        """Give the artists the values of ``panels`` and ``cmap``; returns the artists it changed."""
        shown = picture.shown
        changed = []
        new_images = not np.array_equal(panels.chosen, shown["chosen"])
        new_maps = new_images or panels.maps is not shown["maps"] and not np.array_equal(panels.maps, shown["maps"])
        new_threshold = new_maps or panels.threshold != shown["threshold"]
        for column, index in enumerate(panels.chosen):
            mask = None if panels.masks is None else panels.masks[column]
            if new_images or new_threshold:
                views = gallery_views(self.state.images[index], mask, panels.flagged[column])
                rows = ("image", "overlay", "thresholded") if new_images else ("thresholded",)
                for row in rows:
                    image = self._axes(picture, row, column).images[0]
                    image.set_data(views[row])
                    changed.append(image)
            heat = self._axes(picture, "overlay", column).images[1]
            if new_maps:
                heat.set_data(np.asarray(panels.maps[column], dtype=np.float64))
            if cmap != shown["cmap"]:
                heat.set_cmap(cmap)
            if new_maps or cmap != shown["cmap"]:
                changed.append(heat)
            title = self._axes(picture, "image", column).title
            if title.get_text() != panels.titles[column]:
                title.set_text(panels.titles[column])
                changed.append(title)
        colour_bar = picture.figure.axes[-1]
        if cmap != shown["cmap"]:
            for solids in colour_bar.collections:
                if solids.get_array() is not None:  # the colours; the bar's dividers have none
                    solids.set_cmap(cmap)
                    changed.append(solids)
            for line in colour_bar.lines:
                line.set_color(_threshold_colour(cmap))
                changed.append(line)
        if panels.threshold != shown["threshold"]:
            for line in colour_bar.lines:
                line.set_xdata([panels.threshold, panels.threshold])
                changed.append(line)
            for label in colour_bar.texts:
                label.xy = (panels.threshold, label.xy[1])
                changed.append(label)
        return changed
