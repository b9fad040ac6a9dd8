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
"""
from __future__ import annotations

import base64
import html
import io
import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .atomic import open_text, save_figure, write_text
from .backbones import DEFAULT_BACKBONE, DEFAULT_LAYERS
from .data import load_mvtec
from .data.demo import build_demo_dataset, default_data_dir, default_demo_root
from .errors import InputError
from .evaluate import Evaluation, evaluate
from .experiments import sample_efficiency
from .images import as_hw, display_image
from .patchcore import PatchCore
from .viz import plot_gallery, plot_metrics_table, plot_score_histogram, plot_shots_curve

#: The PatchCore settings of the demo, the same for every category. A 1 % coreset keeps the fit
#: to seconds on a laptop CPU, and on this data it scores as well as the paper's 10 % or better
#: (image AUROC 1 % / 10 %: grass 0.86 / 0.87, tissue 0.91 / 0.75; demo data generator version 2).
#: Selecting 10 % took about 7 times as long (tissue 36 s / 250 s on a busy 2-core machine).
DEMO_MODEL = {"layers": DEFAULT_LAYERS, "coreset_ratio": 0.01, "num_neighbors": 9}


@dataclass(frozen=True)
class DemoSize:
    """How much data the demo builds and shows."""

    categories: tuple[str, ...]
    n_train: int  # training tiles per category
    n_test_good: int  # nominal test tiles per category
    n_test_per_defect: int  # test tiles per defect type
    data_size: int  # pixels of the generated tiles
    image_size: int  # pixels the model sees
    shots: tuple[int, ...]  # training-set sizes of the sample-efficiency curve (plus all)
    gallery: int  # images per defect type in the galleries


FULL = DemoSize(("brick", "grass", "gravel", "tissue"), 40, 10, 4, 256, 224, (1, 2, 5, 10), 4)
FAST = DemoSize(("brick", "tissue"), 6, 3, 1, 64, 64, (1, 2), 1)


@dataclass
class CategoryResult:
    """One category's fitted model and evaluation."""

    name: str
    model: PatchCore
    evaluation: Evaluation

    @property
    def fit_s(self) -> float:
        seconds = self.model.fit_seconds_
        return seconds["fit_total"] + seconds.get("calibration", 0.0)

    def row(self) -> dict:
        """The metrics-table row: the three metrics, sizes, seconds and what ``predict`` does."""
        metrics, labels = self.evaluation.metrics, self.evaluation.labels
        flagged = self.evaluation.scores > self.model.threshold_
        return {
            "category": self.name,
            "image_auroc": metrics["image_auroc"],
            "pixel_auroc": metrics["pixel_auroc"],
            "aupro": metrics["aupro"],
            "n_train": self.model.n_train_,
            "n_test": len(labels),
            "fit_s": self.fit_s,
            "infer_s": self.evaluation.seconds["infer"],
            "threshold": self.model.threshold_,
            "caught": float(flagged[labels == 1].mean()),  # anomalous test images predict() flags
            "false_alarms": float(flagged[labels == 0].mean()),  # nominal test images it flags
        }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def run_demo(
    output: str | Path | None = None,
    root: str | Path | None = None,
    fast: bool = False,
    backbone: str = DEFAULT_BACKBONE,
    image_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Build (or reuse) the demo data, fit and evaluate PatchCore per category, write the report.

    ``output`` defaults to ``runs/demo``; ``root`` to the demo data folder
    (:func:`~patchcore_kit.data.demo.default_demo_root`, or ``demo_fast`` beside it when ``fast``).
    ``image_size`` is what the model sees (default 224, fast 64). Prints the metrics table and
    the report's path; returns the path of ``report.html``.
    """
    start = time.perf_counter()
    size = FAST if fast else FULL
    image_size = size.image_size if image_size is None else int(image_size)
    output = Path(output) if output is not None else Path("runs") / "demo"
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder; choose another report folder")
    if root is None:
        root = default_data_dir() / "demo_fast" if fast else default_demo_root()
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    cache = output / "feature_cache"

    root = build_demo_dataset(
        root, size.categories, n_train=size.n_train, n_test_good=size.n_test_good,
        n_test_per_defect=size.n_test_per_defect, image_size=size.data_size, seed=seed, progress=progress,
    )
    params = dict(DEMO_MODEL, backbone=backbone, image_size=image_size, seed=seed, feature_cache=str(cache))

    results = []
    bar = tqdm(size.categories, desc="demo", unit="category", disable=not progress)
    for category in bar:
        bar.set_postfix_str(f"{category}: fit + evaluate")
        split = load_mvtec(root, category)
        model = PatchCore(**params, progress=progress)
        results.append(CategoryResult(category, model, evaluate(model, split)))
    bar.close()

    shots_table = shots_curve(results, size.shots, params, seed, progress)
    table = pd.DataFrame([r.row() for r in results]).set_index("category")
    images = write_figures(results, table, shots_table, figures, size.gallery, progress)
    seconds = time.perf_counter() - start
    settings = {
        "backbone": backbone, "layers": list(params["layers"]), "image_size": image_size,
        "coreset_ratio": params["coreset_ratio"], "num_neighbors": params["num_neighbors"],
        "threshold_quantile": results[0].model.threshold_quantile, "seed": seed, "fast": fast,
        "data": str(root), "data_size": size.data_size,
    }
    machine = {"platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    write_metrics(output, table, results, shots_table, settings, machine, seconds)
    page = output / "report.html"
    write_text(page, render_html(table, results, shots_table, images, settings, machine, seconds))

    print(format_table(table))
    print(f"demo finished in {seconds:.0f} s; report: {page.resolve()}")
    return page


def shots_curve(results: Sequence[CategoryResult], shots: Sequence[int], params: dict, seed: int,
                progress: bool) -> pd.DataFrame:
    """PatchCore's metrics with 1, 2, 5, ... training images per category, from cached features.

    The point "all training images" is the model already fitted for the report (the same fit).
    """
    frames = []
    for result in results:
        split = result.evaluation.split
        fewer = [n for n in shots if n < len(split.train)]
        model_params = {k: v for k, v in params.items()
                        if k not in ("backbone", "layers", "image_size", "seed", "feature_cache")}
        table = sample_efficiency(
            split, fewer, methods=("patchcore",), seeds=(seed,), backbone=params["backbone"],
            image_size=params["image_size"], layers=params["layers"], cache_dir=params["feature_cache"],
            progress=progress, patchcore=model_params,
        ) if fewer else pd.DataFrame()
        metrics = result.evaluation.metrics
        full = {"method": "patchcore", "shots": len(split.train), "seed": seed, "fit_s": result.fit_s,
                **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro")}}
        frames.append(pd.concat([table, pd.DataFrame([full])], ignore_index=True).assign(category=result.name))
    return pd.concat(frames, ignore_index=True)[["category", "shots", "seed", "image_auroc", "pixel_auroc", "aupro"]]


# --------------------------------------------------------------------------------------------
# Figures and files
# --------------------------------------------------------------------------------------------
def gallery_samples(evaluation: Evaluation, per_type: int) -> dict[str, list[int]]:
    """Test-set indices shown per defect type: the first ``per_type`` of each, nominal last.

    The first ones, not the best ones: the gallery shows typical results, failures included.
    """
    chosen: dict[str, list[int]] = {}
    for index, sample in enumerate(evaluation.split.test):
        chosen.setdefault(sample.defect_type, [])
        if len(chosen[sample.defect_type]) < per_type:
            chosen[sample.defect_type].append(index)
    order = sorted(t for t in chosen if t != "good") + (["good"] if "good" in chosen else [])
    return {t: chosen[t] for t in order}


def category_gallery(result: CategoryResult, indices: Sequence[int]):
    """The gallery figure of some test images of one category (one colour scale per category)."""
    evaluation, model = result.evaluation, result.model
    maps = evaluation.maps
    # Colour scale shared by all galleries of the category: most pixels are nominal, so the median
    # pixel score is where colour starts; the largest score is where it saturates.
    vmin, vmax = float(np.median(maps)), float(maps.max())
    samples = [evaluation.split.test[i] for i in indices]
    images = [display_image(s.path, model.image_size) for s in samples]
    masks = [evaluation.masks[i] if evaluation.masks is not None else None for i in indices]
    thresholded = [maps[i] > model.pixel_threshold_ for i in indices]
    titles = []
    for i, sample in zip(indices, samples):
        verdict = "flagged" if evaluation.scores[i] > model.threshold_ else "passed"
        titles.append(f"{sample.path.stem}: score {evaluation.scores[i]:.1f}, {verdict}")
    return plot_gallery(images, masks, [maps[i] for i in indices], thresholded, titles, vmin=vmin, vmax=vmax,
                        outline_thickness=2, threshold=model.pixel_threshold_)


def write_figures(results: Sequence[CategoryResult], table: pd.DataFrame, shots_table: pd.DataFrame,
                  folder: Path, per_type: int, progress: bool) -> dict[str, Path]:
    """Save every figure of the report as a PNG in ``folder``; returns ``{key: path}``."""
    jobs = {
        "metrics_table": lambda: plot_metrics_table(
            table[["image_auroc", "pixel_auroc", "aupro", "n_train", "n_test", "fit_s", "infer_s"]],
            formats={"fit_s": "{:.1f}", "infer_s": "{:.1f}"}),
        "sample_efficiency": lambda: plot_shots_curve(shots_table),
    }
    for result in results:
        evaluation = result.evaluation
        title = f"{result.name}: image AUROC {evaluation.metrics['image_auroc']:.3f}"
        jobs[f"scores_{result.name}"] = (lambda r=result, t=title: plot_score_histogram(
            r.evaluation.scores, r.evaluation.labels, threshold=r.model.threshold_, title=t))
        for defect_type, indices in gallery_samples(evaluation, per_type).items():
            jobs[f"gallery_{result.name}_{defect_type}"] = lambda r=result, i=indices: category_gallery(r, i)

    paths = {}
    for key, draw in tqdm(jobs.items(), desc="figures", unit="fig", disable=not progress, leave=False):
        paths[key] = folder / f"{key}.png"
        save_figure(draw(), paths[key], dpi=100, facecolor="white")
    return paths


def _clean(value):
    """JSON-ready: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def write_metrics(output: Path, table: pd.DataFrame, results: Sequence[CategoryResult], shots_table: pd.DataFrame,
                  settings: dict, machine: dict, seconds: float) -> None:
    """``metrics.csv`` (the table) and ``metrics.json`` (table, per-defect metrics, shots curve, settings)."""
    with open_text(output / "metrics.csv", newline="") as handle:
        table.to_csv(handle, float_format="%.6g")
    categories = {}
    for result in results:
        categories[result.name] = {
            **{k: v for k, v in result.row().items() if k != "category"},
            "pixel_threshold": result.model.pixel_threshold_,
            "fit_seconds": result.model.fit_seconds_,
            "per_defect": result.evaluation.metrics["per_defect"],
            "split_hash": result.evaluation.split.split_hash(),
        }
    document = {
        "settings": settings,
        "categories": categories,
        "sample_efficiency": shots_table.to_dict("records"),
        "seconds_total": seconds,
        "machine": machine,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(output / "metrics.json", json.dumps(_clean(document), indent=2, allow_nan=False) + "\n")


def format_table(table: pd.DataFrame) -> str:
    """The metrics table as text for the terminal."""
    shown = table[["image_auroc", "pixel_auroc", "aupro", "n_train", "n_test", "fit_s", "infer_s"]].copy()
    formats = {"image_auroc": "{:.3f}", "pixel_auroc": "{:.3f}", "aupro": "{:.3f}", "fit_s": "{:.1f}", "infer_s": "{:.1f}"}
    for column, pattern in formats.items():
        shown[column] = shown[column].map(lambda v, p=pattern: "-" if v is None or pd.isna(v) else p.format(v))
    return shown.to_string()


# --------------------------------------------------------------------------------------------
# The HTML page
# --------------------------------------------------------------------------------------------
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


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  background:#f4f5f7;color:#1f2328;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:24px 28px 48px}
header{background:#1f2d3d;color:#fff;padding:22px 28px}
header h1{margin:0 0 4px;font-size:26px;font-weight:600} header p{margin:0;color:#c9d3de;font-size:14px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde1e6;padding:8px 28px;z-index:2;font-size:14px}
nav a{margin-right:18px;color:#0b5cad;text-decoration:none} nav a:hover{text-decoration:underline}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:18px 22px;margin:20px 0}
h2{margin:0 0 10px;font-size:20px} h3{margin:18px 0 8px;font-size:16px} p.note{color:#57606a;font-size:14px;margin:6px 0 12px}
table.metrics{border-collapse:collapse;font-size:14px;margin:8px 0}
table.metrics th,table.metrics td{padding:6px 12px;border-bottom:1px solid #e4e7eb;text-align:right}
table.metrics th{background:#f6f8fa;font-weight:600} table.metrics td:first-child,table.metrics th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
.card{border:1px solid #e4e7eb;border-radius:6px;padding:8px 10px;background:#fff}
.card h4{margin:2px 0 6px;font-size:14px;font-weight:600} .card h4 span{font-weight:400;color:#57606a}
img{max-width:100%;height:auto;display:block}
.chips span{display:inline-block;background:#eef1f4;border-radius:12px;padding:2px 10px;margin:0 6px 6px 0;font-size:13px}
.two{display:grid;grid-template-columns:minmax(420px,1fr) minmax(360px,1fr);gap:18px;align-items:start}
footer{color:#57606a;font-size:13px;margin-top:24px}
code{background:#eef1f4;padding:1px 4px;border-radius:3px}
section.warn{background:#fff8e1;border-color:#f0c36d}
"""


def _fmt(value, pattern: str = "{:.3f}") -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else pattern.format(value)


def _cell(value, pattern: str = "{:.3f}", tint: bool = False) -> str:
    from .viz import metric_colour

    style = ""
    if tint and value is not None:
        r, g, b, _ = metric_colour(value)
        style = f' style="background:rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})"'
    return f"<td{style}>{_fmt(value, pattern)}</td>"


def _metrics_html(table: pd.DataFrame) -> str:
    head = ("<tr><th>category</th><th>image AUROC</th><th>pixel AUROC</th><th>AUPRO</th><th>train</th>"
            "<th>test</th><th>fit (s)</th><th>score (s)</th><th>anomalous caught</th><th>nominal flagged</th></tr>")
    rows = []
    for name, r in table.iterrows():
        rows.append(
            f'<tr><td><a href="#{html.escape(str(name))}">{html.escape(str(name))}</a></td>'
            + _cell(r.image_auroc, tint=True) + _cell(r.pixel_auroc, tint=True) + _cell(r.aupro, tint=True)
            + _cell(int(r.n_train), "{}") + _cell(int(r.n_test), "{}") + _cell(r.fit_s, "{:.1f}")
            + _cell(r.infer_s, "{:.1f}") + _cell(r.caught, "{:.0%}") + _cell(r.false_alarms, "{:.0%}") + "</tr>"
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


def render_html(table: pd.DataFrame, results: Sequence[CategoryResult], shots_table: pd.DataFrame,
                images: dict[str, Path], settings: dict, machine: dict, seconds: float) -> str:
    """The report page as one string: inline CSS, every figure embedded, no external resource."""
    created = datetime.now().strftime("%Y-%m-%d %H:%M")
    layers = " + ".join(settings["layers"])
    lead = (f"PatchCore with {settings['backbone']} ({layers}), {settings['image_size']} px, "
            f"coreset {settings['coreset_ratio']:.0%}, one setting for every category · "
            f"{created} · {seconds:.0f} s on {machine['torch_threads']} CPU threads")
    nav = "".join(f'<a href="#{html.escape(r.name)}">{html.escape(r.name)}</a>' for r in results)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>PatchCore demo report</title><style>{_CSS}</style></head><body>",
        f"<header><h1>PatchCore demo report</h1><p>{html.escape(lead)}</p></header>",
        f"<nav><a href='#results'>results</a><a href='#scores'>scores</a><a href='#shots'>training images</a>{nav}</nav>",
        "<main>",
        *(["<section class='warn'><b>FAST mode</b>: tiny data (a few 64-pixel tiles per category) to check that "
           "everything runs. The numbers say nothing about PatchCore; run <code>patchcore-kit demo</code> for the "
           "real report.</section>"] if settings["fast"] else []),
        "<section id='results'><h2>Results</h2>",
        "<p class='note'>Each category: a model fitted on nominal tiles only, tested on held-out nominal tiles and "
        "six kinds of synthetic defect. AUROC 1.0 = every anomalous image (pixel) scores above every nominal one. "
        "AUPRO weighs every defect region equally, up to a false-positive rate of 30 %. "
        "<i>Caught</i> and <i>flagged</i> are what <code>predict</code> does with the threshold it learned from "
        f"nominal training images alone (the {settings['threshold_quantile']:.0%} quantile of leave-one-out scores).</p>",
        _metrics_html(table), "</section>",
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
        _shots_html(shots_table), "</div></div></section>",
    ]
    for result in results:
        row, metrics = table.loc[result.name], result.evaluation.metrics
        chips = (f"<span>image AUROC {_fmt(row.image_auroc)}</span><span>pixel AUROC {_fmt(row.pixel_auroc)}</span>"
                 f"<span>AUPRO {_fmt(row.aupro)}</span><span>{int(row.n_train)} training images</span>"
                 f"<span>threshold {_fmt(result.model.threshold_, '{:.1f}')} (image), "
                 f"{_fmt(result.model.pixel_threshold_, '{:.1f}')} (pixel)</span>")
        parts += [
            f"<section id='{html.escape(result.name)}'><h2>{html.escape(result.name)}</h2>",
            f"<div class='chips'>{chips}</div>",
            "<div class='two'>", _per_defect_html(metrics["per_defect"]),
            "<p class='note'>Galleries: top row the image with the ground-truth outline (green); middle the anomaly "
            "map, transparent where scores are low; bottom the pixels above the pixel threshold (red) with the "
            "outline again. One colour scale per category. The first images of each type are shown, not the best.</p>",
            "</div><div class='grid'>",
        ]
        for key in (k for k in images if k.startswith(f"gallery_{result.name}_")):
            defect_type = key[len(f"gallery_{result.name}_"):]
            score = metrics["per_defect"].get(defect_type, {}).get("image_auroc")
            note = f" <span>image AUROC {_fmt(score)}</span>" if score is not None else " <span>nominal</span>"
            parts.append(f"<div class='card'><h4>{html.escape(defect_type)}{note}</h4>{_img(images[key], key, 85)}</div>")
        parts.append("</div></section>")
    parts += [
        "<footer>Files next to this page: <code>metrics.json</code>, <code>metrics.csv</code>, "
        f"<code>figures/</code>. Data: <code>{html.escape(settings['data'])}</code>. "
        f"{html.escape(machine['platform'])}.</footer></main></body></html>",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# A fitted model on your own images (notebook 06)
# --------------------------------------------------------------------------------------------
def write_model_report(output: str | Path, model, evaluation: Evaluation | None = None,
                       settings: pd.DataFrame | None = None, title: str = "PatchCore on your images",
                       notes: Sequence[str] = ()) -> Path:
    """One self-contained HTML page about a fitted, calibrated model; returns its path.

    It shows the model's parameters and thresholds (set on nominal images only), the histogram of
    the nominal calibration scores (with the test scores when ``evaluation`` is given), the table
    of candidate ``settings`` compared on development data, and a gallery of the highest-scoring
    test images. Figures go to ``output/figures/``; the page is ``output/report.html``.
    """
    output = Path(output)
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in model.get_params().items() if k not in ("feature_cache", "progress", "device", "weights")}
    params_html = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in shown.items())
    thresholds = {"image threshold (predict)": model.threshold_, "pixel threshold": model.pixel_threshold_}
    thresholds_html = "".join(f"<tr><td>{k}</td><td>{_fmt(v, '{:.3f}')}</td></tr>" for k, v in thresholds.items())

    calibration = np.asarray(getattr(model, "calibration_scores_", []), dtype=float)
    scores = calibration if evaluation is None else np.concatenate([calibration, evaluation.scores])
    labels = np.zeros(len(calibration), int) if evaluation is None else np.concatenate(
        [np.zeros(len(calibration), int), evaluation.labels])
    sections = []
    if len(scores):
        path = figures / "scores.png"
        plot_score_histogram(scores, labels, threshold=model.threshold_, title="image scores",
                             names=("nominal", "defective")).savefig(path, dpi=110)
        sections.append(f"<section><h2>Scores</h2><p class='note'>Nominal: leave-one-out calibration images"
                        f"{' and nominal test images' if evaluation is not None else ''}. The dashed line is the "
                        f"threshold set on nominal images only.</p><img src='{data_uri(path)}' alt='scores'></section>")
    if settings is not None:
        sections.append("<section><h2>Settings compared on development data</h2>"
                        + pd.DataFrame(settings).to_html(classes="metrics", float_format=lambda v: f"{v:.3f}")
                        + "</section>")
    if evaluation is not None:
        metrics = {k: v for k, v in evaluation.metrics.items() if k != "per_defect"}
        metrics_html = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in metrics.items())
        worst = np.argsort(-evaluation.scores)[:6]
        size = as_hw(model.image_size)
        path = figures / "gallery.png"
        masks = None if evaluation.masks is None else evaluation.masks[worst]
        plot_gallery([display_image(evaluation.split.test[i].path, size) for i in worst], masks,
                     [evaluation.maps[i] for i in worst], [evaluation.maps[i] > model.pixel_threshold_ for i in worst],
                     [f"{evaluation.split.test[i].defect_type}: {evaluation.scores[i]:.1f}" for i in worst],
                     threshold=model.pixel_threshold_, outline_thickness=2).savefig(path, dpi=100)
        sections.append(f"<section><h2>Test set (measured once, after the settings were chosen)</h2>"
                        f"<table class='metrics'>{metrics_html}</table>"
                        f"<h3>The highest-scoring test images</h3><img src='{data_uri(path, 85)}' alt='gallery'></section>")
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
            f"<p>patchcore_kit, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p></header><main>"
            f"<section><h2>Model</h2>{notes_html}<div class='two'><table class='metrics'>{params_html}</table>"
            f"<table class='metrics'>{thresholds_html}</table></div></section>{''.join(sections)}</main></body></html>")
    path = output / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
