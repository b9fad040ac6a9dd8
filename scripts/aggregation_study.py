"""Patch features two ways (paper's mean vs official unfold) and three border rules, side by side.

Issue #10 found the kit's patch features losing to the official code's on the same backbone and
split, and traced it to feature building: how a border patch is built, and whether the p×p
neighbourhood is averaged (the paper's Eq. 1) or kept whole (the official code's unfold). This
script measures every combination in two ways:

1. **The choice** — development folds of MTD (``scripts/mtd_settings.py``'s protocol: five folds of
   the training pool's tiles, half of the defective tiles; the test split is never read). The
   candidate with the best mean development image AUROC becomes the kit's default.
2. **The report** — the standard test splits (MTD seed 0, 100 shots; MVTec bottle, all 209
   training images): image AUROC, pixel AUROC, AUPRO, and the share of nominal test images whose
   highest-scoring patch lies on the grid's outer ring (the ring is 14 % of a 28×28 grid).

Everything else is the kit's default (EfficientNet-Lite0, layer2+3, 224 px, p = 3, 10 % greedy
coreset, b = 9). Run: python scripts/aggregation_study.py [--mtd DIR] [--bottle DIR]
Writes docs/aggregation/development.csv and docs/aggregation/test.csv (resumable: rows already
there are kept).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mtd_settings import SEED, SHOTS, development_scores  # noqa: E402  (the same protocol, one copy)

from patchcore_kit import PatchCore  # noqa: E402
from patchcore_kit.atomic import write_csv  # noqa: E402
from patchcore_kit.data import load_dataset  # noqa: E402
from patchcore_kit.evaluate import evaluate  # noqa: E402
from patchcore_kit.features import top_patch_on_border  # noqa: E402

CANDIDATES = {
    "mean, border valid (kit before #10)": dict(aggregation="mean", border="valid"),
    "mean, border zeros": dict(aggregation="mean", border="zeros"),
    "mean, border reflect": dict(aggregation="mean", border="reflect"),
    "unfold, border zeros (official code)": dict(aggregation="unfold", border="zeros"),
    "unfold, border reflect": dict(aggregation="unfold", border="reflect"),
}


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))


def test_row(name: str, dataset: str, split, params: dict, cache: str) -> dict:
    start = time.perf_counter()
    model = PatchCore(coreset_ratio=0.1, num_neighbors=9, calibrate=False, feature_cache=cache, **params)
    result = evaluate(model, split)
    nominal = [s.path for s in split.test if s.label == 0]
    share = top_patch_on_border(model.patch_scores(nominal))
    metrics = result.metrics
    return {
        "setting": name,
        "dataset": dataset,
        "image_auroc": round(metrics["image_auroc"], 4),
        "pixel_auroc": round(metrics["pixel_auroc"], 4),
        "aupro": round(metrics["aupro"], 4),
        "top_patch_on_ring": round(share, 3),
        "feature_dim": model.memory_bank_.shape[1],
        "seconds": round(time.perf_counter() - start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", default=os.environ.get("PATCHCORE_KIT_MTD", "../shared/data/mtd"))
    parser.add_argument("--bottle", default="../shared/data/mvtec")
    parser.add_argument("--output", type=Path, default=Path("docs/aggregation"))
    parser.add_argument("--cache", default="runs/feature_cache_aggregation")
    parser.add_argument("--skip", nargs="*", default=[], choices=("development", "mtd", "bottle"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    mtd = load_dataset(args.mtd, "mtd", seed=SEED)

    development = args.output / "development.csv"
    rows = read_rows(development)
    for name, params in CANDIDATES.items():
        if "development" in args.skip or any(r["setting"] == name for r in rows):
            continue
        start = time.perf_counter()
        rows.append(
            {
                "setting": name,
                **development_scores(params, mtd, args.cache),
                "seconds": round(time.perf_counter() - start),
            }
        )
        print(rows[-1], flush=True)
        write_rows(development, rows)
    if rows:
        best = max(rows, key=lambda r: float(r["image_auroc"]))
        print(f"chosen on the MTD development folds: {best['setting']} ({best['image_auroc']})", flush=True)

    test = args.output / "test.csv"
    rows = read_rows(test)
    splits = {
        "mtd": lambda: mtd.with_shots(SHOTS, seed=SEED),
        "mvtec/bottle": lambda: load_dataset(args.bottle, "mvtec", category="bottle"),
    }
    for dataset, make_split in splits.items():
        if dataset.split("/")[-1] in args.skip:
            continue
        split = make_split()
        for name, params in CANDIDATES.items():
            if any(r["setting"] == name and r["dataset"] == dataset for r in rows):
                continue
            rows.append(test_row(name, dataset, split, params, args.cache))
            print(rows[-1], flush=True)
            write_rows(test, rows)


if __name__ == "__main__":
    main()
