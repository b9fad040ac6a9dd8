"""Choose PatchCore's settings for MTD on development folds that share no image with the test set.

Since issue #12 this is a thin call of the general protocol, ``patchcore-kit tune`` /
:func:`patchcore_kit.tune` (``patchcore_kit/tuning/``): the same five folds of whole tiles cut from
seed 0's training pool, the same 100 training images drawn per fold, the same seeded half of the
defective tiles per class (the other half held out), the same 18 candidates. What it adds to the
tune: the winner's one run on the standard split (seed 0, 100 shots) and its image AUROC against
the held-out defective half. Protocol and results: docs/mtd_settings.md.

Run:  python scripts/mtd_settings.py [--root ../shared/data/mtd] [--output docs/mtd_settings]
It writes ``candidates.csv``, ``folds.csv``, ``settings.json`` (the tune's files) and
``chosen.json`` (the winner's standard-split metrics and held-out figure). A stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from patchcore_kit import PatchCore
from patchcore_kit.data import load_dataset
from patchcore_kit.data.base import Split
from patchcore_kit.evaluate import evaluate
from patchcore_kit.metrics import image_auroc
from patchcore_kit.tuning import grouped_folds, load_settings, real_anomalies, tune
from patchcore_kit.tuning.folds import development_split as fold_split
from patchcore_kit.tuning.grid import FIXED_DEFAULTS
from patchcore_kit.tuning.run import score_fold
from patchcore_kit.tuning.validation import halve_by_group  # noqa: F401  (kept importable from here)

L23, L234, L34 = ("layer2", "layer3"), ("layer2", "layer3", "layer4"), ("layer3", "layer4")
#: The levers the foundation issue called fair: backbone stages, resolution, patch size p. Everything
#: else stays at the issue's configuration (lite0, 10 % greedy coreset, b = 9), images stretched.
CANDIDATES = {
    "layer2+3, 224 px, p=3 (paper's stages, kit default)": dict(layers=L23, image_size=224),
    "layer2+3, 224 px, p=5": dict(layers=L23, image_size=224, patch_size=5),
    "layer2+3, 224 px, p=1": dict(layers=L23, image_size=224, patch_size=1),
    "layer2+3+4, 224 px, p=3": dict(layers=L234, image_size=224),
    "layer2+3+4, 224 px, p=1": dict(layers=L234, image_size=224, patch_size=1),
    "layer3 only, 224 px, p=3": dict(layers=("layer3",), image_size=224),
    "layer3 only, 224 px, p=1": dict(layers=("layer3",), image_size=224, patch_size=1),
    "layer4 only, 224 px, p=1": dict(layers=("layer4",), image_size=224, patch_size=1),
    "layer3+4, 160 px, p=3": dict(layers=L34, image_size=160),
    "layer3+4, 192 px, p=3": dict(layers=L34, image_size=192),
    "layer3+4, 224 px, p=3": dict(layers=L34, image_size=224),
    "layer3+4, 256 px, p=3": dict(layers=L34, image_size=256),
    "layer3+4, 320 px, p=3": dict(layers=L34, image_size=320),
    "layer3+4, 224 px, p=5": dict(layers=L34, image_size=224, patch_size=5),
    "layer3+4, 160 px, p=1": dict(layers=L34, image_size=160, patch_size=1),
    "layer3+4, 192 px, p=1": dict(layers=L34, image_size=192, patch_size=1),
    "layer3+4, 224 px, p=1": dict(layers=L34, image_size=224, patch_size=1),
    "layer3+4, 256 px, p=1": dict(layers=L34, image_size=256, patch_size=1),
}
SHOTS, SEED, N_FOLDS = 100, 0, 5
FIXED = {"coreset_ratio": 0.1, "num_neighbors": 9}


def grid(names=None) -> dict:
    """The candidates above as a tune grid (``names`` picks some)."""
    chosen = [params for name, params in CANDIDATES.items() if names is None or name in names]
    return {
        "candidates": [{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()} for p in chosen],
        "fixed": FIXED,
    }


def development_split(split: Split, fold: int, seed: int = SEED) -> tuple[Split, list]:
    """Development fold ``fold`` (of ``N_FOLDS``), before the shots draw, and the held-out defective half."""
    used, held_out = real_anomalies(split, seed, str(split.root))
    dev = fold_split(split, grouped_folds(split.train, N_FOLDS, seed), fold, used)
    return dev, held_out


def development_scores(params: dict, split: Split, cache: str | None) -> dict:
    """Image AUROC of one setting on every development fold (the tune's own scorer), mean and per class."""
    folds, per_class = [], {}
    for fold in range(N_FOLDS):
        dev = development_split(split, fold)[0].with_shots(SHOTS, seed=SEED)
        row = score_fold({**FIXED_DEFAULTS, **FIXED, **params}, dev, "image_auroc", cache, SEED, "cpu", 8)
        folds.append(row["image_auroc"])
        for key, value in row.items():
            if key.startswith("image_auroc_"):
                per_class.setdefault(key, []).append(value)
    return {
        "image_auroc": round(float(np.mean(folds)), 4),
        "sd": round(float(np.std(folds)), 4),
        **{f"fold{k}": v for k, v in enumerate(folds)},
        **{key: round(float(np.mean(v)), 4) for key, v in per_class.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("PATCHCORE_KIT_MTD", "../shared/data/mtd"))
    parser.add_argument("--output", type=Path, default=Path("docs/mtd_settings"))
    parser.add_argument("--cache", default="runs/feature_cache_mtd_settings")
    parser.add_argument("--only", nargs="+", default=None, help="run just these candidates (by name)")
    parser.add_argument("--dev-only", action="store_true", help="score the candidates, skip the final run")
    args = parser.parse_args()

    settings = tune(
        args.root,
        "mtd",
        output=args.output,
        shots=SHOTS,
        seed=SEED,
        grid=grid(args.only),
        validation="real",
        folds=N_FOLDS,
        feature_cache=args.cache,
    )
    if args.dev_only:
        return
    split = load_dataset(args.root, "mtd", seed=SEED)
    model = PatchCore(**load_settings(args.output / "settings.json"), feature_cache=args.cache, progress=True)
    result = evaluate(model, split.with_shots(SHOTS, seed=SEED))
    used = set(settings["defective_used"])
    keep = np.array([s.label == 0 or split.relative(s.path) not in used for s in split.test])
    metrics = result.metrics
    chosen = {
        "setting": settings["setting"],
        "development_image_auroc": settings["development"]["image_auroc"],
        "params": settings["params"],
        "standard_seed0_100shots": {
            **{k: round(metrics[k], 4) for k in ("image_auroc", "pixel_auroc", "aupro")},
            **{f"image_auroc_{k}": round(v["image_auroc"], 4) for k, v in metrics["per_defect"].items()},
        },
        "held_out_half": {
            "image_auroc": round(image_auroc(result.labels[keep], result.scores[keep]), 4),
            "n_nominal": int((result.labels == 0).sum()),
            "n_defective": int(keep.sum() - (result.labels == 0).sum()),
        },
    }
    (args.output / "chosen.json").write_text(json.dumps(chosen, indent=2) + "\n")
    print(json.dumps(chosen, indent=2))


if __name__ == "__main__":
    main()
