"""Synthetic against real validation: do painted defects rank PatchCore's settings as real ones do?

For one dataset this runs ``tune`` twice over the same grid and folds — ``--validation real`` (half
the real defective images per type) and ``--validation synthetic`` (defects painted on the pool's
own images, no real defect used) — and then evaluates each tune's chosen setting once on the test
split. It writes ``<output>/study.json``: both choices, their development figures, their test image
AUROC / pixel AUROC / AUPRO, the real choice's figure on the held-out half (test images its tune never
scored), and the Spearman rank correlation between the two validations' candidate means.

    python scripts/tuning_study.py ../shared/data/mvtec --format mvtec --category bottle --output runs/tuning/bottle

Both tunes resume (their folders are ``<output>/real`` and ``<output>/synthetic``); they share one
feature cache. Results are in docs/tuning.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from patchcore_kit import PatchCore
from patchcore_kit.data import load_dataset
from patchcore_kit.evaluate import evaluate
from patchcore_kit.metrics import image_auroc
from patchcore_kit.tuning import load_settings, tune


def test_figures(settings_path: Path, split, used: set[str], cache: str) -> dict:
    model = PatchCore(**load_settings(settings_path), feature_cache=cache, calibrate=False)
    start = time.perf_counter()
    result = evaluate(model, split)
    keep = np.array([s.label == 0 or split.relative(s.path) not in used for s in split.test])
    m = result.metrics
    return {
        "image_auroc": round(m["image_auroc"], 4),
        "pixel_auroc": None if m["pixel_auroc"] is None else round(m["pixel_auroc"], 4),
        "aupro": None if m["aupro"] is None else round(m["aupro"], 4),
        "held_out_image_auroc": round(image_auroc(result.labels[keep], result.scores[keep]), 4),
        "per_defect_image_auroc": {k: round(v["image_auroc"], 4) for k, v in m["per_defect"].items()},
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--format", required=True)
    parser.add_argument("--category", default=None)
    parser.add_argument("--shots", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=None)
    parser.add_argument("--validations", nargs="+", default=["real", "synthetic"])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cache", default=None, help="default: OUTPUT/feature_cache")
    args = parser.parse_args()
    cache = args.cache or str(args.output / "feature_cache")
    split = load_dataset(args.root, args.format, category=args.category, seed=args.seed)
    test_split = split.with_shots(args.shots, seed=args.seed)
    study = {"dataset": split.name, "shots": args.shots, "seed": args.seed, "grid": args.grid, "tunes": {}}
    tables = {}
    for validation in args.validations:
        folder = args.output / validation
        start = time.perf_counter()
        settings = tune(
            split,
            args.format,
            args.category,
            output=folder,
            shots=args.shots,
            seed=args.seed,
            grid=args.grid,
            validation=validation,
            feature_cache=cache,
        )
        tune_s = time.perf_counter() - start
        with (folder / "candidates.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        tables[validation] = {r["setting"]: float(r["image_auroc"]) for r in rows}
        study["tunes"][validation] = {
            "chosen": settings["setting"],
            "development_image_auroc": settings["development"]["image_auroc"],
            "development_sd": settings["development"]["sd"],
            "tune_wall_s_this_call": round(tune_s),  # a resumed tune counts only what this call did
            "fits_s": round(sum(float(r["seconds"]) for r in rows)),  # every fit's own time, resumed or not
            "test": test_figures(folder / "settings.json", test_split, set(settings["defective_used"]), cache),
        }
        print(json.dumps(study["tunes"][validation]), flush=True)
    if len(tables) == 2:
        real, synthetic = tables["real"], tables["synthetic"]
        names = sorted(set(real) & set(synthetic))
        rho = spearmanr([real[n] for n in names], [synthetic[n] for n in names]).statistic
        # every candidate equal under one validation (an easy category): there is no ranking to agree with
        study["spearman_real_vs_synthetic"] = None if np.isnan(rho) else round(float(rho), 3)
        if np.isnan(rho):
            tied = [v for v, table in (("real", real), ("synthetic", synthetic)) if len({table[n] for n in names}) == 1]
            study["spearman_note"] = f"undefined: every candidate scores the same under {' and '.join(tied)} validation"
        study["n_candidates"] = len(names)
        study["candidates"] = {n: {"real": real[n], "synthetic": synthetic[n]} for n in names}
    (args.output / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    print(json.dumps({k: v for k, v in study.items() if k != "candidates"}, indent=2))


if __name__ == "__main__":
    main()
