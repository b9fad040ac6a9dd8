"""The demo report: PatchCore on the built-in demo data, as one HTML page a person can look at.

:func:`run_demo` (the ``patchcore-kit demo`` command) builds the demo dataset if it is not there
yet (:mod:`patchcore_kit.data.demo`), fits one PatchCore per category with the offline backbone,
evaluates it on the held-out test tiles and writes into ``output``:

* ``report.html`` — one self-contained page (inline CSS, figures embedded as data URIs, nothing
  fetched from anywhere): the metrics table, score histograms with the ``predict`` threshold, a
  small sample-efficiency curve and, for every category and defect type, a gallery of images,
  ground truth, anomaly maps and thresholded maps;
* ``metrics.json`` and ``metrics.csv`` — the numbers behind it;
* ``figures/*.png`` — every figure as a file;
* ``feature_cache/`` — backbone features, so a second run (and the shots curve) skips the backbone.

One setting serves every category (:data:`DEMO_MODEL`); nothing is tuned on the test set.
``fast=True`` runs a tiny version (two categories, a handful of 64-pixel tiles) in seconds, for
tests and CI.

Example:
    >>> html = run_demo("runs/demo")                       # doctest: +SKIP
    >>> html = run_demo("/tmp/demo", fast=True)            # doctest: +SKIP

The rooms: :mod:`~patchcore_kit.report.results` (the demo's settings and sizes, one result per
category), :mod:`~patchcore_kit.report.demo` (the run itself), :mod:`~patchcore_kit.report.files`
(figures, ``metrics.json``/``.csv``), :mod:`~patchcore_kit.report.page` (the HTML; its frame and
CSS are the template ``templates/page.html``, shipped with the package) and
:mod:`~patchcore_kit.report.model_page` (a page about one model on your own images, notebook 06).
"""

from __future__ import annotations

from .demo import run_demo, shots_curve
from .files import category_gallery, format_table, gallery_samples, write_figures, write_metrics
from .model_page import write_model_report
from .page import data_uri, html_page, render_html
from .results import DEMO_MODEL, FAST, FULL, CategoryResult, DemoSize

__all__ = [
    "DEMO_MODEL",
    "FAST",
    "FULL",
    "CategoryResult",
    "DemoSize",
    "category_gallery",
    "data_uri",
    "format_table",
    "gallery_samples",
    "html_page",
    "render_html",
    "run_demo",
    "shots_curve",
    "write_figures",
    "write_metrics",
    "write_model_report",
]
