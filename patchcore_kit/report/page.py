"""The HTML pages: one self-contained file each, the page's frame and style read from ``templates/page.html``.

Figures are embedded as ``data:`` URIs and the CSS is inline, so a page needs no other file and
fetches nothing. The frame (head, style, header) is a :class:`string.Template` shipped with the
package; the sections are written here.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd
from PIL import Image

from ..viz import metric_colour
from .results import CategoryResult

__all__ = ["data_uri", "html_page", "render_html"]


@functools.cache
def _template() -> Template:
    return Template((resources.files(__package__) / "templates" / "page.html").read_text(encoding="utf-8"))


def html_page(title: str, subtitle: str, body: str) -> str:
    """A whole page: the template's frame and style around ``body``; ``title`` and ``subtitle`` are HTML.

    >>> page = html_page("A &amp; B", "one line", "<main>hello</main>")
    >>> page.startswith("<!DOCTYPE html>"), "<title>A &amp; B</title>" in page, page.rstrip().endswith("</html>")
    (True, True, True)
    """
    return _template().substitute(title=title, subtitle=subtitle, body=body)


def data_uri(path: Path, jpeg_quality: int | None = None) -> str:
    """A PNG file as a ``data:`` URI, so the page needs no other file.

    With ``jpeg_quality`` the image is re-encoded as JPEG first: photographs (the galleries) then
    take a fifth of the bytes, which keeps the page a few megabytes. Line art stays PNG.
    """
    if jpeg_quality is None:
        return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buffer, format="JPEG", quality=jpeg_quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value, pattern: str = "{:.3f}") -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else pattern.format(value)


def _cell(value, pattern: str = "{:.3f}", tint: bool = False) -> str:
    style = ""
    if tint and value is not None:
        r, g, b, _ = metric_colour(value)
        style = f' style="background:rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})"'
    return f"<td{style}>{_fmt(value, pattern)}</td>"


def _metrics_html(table: pd.DataFrame) -> str:
    head = (
        "<tr><th>category</th><th>image AUROC</th><th>pixel AUROC</th><th>AUPRO</th><th>train</th>"
        "<th>test</th><th>fit (s)</th><th>score (s)</th><th>anomalous caught</th><th>nominal flagged</th></tr>"
    )
    rows = []
    for name, r in table.iterrows():
        rows.append(
            f'<tr><td><a href="#{html.escape(str(name))}">{html.escape(str(name))}</a></td>'
            + _cell(r.image_auroc, tint=True)
            + _cell(r.pixel_auroc, tint=True)
            + _cell(r.aupro, tint=True)
            + _cell(int(r.n_train), "{}")
            + _cell(int(r.n_test), "{}")
            + _cell(r.fit_s, "{:.1f}")
            + _cell(r.infer_s, "{:.1f}")
            + _cell(r.caught, "{:.0%}")
            + _cell(r.false_alarms, "{:.0%}")
            + "</tr>"
        )
    return f'<table class="metrics">{head}{"".join(rows)}</table>'


def _per_defect_html(per_defect: dict) -> str:
    head = "<tr><th>defect type</th><th>images</th><th>image AUROC</th><th>pixel AUROC</th><th>AUPRO</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>{_cell(m['n_images'], '{}')}{_cell(m['image_auroc'], tint=True)}"
        f"{_cell(m['pixel_auroc'], tint=True)}{_cell(m['aupro'], tint=True)}</tr>"
        for name, m in per_defect.items()
    )
    return f'<table class="metrics">{head}{rows}</table>'


def _img(path: Path, alt: str, jpeg_quality: int | None = None) -> str:
    return f'<img src="{data_uri(path, jpeg_quality)}" alt="{html.escape(alt)}">'


def _shots_html(shots_table: pd.DataFrame) -> str:
    """Image AUROC by number of training images (rows) and category (columns)."""
    wide = shots_table.pivot_table(index="shots", columns="category", values="image_auroc", aggfunc="mean")
    head = "<tr><th>training images</th>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in wide.columns) + "</tr>"
    rows = "".join(
        f"<tr><td>{shots}</td>" + "".join(_cell(v, tint=True) for v in row) + "</tr>" for shots, row in wide.iterrows()
    )
    return f'<table class="metrics">{head}{rows}</table>'


def render_html(
    table: pd.DataFrame,
    results: Sequence[CategoryResult],
    shots_table: pd.DataFrame,
    images: dict[str, Path],
    settings: dict,
    machine: dict,
    seconds: float,
) -> str:
    """The report page as one string: inline CSS, every figure embedded, no external resource."""
    created = datetime.now().strftime("%Y-%m-%d %H:%M")
    layers = " + ".join(settings["layers"])
    lead = (
        f"PatchCore with {settings['backbone']} ({layers}), {settings['image_size']} px, "
        f"coreset {settings['coreset_ratio']:.0%}, one setting for every category · "
        f"{created} · {seconds:.0f} s on {machine['torch_threads']} CPU threads"
    )
    nav = "".join(f'<a href="#{html.escape(r.name)}">{html.escape(r.name)}</a>' for r in results)
    parts = [
        f"<nav><a href='#results'>results</a><a href='#scores'>scores</a><a href='#shots'>training images</a>{nav}</nav>",
        "<main>",
        *(
            [
                "<section class='warn'><b>FAST mode</b>: tiny data (a few 64-pixel tiles per category) to check that "
                "everything runs. The numbers say nothing about PatchCore; run <code>patchcore-kit demo</code> for the "
                "real report.</section>"
            ]
            if settings["fast"]
            else []
        ),
        "<section id='results'><h2>Results</h2>",
        "<p class='note'>Each category: a model fitted on nominal tiles only, tested on held-out nominal tiles and "
        "six kinds of synthetic defect. AUROC 1.0 = every anomalous image (pixel) scores above every nominal one. "
        "AUPRO weighs every defect region equally, up to a false-positive rate of 30 %. "
        "<i>Caught</i> and <i>flagged</i> are what <code>predict</code> does with the threshold it learned from "
        f"nominal training images alone (the {settings['threshold_quantile']:.0%} quantile of leave-one-out scores).</p>",
        _metrics_html(table),
        "</section>",
        "<section id='scores'><h2>Image scores</h2><p class='note'>Nominal against anomalous test images; "
        "the dashed line is the <code>predict</code> threshold.</p><div class='grid'>",
        *(f"<div class='card'>{_img(images[f'scores_{r.name}'], f'scores {r.name}')}</div>" for r in results),
        "</div></section>",
        "<section id='shots'><h2>How many training images does PatchCore need?</h2><div class='two'>",
        _img(images["sample_efficiency"], "image AUROC against the number of training images"),
        "<div><p class='note'>Image AUROC of the same model and settings fitted on 1, 2, 5, ... training images "
        "(a seeded draw; smaller sets are subsets of larger ones), scored on the full test set. The backbone runs "
        "once per image; every fit after that reads cached features. One draw per point: with a test set this "
        "small, single steps up or down are noise.</p>",
        _shots_html(shots_table),
        "</div></div></section>",
    ]
    for result in results:
        row, metrics = table.loc[result.name], result.evaluation.metrics
        chips = (
            f"<span>image AUROC {_fmt(row.image_auroc)}</span><span>pixel AUROC {_fmt(row.pixel_auroc)}</span>"
            f"<span>AUPRO {_fmt(row.aupro)}</span><span>{int(row.n_train)} training images</span>"
            f"<span>threshold {_fmt(result.model.threshold_, '{:.1f}')} (image), "
            f"{_fmt(result.model.pixel_threshold_, '{:.1f}')} (pixel)</span>"
        )
        parts += [
            f"<section id='{html.escape(result.name)}'><h2>{html.escape(result.name)}</h2>",
            f"<div class='chips'>{chips}</div>",
            "<div class='two'>",
            _per_defect_html(metrics["per_defect"]),
            "<p class='note'>Galleries: top row the image with the ground-truth outline (green); middle the anomaly "
            "map, transparent where scores are low; bottom the pixels above the pixel threshold (red) with the "
            "outline again. One colour scale per category. The first images of each type are shown, not the best.</p>",
            "</div><div class='grid'>",
        ]
        for key in (k for k in images if k.startswith(f"gallery_{result.name}_")):
            defect_type = key[len(f"gallery_{result.name}_") :]
            score = metrics["per_defect"].get(defect_type, {}).get("image_auroc")
            note = f" <span>image AUROC {_fmt(score)}</span>" if score is not None else " <span>nominal</span>"
            parts.append(
                f"<div class='card'><h4>{html.escape(defect_type)}{note}</h4>{_img(images[key], key, 85)}</div>"
            )
        parts.append("</div></section>")
    parts += [
        "<footer>Files next to this page: <code>metrics.json</code>, <code>metrics.csv</code>, "
        f"<code>figures/</code>. Data: <code>{html.escape(settings['data'])}</code>. "
        f"{html.escape(machine['platform'])}.</footer></main>",
    ]
    return html_page("PatchCore demo report", html.escape(lead), "\n".join(parts))
