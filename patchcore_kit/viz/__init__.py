"""Figures as pure functions returning a matplotlib Figure.

Each function takes data (arrays, tables) and returns a :class:`matplotlib.figure.Figure`; it
computes nothing expensive and writes no files, so notebooks, widgets, the report and the command
line draw the same figures. Pass ``ax=`` to draw into an existing axes. The rooms, by topic:

* :mod:`~patchcore_kit.viz.style` — labels and colours every figure shares;
* :mod:`~patchcore_kit.viz.features` — feature maps, receptive fields, patches in PCA space (notebook 01);
* :mod:`~patchcore_kit.viz.coreset` — the coreset in an embedding, on the image, its radius (notebook 02);
* :mod:`~patchcore_kit.viz.overlays` — masks and anomaly maps over images, the gallery (notebooks 00, 04);
* :mod:`~patchcore_kit.viz.scores` — score histograms, decision costs, the metrics table (notebook 05, report);
* :mod:`~patchcore_kit.viz.efficiency` — metrics against the number of training images (notebook 03, report).

What is measured elsewhere is only drawn here: receptive fields come from
:mod:`patchcore_kit.receptive_fields`, the paper's numbers from :mod:`patchcore_kit.paper`.

Example:
    >>> from patchcore_kit import viz
    >>> figure = viz.plot_score_histogram([0.1, 0.2, 0.9], [0, 0, 1], threshold=0.5)
    >>> type(figure).__name__, len(figure.axes)
    ('Figure', 1)
"""

from __future__ import annotations

from ..paper import PAPER_MVTEC_REFERENCE
from .coreset import plot_coreset_curves, plot_coreset_embedding, plot_coverage_2d, plot_patch_picks
from .efficiency import plot_sample_efficiency, plot_sample_efficiency_panels, plot_shots_curve
from .features import pca_rgb, plot_feature_maps, plot_patch_pca, plot_receptive_fields, position_colours
from .overlays import gallery_views, mask_outline, overlay_anomaly_map, paint_mask, plot_gallery
from .scores import plot_decision_costs, plot_metrics_table, plot_score_histogram
from .style import METHOD_LABELS, METRIC_LABELS, method_colours, metric_colour

__all__ = [
    "METHOD_LABELS",
    "METRIC_LABELS",
    "PAPER_MVTEC_REFERENCE",
    "mask_outline",
    "method_colours",
    "metric_colour",
    "overlay_anomaly_map",
    "paint_mask",
    "pca_rgb",
    "plot_coreset_curves",
    "plot_coreset_embedding",
    "plot_coverage_2d",
    "plot_decision_costs",
    "plot_feature_maps",
    "gallery_views",
    "plot_gallery",
    "plot_metrics_table",
    "plot_patch_pca",
    "plot_patch_picks",
    "plot_receptive_fields",
    "plot_sample_efficiency",
    "plot_sample_efficiency_panels",
    "plot_score_histogram",
    "plot_shots_curve",
    "position_colours",
]
