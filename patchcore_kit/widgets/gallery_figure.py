"""Notebook 04's gallery as one figure kept between changes: controls update its artists in place.

Building a gallery from scratch (:func:`~patchcore_kit.widgets.gallery.render_gallery`) creates a
dozen axes and runs the constrained layout: most of a second, most of it matplotlib's. A change
of b, threshold, colour map or defect type needs none of that: the numbers come from the stored
results of the fit (:class:`~patchcore_kit.widgets.gallery.GalleryState`: neighbour distances,
normalised maps, metrics), and the picture only needs new data in the artists it already has —
titles for b, the thresholded row and the colour bar's line for the threshold, the heat maps'
colour map for the colour map, every panel's pixels for the defect type. The layout is computed
once, when the figure is built, and then kept.

The figure is rebuilt only when its shape changes (another number of columns, the threshold line
appearing or leaving the colour bar's range). Every update shows the same arrays, colours and
titles that a fresh :func:`render_gallery` of the same values shows (tested).

>>> view = GalleryFigure(state)                                                   # doctest: +SKIP
>>> figure = view.render("scratch", threshold=1.2, coreset_ratio=0.1, num_neighbors=9)   # doctest: +SKIP
>>> view.render("scratch", threshold=0.8, coreset_ratio=0.1, num_neighbors=9) is figure  # doctest: +SKIP
True
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..viz import gallery_views
from .gallery import GalleryState, gallery_panels, gallery_scale, render_gallery

_ROWS = ("image", "overlay", "thresholded")  # plot_gallery's rows when it is given thresholded masks


def _threshold_colour(cmap: str) -> str:
    return "#c44e52" if cmap != "jet" else "white"  # as plot_gallery draws the colour bar's line


class GalleryFigure:
    """A gallery of one :class:`GalleryState` whose :meth:`render` updates one figure in place.

    ``builds`` counts the figures built from scratch, ``updates`` the changes made in place.
    """

    def __init__(self, state: GalleryState, max_images: int = 4):
        self.state = state
        self.max_images = max_images
        self.figure: Figure | None = None
        self.builds = 0
        self.updates = 0
        self._shown: dict = {}

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
        if self.figure is None or self._shown["shape"] != shape:
            self.figure = render_gallery(
                self.state,
                defect_type,
                panels.threshold,
                coreset_ratio,
                num_neighbors,
                cmap,
                self.max_images,
                **settings,
            )
            # Lay it out once, then keep the positions: the constrained layout is the costliest part
            # of a draw, and nothing that an update changes needs a new one.
            self.figure.draw_without_rendering()
            self.figure.set_layout_engine(None)  # None, not "none": any engine costs savefig a second draw
            self.builds += 1
        else:
            self._update(panels, cmap)
            self.updates += 1
        self._shown = {
            "shape": shape,
            "chosen": panels.chosen,
            "maps": panels.maps,
            "threshold": panels.threshold,
            "cmap": cmap,
        }
        return self.figure

    def _axes(self, row: str, column: int):
        return self.figure.axes[_ROWS.index(row) * self._shown["shape"][0] + column]

    def _update(self, panels, cmap: str) -> None:
        shown = self._shown
        new_images = not np.array_equal(panels.chosen, shown["chosen"])
        new_maps = new_images or panels.maps is not shown["maps"] and not np.array_equal(panels.maps, shown["maps"])
        new_threshold = new_maps or panels.threshold != shown["threshold"]
        for column, index in enumerate(panels.chosen):
            mask = None if panels.masks is None else panels.masks[column]
            if new_images or new_threshold:
                views = gallery_views(self.state.images[index], mask, panels.flagged[column])
                if new_images:
                    self._axes("image", column).images[0].set_data(views["image"])
                    self._axes("overlay", column).images[0].set_data(views["overlay"])
                self._axes("thresholded", column).images[0].set_data(views["thresholded"])
            heat = self._axes("overlay", column).images[1]
            if new_maps:
                heat.set_data(np.asarray(panels.maps[column], dtype=np.float64))
            if cmap != shown["cmap"]:
                heat.set_cmap(cmap)
            self._axes("image", column).title.set_text(panels.titles[column])
        colour_bar = self.figure.axes[-1]
        if cmap != shown["cmap"]:
            for solids in colour_bar.collections:
                if solids.get_array() is not None:  # the colours; the bar's dividers have none
                    solids.set_cmap(cmap)
            for line in colour_bar.lines:
                line.set_color(_threshold_colour(cmap))
        if panels.threshold != shown["threshold"]:
            for line in colour_bar.lines:
                line.set_xdata([panels.threshold, panels.threshold])
            for label in colour_bar.texts:
                label.xy = (panels.threshold, label.xy[1])
