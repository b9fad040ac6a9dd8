"""The ``patchcore-kit sweep`` command: every category's sweep, their average, the figure and the claims."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from ..atomic import open_text, save_figure, write_text
from ..data import load_dataset
from .grid import ALL, DEFAULT_SHOTS, METRICS, sweep_categories
from .scheduler import PROCESSES, DaskCells
from .summary import category_summary
from .sweep import sample_efficiency


def run_sweep(
    root: str | Path,
    format: str,
    category: str | None = None,
    shots: Sequence[int | str] = DEFAULT_SHOTS,
    methods: Sequence[str] = ("patchcore", "padim", "spade"),
    seeds: Sequence[int] = (0, 1, 2),
    output: str | Path = "runs/sweep",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    *,
    scheduler="serial",
    workers: int | None = None,
    **options,
) -> Path:
    """The ``patchcore-kit sweep`` command: the sweep, its category average, the figure and the claims.

    One category: ``output/results.csv`` and ``summary.json`` (settings, timings).
    ``category="all"``: every category into ``output/<category>/`` (each resumable on its own).
    Then, over all of them: ``output/summary.csv`` (:func:`category_summary`), ``claims.md``
    (:func:`~patchcore_kit.claims.check_claims`) and ``sample_efficiency.png`` (three panels:
    image AUROC, pixel AUROC, AUPRO). The cache defaults to ``output/feature_cache``, shared by all
    categories, so an interrupted sweep resumes without running the backbone again.

    ``options`` are :func:`sample_efficiency`'s (backbone, image_size, layers, weights, device,
    batch_size, baseline_stages, spade_table_gb, and per-method parameters), passed on unchanged; the
    figure and the claims read the settings the sweep resolved from its summary. ``scheduler`` and
    ``workers`` as for :func:`sample_efficiency`; the categories run one after another (each its
    extraction pass here, then its cells as tasks), one LocalCluster for all.
    """
    from ..claims import check_claims, claims_markdown, status  # the claims read the summary, nothing else
    from ..viz import plot_sample_efficiency_panels  # viz sits above experiments; only this entry point draws

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    categories = sweep_categories(root, format, category)
    cache = cache_dir if cache_dir is not None else output / "feature_cache"
    tables, names = [], []
    with ExitStack() as stack:
        if scheduler == PROCESSES and len(categories) > 1:  # one LocalCluster for every category
            scheduler = stack.enter_context(DaskCells(scheduler, workers)).client()
        for name in categories:
            split = load_dataset(root, format, name)
            folder = output / name if category == ALL else output
            if len(categories) > 1:
                print(f"--- {split.name} ({len(tables) + 1} of {len(categories)})")
            table = sample_efficiency(
                split,
                shots,
                methods,
                seeds,
                cache_dir=cache,
                results_path=folder / "results.csv",
                summary_path=folder / "summary.json",
                progress=progress,
                scheduler=scheduler,
                workers=workers,
                **options,
            )
            # Every row the category's results.csv holds, not only this call's: a sweep run in pieces
            # (say SPADE on fewer seeds, into the same folder) is summarised as a whole.
            every_row = pd.read_csv(folder / "results.csv") if (folder / "results.csv").is_file() else table
            tables.append(every_row.assign(category=split.name))
            names.append(split.name)
    results = pd.concat(tables, ignore_index=True)
    summary = category_summary(results)
    with open_text(output / "summary.csv", newline="") as handle:
        summary.to_csv(handle, index=False, float_format="%.6g")
    dataset = format if format in ("mvtec", "mtd") else None
    claims = check_claims(summary, dataset=dataset)
    used = table.attrs["summary"]["settings"]  # what the sweep resolved (defaults included), as it recorded it
    backbone, layers, baseline_stages = used["backbone"], used["layers"], used["baseline_stages"]
    height, width = used["image_size"]
    image_size = height if height == width else (height, width)
    method_params = used["method_params"]
    # Baselines given their own stages (tuned settings) are not on the "paper" or "shared" stages: say so.
    if any("layers" in method_params.get(m, {}) for m in ("padim", "spade", "nearest_image")):
        baseline_stages = "their own settings"
    settings = {
        "categories": names,
        "backbone": backbone,
        "image_size": image_size,
        "layers": list(layers),
        "baseline_stages": baseline_stages,
        # What the summary holds: every row of the folder, which may come from earlier calls too.
        "seeds": sorted(int(s) for s in results.seed.unique()),
        "methods": [m for m in dict.fromkeys(results.method)],
    }
    write_text(output / "claims.md", claims_markdown(claims, settings))
    figure = plot_sample_efficiency_panels(summary, title=_figure_title(names, backbone, image_size, baseline_stages))
    save_figure(figure, output / "sample_efficiency.png", dpi=150, bbox_inches="tight")

    shown = summary.assign(**{m: summary[f"{m}_mean"].round(3) for m in METRICS})
    print(
        f"mean over {len(names)} categor{'y' if len(names) == 1 else 'ies'} and seeds {list(seeds)} "
        f"({backbone}, {image_size} px, baselines on {baseline_stages} stages):"
    )
    print(shown[["method", "shots", *METRICS]].to_string(index=False))
    for claim in claims:
        print(f"claim {claim['id']}: {status(claim)}")
    print(f"results in {output}")
    return output


def _figure_title(names: list[str], backbone: str, image_size, baseline_stages: str) -> str:
    where = names[0] if len(names) == 1 else f"mean over {len(names)} categories"
    baselines = (
        "every method at its own settings"
        if baseline_stages == "their own settings"
        else f"baselines on {baseline_stages} stages"
    )
    return f"{where}: {backbone}, {image_size} px, {baselines}"
