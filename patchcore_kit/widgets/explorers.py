"""The ipywidgets wiring: controls above a picture, every change re-rendered by a plain function.

Nothing here computes: each ``*_explorer`` connects controls to a render function of
:mod:`~patchcore_kit.widgets.coreset`, :mod:`~patchcore_kit.widgets.gallery`,
:mod:`~patchcore_kit.widgets.decisions` or :mod:`~patchcore_kit.widgets.sweep`, which the tests
call directly. ipywidgets is imported inside the functions, so the render functions work without it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import pandas as pd
from matplotlib.figure import Figure

from ..viz import METRIC_LABELS, PAPER_MVTEC_REFERENCE
from .coreset import CoresetState, render_coreset_view
from .decisions import DecisionState, decision_table, render_errors
from .gallery import GalleryState, gallery_metrics
from .gallery_figure import GalleryFigure
from .sweep import render_sweep


def figure_png(figure: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (what an ``ipywidgets.Image`` shows).

    Light compression: the bytes only travel to the browser on this machine, and zlib's default
    level took a quarter of an update's time (the same pixels either way).
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def _explorer(render: Callable[..., Figure | bytes], controls: dict, extra: Callable[..., str] | None = None):
    """Controls above a picture (and optionally an HTML table below); any change re-renders both.

    ``render`` returns a figure, or the PNG bytes of one (a view that repaints only what changed).
    """
    import ipywidgets as widgets

    picture = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="1100px"))
    table = widgets.HTML()

    def update(*_):
        values = {name: control.value for name, control in controls.items()}
        shown = render(**values)
        picture.value = shown if isinstance(shown, bytes) else figure_png(shown)
        if extra is not None:
            table.value = extra(**values)

    for control in controls.values():
        control.observe(update, names="value")
    update()
    rows = [widgets.HBox(list(controls.values())[i : i + 3]) for i in range(0, len(controls), 3)]
    return widgets.VBox(rows + [picture] + ([table] if extra is not None else []))


def coreset_explorer(state: CoresetState, ratios: Sequence[float] | None = None, variants: dict | None = None):
    """A ratio slider, a sampler choice (greedy / random) and a training-image chooser over :func:`render_coreset_view`.

    ``variants`` (``{name: CoresetState or a function returning one}``) adds a "bank" chooser:
    other patch features of the same training images (another patch size, stages, aggregation or
    border handling). A function is called the first time its name is chosen — a fit from the
    feature cache, a greedy search and a UMAP, tens of seconds — and its state is kept.
    """
    import ipywidgets as widgets

    if ratios is None:
        ratios = [r for r in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25) if r <= state.max_ratio + 1e-9]
    controls = {
        "ratio": widgets.SelectionSlider(
            options=list(ratios),
            value=ratios[len(ratios) // 2],
            description="coreset ratio",
            continuous_update=False,
            style={"description_width": "initial"},
        ),
        "image_index": widgets.Dropdown(options=list(range(len(state.images))), value=0, description="image"),
    }
    if state.random_order is not None:
        controls["sampler"] = widgets.ToggleButtons(options=["greedy", "random"], value="greedy", description="sampler")
    built = {}
    if variants:
        names = list(variants)
        built = {name: v for name, v in variants.items() if isinstance(v, CoresetState)}
        controls["bank"] = widgets.Dropdown(
            options=names,
            value=next((n for n in names if built.get(n) is state), names[0]),
            description="bank",
            style={"description_width": "initial"},
        )

    def render(bank=None, **values):
        chosen = state
        if bank is not None:
            if bank not in built:
                built[bank] = variants[bank]()
            chosen = built[bank]
        return render_coreset_view(chosen, **values)

    return _explorer(render, controls)


def gallery_explorer(
    state: GalleryState,
    ratios: Sequence[float] = (0.01, 0.1, 0.25),
    num_neighbors: Sequence[int] = (1, 3, 9),
    cmaps: Sequence[str] = ("inferno", "viridis", "jet", "gray"),
    max_images: int = 4,
    warm: bool = True,
    patch_sizes: Sequence[int] = (),
    stages: Sequence[Sequence[str]] = (),
    aggregations: Sequence[str] = (),
):
    """Controls for defect type, threshold, colour map, coreset ratio and neighbours over :func:`render_gallery`,
    with the per-defect metrics table below. ``warm`` fits every ratio up front.

    The picture is one :class:`~patchcore_kit.widgets.gallery_figure.GalleryFigure`: b, threshold,
    colour map and defect type (and a warmed ratio) answer from the stored results and update its
    artists, without a new fit, search or layout, and its PNG is repainted only where they changed.

    ``patch_sizes``, ``stages`` (pairs of stage names) and ``aggregations`` (values of PatchCore's
    ``aggregation``) add a control each when given: every new combination is fitted from the
    feature cache the first time it is chosen (new stages run the backbone once for them), and
    kept. The threshold is in units of the calibrated pixel threshold when the state is calibrated.
    """
    import ipywidgets as widgets

    if warm:
        state.warm(ratios, num_neighbors)
    style = {"description_width": "initial"}
    low, high, value = (0.25, 2.0, 1.0) if state.calibrated else (0.05, 0.95, 0.5)
    controls = {
        "defect_type": widgets.Dropdown(options=state.defect_choices, description="defect type", style=style),
        "threshold": widgets.FloatSlider(
            value=value,
            min=low,
            max=high,
            step=0.05,
            description="threshold" + (" (× nominal)" if state.calibrated else ""),
            continuous_update=False,
            style=style,
        ),
        "cmap": widgets.Dropdown(options=list(cmaps), description="colour map", style=style),
        "coreset_ratio": widgets.SelectionSlider(
            options=list(ratios),
            value=ratios[len(ratios) // 2],
            description="coreset ratio",
            continuous_update=False,
            style=style,
        ),
        "num_neighbors": widgets.SelectionSlider(
            options=list(num_neighbors),
            value=num_neighbors[-1],
            description="neighbours b",
            continuous_update=False,
            style=style,
        ),
    }
    if patch_sizes:
        default = state.params.get("patch_size", 3)
        controls["patch_size"] = widgets.Dropdown(
            options=list(patch_sizes),
            description="patch size p",
            value=default if default in patch_sizes else patch_sizes[0],
            style=style,
        )
    if stages:
        options = [(" + ".join(pair), tuple(pair)) for pair in stages]
        controls["layers"] = widgets.Dropdown(options=options, description="stages", style=style)
    if aggregations:
        controls["aggregation"] = widgets.Dropdown(options=list(aggregations), description="aggregation", style=style)

    view = GalleryFigure(state, max_images)  # one figure, updated and repainted in place by every change that allows it

    def render(defect_type, threshold, cmap, coreset_ratio, num_neighbors, **settings):
        return view.png(defect_type, threshold, coreset_ratio, num_neighbors, cmap, **settings)

    tables: dict = {}  # the table does not depend on the defect type or the colour map

    def metrics_html(defect_type, threshold, cmap, coreset_ratio, num_neighbors, **settings):
        key = (threshold, coreset_ratio, num_neighbors, *sorted(settings.items()))
        if key not in tables:
            table = gallery_metrics(state, coreset_ratio, num_neighbors, threshold, **settings)
            tables[key] = table.rename_axis(None).to_html()
        return tables[key]

    return _explorer(render, controls, extra=metrics_html)


def errors_explorer(
    state: DecisionState, budgets: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2), max_images: int = 4
):
    """A false-alarm budget slider and a misses / false-alarms switch over :func:`render_errors`,
    with the decision counts of that budget below."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    controls = {
        "budget": widgets.SelectionSlider(
            options=list(budgets),
            value=budgets[len(budgets) // 2],
            description="false-alarm budget",
            continuous_update=False,
            style=style,
        ),
        "kind": widgets.ToggleButtons(options=["misses", "false alarms"], value="misses", description="show"),
    }

    def counts_html(budget, kind):
        return decision_table(state, [budget]).round(3).to_html()

    return _explorer(lambda budget, kind: render_errors(state, budget, kind, max_images), controls, extra=counts_html)


def sweep_explorer(tables: dict[str, pd.DataFrame]):
    """Choose a results table (dataset / category), the methods and the metric over :func:`render_sweep`."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    names = list(tables)
    all_methods = sorted({m for t in tables.values() for m in t.method})
    metrics = [m for m in METRIC_LABELS if any(t[m].notna().any() for t in tables.values() if m in t)]
    controls = {
        "dataset": widgets.Dropdown(options=names, description="dataset", style=style),
        "methods": widgets.SelectMultiple(
            options=all_methods,
            value=tuple(all_methods),
            description="methods",
            rows=min(4, len(all_methods)),
            style=style,
        ),
        "metric": widgets.Dropdown(options=[(METRIC_LABELS[m], m) for m in metrics], description="metric", style=style),
        "paper": widgets.Checkbox(value=True, description="paper's MVTec AD values"),
    }

    def render(dataset, methods, metric, paper):
        table = tables[dataset]
        chosen = [m for m in methods if m in set(table.method)] or sorted(set(table.method))
        return render_sweep(table, chosen, metric, PAPER_MVTEC_REFERENCE if paper else None, title=dataset)

    return _explorer(render, controls)
