"""Probe: does keeping MTD's aspect ratio beat stretching every image to a square?

MTD images are 100-630 px wide and 220-400 px high. The estimator resizes every image to one size
(a square by default), which stretches narrow tiles and squeezes wide ones. The alternative is to
keep the aspect ratio and let the feature grid's size vary per image. The estimator does not do
that (its memory bank, maps and metrics assume one grid), so this probe runs the kit's own pieces
image by image on the development folds of ``scripts/mtd_settings.py`` (same folds, same
defective half, never the test set):

- ``square S``: stretched to S x S (what the estimator does);
- ``scale F``: native pixels times F, aspect kept (the same physical scale for every image);
- ``height H``: height H, aspect kept;
- ``area A``: A*A pixels, aspect kept.

Run:  python scripts/mtd_aspect_probe.py [--modes square:224 scale:0.5 height:224 area:224]
Prints one line per mode: mean and per-fold development image AUROC (layer3+4, p=3, 10 % greedy
coreset, b=9, 100 shots). Results are in docs/mtd_settings.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T

from patchcore_kit.backbones import load_backbone
from patchcore_kit.coreset import coreset_size, greedy_coreset
from patchcore_kit.data import load_dataset
from patchcore_kit.features import flatten_patches, patch_embeddings
from patchcore_kit.images import IMAGENET_MEAN, IMAGENET_STD, read_image
from patchcore_kit.metrics import image_auroc
from patchcore_kit.neighbors import MemoryBankIndex
from patchcore_kit.patchcore import reweighted_image_scores

_spec = importlib.util.spec_from_file_location("mtd_settings", Path(__file__).with_name("mtd_settings.py"))
settings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(settings)

LAYERS = ("layer3", "layer4")
TO_TENSOR = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def target_size(width: int, height: int, mode: str, value: float) -> tuple[int, int]:
    """(height, width) the image is resized to; at least 32 px a side (one stride-32 cell)."""
    if mode == "square":
        h, w = value, value
    elif mode == "scale":
        h, w = height * value, width * value
    elif mode == "height":
        h, w = value, width * value / height
    elif mode == "area":
        factor = value / (height * width) ** 0.5
        h, w = height * factor, width * factor
    else:
        raise ValueError(f"unknown mode {mode!r}: square, scale, height or area")
    return max(32, round(h)), max(32, round(w))


@torch.no_grad()
def patch_features(backbone, path: Path, mode: str, value: float) -> torch.Tensor:
    image = read_image(path)
    x = T.functional.resize(TO_TENSOR(image), list(target_size(*image.size, mode, value)), antialias=True)
    return flatten_patches(patch_embeddings(backbone(x[None], LAYERS), patch_size=3))


def probe(split, backbone, mode: str, value: float) -> list[float]:
    aucs = []
    features: dict[Path, torch.Tensor] = {}

    def feats(sample):
        if sample.path not in features:
            features[sample.path] = patch_features(backbone, sample.path, mode, value)
        return features[sample.path]

    for fold in range(settings.N_FOLDS):
        dev = settings.development_split(split, fold)[0].with_shots(settings.SHOTS, seed=settings.SEED)
        train = torch.cat([feats(s) for s in dev.train])
        bank = train[torch.as_tensor(greedy_coreset(train, coreset_size(len(train), 0.1), 128, settings.SEED))]
        index = MemoryBankIndex(bank.contiguous())
        scores = []
        for sample in dev.test:
            f = feats(sample)
            distances, nearest = index.search(f, k=1)
            scores.append(
                float(reweighted_image_scores(distances[:, 0][None], nearest[:, 0][None], f[None], index, 9)[0])
            )
        aucs.append(image_auroc(dev.test_labels, np.array(scores)))
    return aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("PATCHCORE_KIT_MTD", "../shared/data/mtd"))
    parser.add_argument(
        "--modes", nargs="+", default=["square:224", "scale:0.5", "scale:0.67", "scale:0.8", "height:224", "area:224"]
    )
    args = parser.parse_args()
    split = load_dataset(args.root, "mtd", seed=settings.SEED)
    backbone = load_backbone("efficientnet_lite0")
    for spec in args.modes:
        mode, value = spec.split(":")
        aucs = probe(split, backbone, mode, float(value))
        print(f"{spec:>12}: mean {np.mean(aucs):.3f}  folds {' '.join(f'{a:.3f}' for a in aucs)}", flush=True)


if __name__ == "__main__":
    main()
