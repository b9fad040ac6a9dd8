"""Why PaDiM led PatchCore on MTD in the first sweep: the explanations, tested with runs.

The first MTD sweep (all methods on PatchCore's layer2+3, kit features before #10) put PaDiM ahead
of PatchCore on image AUROC from 2 shots on, the opposite of the paper's Fig. 6. Three
explanations are measured here, side by side, on the standard MTD split (seed 0, whole test set):

1. **Stretching is what lets PaDiM work on MTD at all.** MTD's images vary from about 100 to 630
   px wide; PaDiM keeps one Gaussian per grid position, which only means something when a position
   shows the same part of every tile. The kit stretches every image to a square. Keeping the
   aspect ratio (letterbox: pad to a square, then resize) is what the paper says rigid methods
   cannot handle: PaDiM stretched vs letterboxed, PatchCore beside it.
2. **PaDiM's Mahalanobis distance standardises every channel; PatchCore's Euclidean one does not.**
   PatchCore on per-channel standardised features (mean and sd of the training patches) vs raw.
3. **The features, not the method.** PatchCore with the pre-#10 features (mean, border 'valid')
   vs the kit's default now; PaDiM and SPADE on PatchCore's stages ("shared", the first sweep)
   vs their own papers' stages.
4. **Every method at its own development-fold setting.** PatchCore at the setting its MTD tune chose
   (docs/tuning/mtd/), PaDiM and SPADE at the settings *their own* tunes chose
   (``patchcore-kit tune --method padim|spade``, docs/tuning/mtd_padim/ and mtd_spade/): their rows
   are built from those settings.json files (left out while a file is missing).

Run: python scripts/mtd_puzzle.py [--root DIR] [--shots 5 20 50] [--seeds 0] [--only NAME_START ...]
Writes docs/sample_efficiency/mtd_puzzle.csv (resumable).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import torch

from patchcore_kit import PatchCore
from patchcore_kit.atomic import write_csv
from patchcore_kit.baselines import SPADE, PaDiM
from patchcore_kit.data import load_dataset
from patchcore_kit.data.base import read_sample_mask
from patchcore_kit.evaluate import compute_metrics, ground_truth_masks
from patchcore_kit.features import flatten_patches
from patchcore_kit.images import read_image, resize_mask
from patchcore_kit.tuning import load_settings, read_settings
from patchcore_kit.tuning.run import estimator_class

SHARED = dict(layers=("layer2", "layer3"))
#: The settings each baseline's own MTD tune chose (same protocol as PatchCore's: 100 shots, seed 0, 5 folds).
OWN_SETTINGS = {
    "padim": Path("docs/tuning/mtd_padim/settings.json"),
    "spade": Path("docs/tuning/mtd_spade/settings.json"),
}
LABELS = {"padim": "PaDiM", "spade": "SPADE"}


class StandardisedPatchCore(PatchCore):
    """PatchCore whose patch features are standardised per channel with the training patches'
    mean and standard deviation before the coreset and the search (what PaDiM's covariance does
    implicitly). Here for the experiment only: not a kit option."""

    def embed(self, layer_maps):
        features = super().embed(layer_maps)
        if getattr(self, "channel_mean_", None) is None:
            return features
        return (features - self.channel_mean_[:, None, None]) / self.channel_sd_[:, None, None]

    def _fit_maps(self, batches, n_images, timings):
        batches = list(batches)  # twice: once for the statistics, once for the bank
        self.channel_mean_ = None
        raw = torch.cat([flatten_patches(PatchCore.embed(self, maps)) for maps in batches])
        self.channel_mean_, self.channel_sd_ = raw.mean(0), raw.std(0).clamp_min(1e-6)
        super()._fit_maps(iter(batches), n_images, timings)


def letterbox(path: Path, fill: int = 0) -> np.ndarray:
    """The image padded (centred) to a square of its longer side: aspect ratio kept."""
    image = np.asarray(read_image(path))
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), fill, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def letterbox_mask(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    side = max(h, w)
    out = np.zeros((side, side), bool)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = mask
    return out


def run(model, split, aspect: str) -> dict:
    start = time.perf_counter()
    if aspect == "letterbox":
        train = [letterbox(p) for p in split.train_paths]
        test = [letterbox(p) for p in split.test_paths]
        masks = np.stack([resize_mask(letterbox_mask(read_sample_mask(s)), model.image_size) for s in split.test])
    else:
        train, test = split.train_paths, split.test_paths
        masks = ground_truth_masks(split, model.image_size)
    model.fit(train)
    scores, maps = model.score_images(test)
    metrics = compute_metrics(split, scores, maps, masks, per_defect=False)
    return {k: round(float(v), 4) for k, v in metrics.items()} | {"seconds": round(time.perf_counter() - start)}


def own_settings(cache: str) -> dict:
    """Rows for PaDiM and SPADE at their own development-fold settings, from their settings files."""
    rows = {}
    for method, path in OWN_SETTINGS.items():
        if not path.is_file():
            continue
        params, chosen = load_settings(path, method), read_settings(path)["setting"]
        make = (lambda p, m: lambda s: estimator_class(m)(**p, seed=s, calibrate=False, feature_cache=cache))(
            params, method
        )
        rows[f"{LABELS[method]} at its own development-fold setting ({chosen})"] = (make, "stretch")
    return rows


def experiments(cache: str) -> dict:
    common = dict(calibrate=False, feature_cache=cache)
    return {
        "PatchCore (kit default)": (lambda s: PatchCore(seed=s, **common), "stretch"),
        "PatchCore, features before #10 (mean, border valid)": (
            lambda s: PatchCore(seed=s, aggregation="mean", border="valid", **common),
            "stretch",
        ),
        "PatchCore, standardised channels": (lambda s: StandardisedPatchCore(seed=s, **common), "stretch"),
        "PatchCore, letterboxed": (lambda s: PatchCore(seed=s, **common), "letterbox"),
        "PatchCore at its MTD development-fold setting (layer3+4, p = 1)": (
            lambda s: PatchCore(seed=s, layers=("layer3", "layer4"), patch_size=1, **common),
            "stretch",
        ),
        "PaDiM (paper stages), stretched": (lambda s: PaDiM(seed=s, **common), "stretch"),
        "PaDiM (paper stages), letterboxed": (lambda s: PaDiM(seed=s, **common), "letterbox"),
        "PaDiM on PatchCore's stages (first sweep)": (
            lambda s: PaDiM(seed=s, n_features=100, **SHARED, **common),
            "stretch",
        ),
        "PaDiM on layer3+4 (all 432 channels)": (
            lambda s: PaDiM(seed=s, layers=("layer3", "layer4"), n_features=None, **common),
            "stretch",
        ),
        "SPADE on PatchCore's stages (first sweep)": (
            lambda s: SPADE(seed=s, global_layer=None, **SHARED, **common),
            "stretch",
        ),
    } | own_settings(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("PATCHCORE_KIT_MTD", "../shared/data/mtd"))
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None, help="run only the experiments whose names start so")
    parser.add_argument("--output", type=Path, default=Path("docs/sample_efficiency/mtd_puzzle.csv"))
    parser.add_argument("--cache", default="runs/cache_v2")
    args = parser.parse_args()
    split = load_dataset(args.root, "mtd", seed=0)
    rows = []
    if args.output.exists():
        with args.output.open() as handle:
            rows = list(csv.DictReader(handle))
    done = {(r["experiment"], int(r["shots"]), int(r["seed"])) for r in rows}
    for shots in args.shots:
        for seed in args.seeds:
            draw = split.with_shots(shots, seed)
            for name, (make, aspect) in experiments(args.cache).items():
                if (name, shots, seed) in done or (args.only and not name.startswith(tuple(args.only))):
                    continue
                row = {"experiment": name, "shots": shots, "seed": seed, **run(make(seed), draw, aspect)}
                print(row, flush=True)
                rows.append(row)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                write_csv(args.output, rows)


if __name__ == "__main__":
    main()
