"""The sweep's tables averaged: over seeds per shot count, and over categories as the paper's Fig. 6."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .grid import ALL, METHODS, METRICS


def summarize(results: pd.DataFrame, metric: str = "image_auroc") -> pd.DataFrame:
    """Mean and standard deviation over seeds: one row per shot count, one column pair per method."""
    grouped = results.groupby(["shots", "method"])[metric].agg(["mean", "std"]).unstack("method")
    return grouped.swaplevel(axis=1).sort_index(axis=1)


def category_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (method, shots): each metric averaged over categories, then mean ± sd over seeds.

    ``results`` has the columns of :data:`COLUMNS` and, for several categories, ``category``. For
    each seed the metric is averaged over the categories (as the paper's Fig. 6 averages MVTec
    AD's 15); ``<metric>_mean`` and ``<metric>_sd`` are the mean and the sample standard deviation
    of those averages over seeds (sd empty with one seed). Rows with ``full=True`` (the whole
    pool, whose size differs between categories) form one x position, ``shots="all"``;
    ``train_images`` is their mean pool size (and ``_min`` / ``_max``). A metric missing in a
    category (no masks: pixel metrics) is averaged over the categories that have it.

    Returns one row per (method, shots) with ``shots`` a label ("1", "5", ..., "all"), methods in
    the kit's order and shot counts ascending with "all" last.
    """
    table = pd.DataFrame(results).copy()
    if "category" not in table.columns:
        table["category"] = ""
    if "full" not in table.columns:
        table["full"] = False
    table["full"] = table["full"].astype(bool)
    table["label"] = np.where(table["full"], ALL, table["shots"].astype(int).astype(str))
    for metric in METRICS:
        table[metric] = pd.to_numeric(table.get(metric), errors="coerce")
    keys = ["method", "label", "full"]
    per_seed = table.groupby(keys + ["seed"])[list(METRICS)].mean()  # category average per seed (NaN skipped)
    grouped = per_seed.groupby(level=keys)
    out = pd.concat(
        [grouped[m].mean().rename(f"{m}_mean") for m in METRICS]
        + [grouped[m].std().rename(f"{m}_sd") for m in METRICS],
        axis=1,
    )
    sizes = table.groupby(keys)
    out["train_images"] = sizes["shots"].mean()
    out["train_images_min"] = sizes["shots"].min()
    out["train_images_max"] = sizes["shots"].max()
    out["n_categories"] = sizes["category"].nunique()
    out["n_seeds"] = sizes["seed"].nunique()
    out = out.reset_index().rename(columns={"label": "shots"})
    order = {m: i for i, m in enumerate(METHODS)}
    out["_method"] = out["method"].map(lambda m: order.get(m, len(order)))
    out["_shots"] = [np.inf if full else int(label) for label, full in zip(out["shots"], out["full"])]
    out = out.sort_values(["_method", "method", "_shots"]).drop(columns=["_method", "_shots"]).reset_index(drop=True)
    columns = [
        "method",
        "shots",
        "full",
        "train_images",
        "train_images_min",
        "train_images_max",
        "n_categories",
        "n_seeds",
    ] + [f"{m}_{stat}" for m in METRICS for stat in ("mean", "sd")]
    return out[columns]
