"""Interactive explorers for the notebooks: plain render functions, thin ipywidgets wiring.

Every control in notebooks 02–05 calls a *render function*: ``(state, control values) -> Figure``.
The expensive work happens once, when the state is built (backbone features come from the
feature cache, fits are memoised), so moving a control only re-scores or re-draws. Tests call the
render functions directly; the ``*_explorer`` functions only connect ipywidgets to them.

* 02, the coreset (:mod:`.coreset`): :func:`coreset_state` -> :func:`render_coreset_view` <- :func:`coreset_explorer`
* 03, the sweep (:mod:`.sweep`): result tables -> :func:`render_sweep` <- :func:`sweep_explorer`
* 04, the gallery (:mod:`.gallery`, :mod:`.gallery_figure`): :class:`GalleryState` -> :func:`render_gallery`,
  :func:`gallery_metrics`, :class:`GalleryFigure` (one figure updated in place, its PNG repainted only
  where artists changed: :mod:`.blit`) <- :func:`gallery_explorer`
* 05, decisions (:mod:`.decisions`): :class:`DecisionState` -> :func:`render_errors`, :func:`decision_table`
  <- :func:`errors_explorer`

The rooms: :mod:`.umap_cache` (a seeded UMAP kept on disk), :mod:`.fits` (memoised fits, the test
set scored once per fit), :mod:`.blit` (a figure's picture repainted where artists changed, the
same pixels as a full draw), the four notebooks' states and render functions, and :mod:`.explorers`
(the ipywidgets wiring).

>>> state = coreset_state(features, grid=(16, 16), images=train_images)   # doctest: +SKIP
>>> render_coreset_view(state, ratio=0.05)                                # a Figure   # doctest: +SKIP
>>> coreset_explorer(state)                                               # a widget   # doctest: +SKIP
"""

from .coreset import CoresetState, coreset_state, patch_positions, render_coreset_view
from .decisions import DecisionState, decision_table, render_errors
from .explorers import coreset_explorer, errors_explorer, figure_png, gallery_explorer, sweep_explorer
from .fits import MemoisedFits
from .gallery import GalleryState, gallery_metrics, gallery_panels, render_gallery
from .gallery_figure import GalleryFigure
from .sweep import render_sweep
from .umap_cache import umap_embedding

__all__ = [
    "CoresetState",
    "coreset_state",
    "patch_positions",
    "render_coreset_view",
    "coreset_explorer",
    "render_sweep",
    "sweep_explorer",
    "MemoisedFits",
    "GalleryState",
    "render_gallery",
    "gallery_metrics",
    "gallery_panels",
    "GalleryFigure",
    "gallery_explorer",
    "DecisionState",
    "decision_table",
    "render_errors",
    "errors_explorer",
    "figure_png",
    "umap_embedding",
]
