"""Markdown tables of a sweep's summary.csv (mean over categories and seeds), for docs/sample_efficiency.md.

Run: python scripts/summary_tables.py docs/sample_efficiency/bottle/summary.csv [...]
"""

from __future__ import annotations

import sys

import pandas as pd

METHODS = {"patchcore": "PatchCore", "padim": "PaDiM", "spade": "SPADE"}
METRICS = ("image_auroc", "pixel_auroc", "aupro")


def markdown(summary: pd.DataFrame) -> str:
    """One row per shot count, one cell per method: image AUROC / pixel AUROC / AUPRO (means)."""
    header = "| shots | " + " | ".join(f"{name} image / pixel / AUPRO" for name in METHODS.values()) + " |"
    lines = [header, "|---" * (len(METHODS) + 1) + "|"]
    for shots, rows in summary.groupby("shots", sort=False):
        label = f"all ({rows.train_images.iloc[0]})" if shots == "all" else shots
        cells = []
        for method in METHODS:
            row = rows[rows.method == method]
            cells.append("–" if row.empty else " / ".join(f"{row[f'{m}_mean'].iloc[0]:.3f}" for m in METRICS))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(f"{path}\n\n{markdown(pd.read_csv(path, dtype={'shots': str}))}\n")
