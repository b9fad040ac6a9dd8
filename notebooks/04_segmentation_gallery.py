# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Segmentation gallery: where PatchCore looks, defect by defect
#
# PatchCore does not only say *whether* an image is anomalous; its patch scores say *where*
# (Sec. 3.3). Each test patch gets the distance to its nearest memory-bank entry; the grid of
# those distances is upsampled bilinearly to the image and smoothed with a Gaussian of σ = 4
# pixels — the **anomaly map**. The image score is the largest patch score, re-weighted by how
# isolated that patch's nearest bank entry is among its **b nearest neighbours** (Eq. 7): a test
# patch whose match sits in a sparse region of the bank — a rare but nominal appearance — is
# trusted less.
#
# This notebook shows the maps for every defect type next to the ground truth, turns them into
# masks with a threshold, and measures per defect type. The explorer at the end changes defect
# type, threshold, coreset ratio, b and colour map; because the backbone features are cached and
# every fit is kept, each change only re-scores or re-draws.

# %% [markdown]
# ## Settings
#
# The demo data unless `DATA_ROOT` / `PATCHCORE_KIT_DATASET` points at MVTec AD (`FORMAT =
# "mvtec"`, with a `CATEGORY`), MTD (`"mtd"`) or a folder (`"folder"`). `FAST`
# (`PATCHCORE_KIT_FAST=1`) shrinks everything for the test suite.

# %% tags=["parameters"]
import os

FAST = os.environ.get("PATCHCORE_KIT_FAST", "0") == "1"
DATA_ROOT = os.environ.get("PATCHCORE_KIT_DATASET")  # None: the built-in demo data
FORMAT = os.environ.get("PATCHCORE_KIT_FORMAT", "mvtec")  # "mvtec", "mtd" or "folder"
CATEGORY = os.environ.get("PATCHCORE_KIT_CATEGORY", "brick")  # MVTec AD / demo category
BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = 128 if FAST else 224
N_TRAIN = 10 if FAST else 40
RATIOS = (0.01, 0.1, 0.25)  # coreset ratios offered by the explorer
NEIGHBOURS = (1, 3, 9)  # b in the re-weighted image score (1 = plain maximum)

# %%
# %matplotlib inline
import time

import numpy as np
import pandas as pd

from patchcore_kit import viz
from patchcore_kit.data.demo import default_data_dir
from patchcore_kit.metrics import image_auroc
from patchcore_kit.notebook import notebook_dataset
from patchcore_kit.widgets import GalleryState, gallery_explorer, gallery_metrics, render_gallery

# %%
FEATURE_CACHE = default_data_dir() / "feature_cache"  # backbone maps are computed once per image
split = notebook_dataset(DATA_ROOT, FORMAT, CATEGORY, fast=FAST, n_train=N_TRAIN)
assert 0 < len(split.train) <= N_TRAIN and split.test_labels.any()  # nominal training images, defects to find
split.summary()

# %% [markdown]
# ## 1 · Fit once, keep everything
#
# `GalleryState` holds the test images and masks at the model's resolution and remembers every
# PatchCore fit it makes. `warm` fits one model per coreset ratio (reading the backbone features
# from the cache after the first) and scores the test set once per number of neighbours b.

# %%
start = time.perf_counter()
state = GalleryState(split, backbone=BACKBONE, image_size=IMAGE_SIZE, feature_cache=FEATURE_CACHE)
state.warm(RATIOS, NEIGHBOURS)
print(f"{len(RATIOS)} fits × {len(NEIGHBOURS)} scorings of {len(split.test)} test images: "
      f"{time.perf_counter() - start:.1f} s")

# %% [markdown]
# ## 2 · One row per defect type
#
# The first test image of every defect type, one per column: the image with the ground truth
# outlined in green; the anomaly map over it (one colour scale for all: each map divided by the
# largest value anywhere in the test set; low scores fade so the image shows through); and the
# pixels above half of that maximum in red.
#
# Two questions per column: does the map peak on the defect (*detection*), and does the red
# region follow the green outline (*segmentation*)? The second is harder than it looks. A patch
# score lives on the feature grid (one value per 8×8 pixels here), each patch already averages a
# 3×3 neighbourhood, and the map is smoothed with σ = 4: a thin scratch that is found perfectly
# still becomes a blob several times wider than itself.

# %%
first = [int(np.flatnonzero(state.defect_types == d)[0]) for d in state.defect_choices if d != "good"]
maps = state.normalised_maps(coreset_ratio=0.1, num_neighbors=9)
viz.plot_gallery(state.images[first], None if state.masks is None else state.masks[first], maps[first],
                 thresholded=maps[first] > 0.5, titles=[state.defect_types[i] for i in first], vmin=0, vmax=1)

# %% [markdown]
# ## 3 · Per defect type, in numbers
#
# Each defect type is measured against all nominal test images: image AUROC (is the image
# flagged?), pixel AUROC and AUPRO (are the right pixels scored high? AUPRO weighs every defect
# region equally, however small, up to 30 % false-positive rate) and the IoU of the thresholded
# mask with the ground truth. The first three need no threshold; IoU depends on it — try the
# explorer below, and compare the thin scratches with the compact holes and stains.

# %%
metrics = gallery_metrics(state, coreset_ratio=0.1, num_neighbors=9, threshold=0.5)
if split.has_masks:
    assert metrics["pixel AUROC"].mean() > 0.8, metrics  # maps point at the defects
metrics

# %% [markdown]
# ## 4 · What the coreset ratio and b change
#
# The anomaly map is the nearest-neighbour distance alone, so b (the neighbours of Eq. 7) cannot
# change it — only the image score. The coreset ratio changes both, a little: a smaller coreset
# covers the bank more coarsely, so distances grow.

# %%
for ratio in RATIOS:
    maps_by_b = [state.result(ratio, b)[1] for b in NEIGHBOURS]
    assert all(np.array_equal(maps_by_b[0], other) for other in maps_by_b[1:])  # b leaves the maps alone
auroc = pd.DataFrame({f"b = {b}": {ratio: image_auroc(state.labels, state.result(ratio, b)[0]) for ratio in RATIOS}
                      for b in NEIGHBOURS})
auroc.index.name = "coreset ratio"
assert auroc.to_numpy().max() > 0.7, auroc
auroc.round(3)

# %% [markdown]
# ## 5 · Explore
#
# Every control re-renders at once: threshold and colour map only re-draw, b and the coreset ratio
# pick a stored result. The table below the gallery follows the threshold, ratio and b.

# %%
gallery_explorer(state, ratios=RATIOS, neighbours=NEIGHBOURS)

# %%
start = time.perf_counter()
render_gallery(state, state.defect_choices[0], threshold=0.3, coreset_ratio=RATIOS[0], num_neighbors=NEIGHBOURS[0])
print(f"one re-render from the stored results: {1000 * (time.perf_counter() - start):.0f} ms")

# %% [markdown]
# ## What we have
#
# Anomaly maps are nearest-neighbour distances on the patch grid, upsampled and smoothed; a
# threshold turns them into masks, and no single threshold suits every defect type. Threshold-free
# pixel metrics can be excellent while the IoU of a thresholded mask stays modest, above all for
# thin defects: the patch grid sets the resolution. Notebook **03** shows how all this depends on
# the number of training images.
