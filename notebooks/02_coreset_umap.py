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
# # 02 · The memory bank and its coreset
#
# Notebook 01 turned every image into a grid of patch embeddings. PatchCore's model of "nominal"
# is nothing more than **all patch embeddings of all training images**, kept in a *memory bank*.
# A test patch is scored by its distance to the nearest bank entry (Sec. 3.3): far from every
# nominal patch means anomalous.
#
# The bank is large and redundant. One MVTec AD category (~250 images at 224 px, WideResNet-50
# features of 1024 numbers) gives ~200 000 patches — close to a gigabyte — and every test patch
# must be compared with all of them. Most entries are near-copies of each other: the same brick
# edge, the same patch of grass. The paper therefore keeps only a **coreset** (Sec. 3.2): a small
# subset chosen so that *every* bank entry has a chosen entry nearby. Then the nearest-neighbour
# distance barely changes, while the search gets 10–100 times cheaper.
#
# This notebook builds a bank, compares the paper's **greedy k-center** coreset with plain random
# subsampling, looks at both in a UMAP picture of the feature space, and measures what the
# coreset ratio does to coverage and to detection (AUROC).

# %% [markdown]
# ## Settings
#
# As in every notebook: the demo data unless `DATA_ROOT` / `PATCHCORE_KIT_DATASET` points at MVTec
# AD (`FORMAT = "mvtec"`, with a `CATEGORY`), MTD (`"mtd"`) or a folder of your own (`"folder"`).
# `FAST` (`PATCHCORE_KIT_FAST=1`) shrinks everything for the test suite.

# %% tags=["parameters"]
import os

FAST = os.environ.get("PATCHCORE_KIT_FAST", "0") == "1"
DATA_ROOT = os.environ.get("PATCHCORE_KIT_DATASET")  # None: the built-in demo data
FORMAT = os.environ.get("PATCHCORE_KIT_FORMAT", "mvtec")  # "mvtec", "mtd" or "folder"
CATEGORY = os.environ.get("PATCHCORE_KIT_CATEGORY", "brick")  # MVTec AD / demo category
BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = 128 if FAST else 224
N_TRAIN = 10 if FAST else 40
RATIOS = (0.01, 0.05, 0.1, 0.25) if FAST else (0.001, 0.005, 0.01, 0.05, 0.1)  # paper: 0.01 to 0.25
N_SHOWN = 800 if FAST else 3000  # a uniform sample of the bank drawn in the UMAP picture
UMAP_PARAMS = {"n_epochs": 100} if FAST else {}

# %%
# %matplotlib inline
import time

import numpy as np
import pandas as pd

from patchcore_kit import viz
from patchcore_kit.coreset import coreset_size, covering_radius, random_coreset
from patchcore_kit.data.demo import default_data_dir
from patchcore_kit.evaluate import ground_truth_masks
from patchcore_kit.images import display_image
from patchcore_kit.metrics import image_auroc, pixel_auroc
from patchcore_kit.notebook import notebook_dataset
from patchcore_kit.patchcore import PatchCore
from patchcore_kit.widgets import coreset_explorer, coreset_state, render_coreset_view

# %%
FEATURE_CACHE = default_data_dir() / "feature_cache"  # backbone maps are computed once per image
split = notebook_dataset(DATA_ROOT, FORMAT, CATEGORY, fast=FAST, n_train=N_TRAIN)
assert 0 < len(split.train) <= N_TRAIN and split.test_labels.any()  # nominal training images, defects to find
settings = dict(backbone=BACKBONE, image_size=IMAGE_SIZE, feature_cache=FEATURE_CACHE, calibrate=False)
split

# %% [markdown]
# ## 1 · The memory bank: every training patch
#
# With `sampler="none"` PatchCore keeps everything, so its `memory_bank_` *is* the full bank:
# one row per patch, image after image, each image's grid row by row.

# %%
full = PatchCore(sampler="none", **settings).fit(split.train_paths)
bank, grid = full.memory_bank_, full.feature_shape_
print(f"{len(split.train)} images × {grid[0]}×{grid[1]} patches = {len(bank)} bank entries "
      f"of {bank.shape[1]} numbers ({bank.numel() * 4 / 2**20:.1f} MiB)")
assert bank.shape == (len(split.train) * grid[0] * grid[1], bank.shape[1])

# %% [markdown]
# ## 2 · Greedy k-center: cover the bank with few centres
#
# The paper's Algorithm 1 starts from one random patch and then, again and again, adds the bank
# entry that is **farthest from everything chosen so far**. After *n* picks, every entry lies
# within the *coverage radius* — the largest distance from any entry to its nearest pick — and
# greedy k-center keeps that radius within a factor of two of the best possible for *n* centres.
# Distances are taken after a random projection to 128 dimensions, which changes them very little
# (Johnson–Lindenstrauss) and makes each step cheaper.
#
# Because the rule never revisits a pick, the coreset for any smaller size is a prefix of the
# pick order. `coreset_state` runs the greedy loop once up to the largest ratio, and we check that
# the estimator makes the very same choices.

# %%
images = np.stack([display_image(path, IMAGE_SIZE) for path in split.train_paths])
state = coreset_state(bank, grid, images, max_ratio=max(RATIOS), n_shown=N_SHOWN,
                      cache_dir=default_data_dir() / "umap_cache", umap_params=UMAP_PARAMS)
ten_percent = PatchCore(coreset_ratio=0.1, **settings).fit(split.train_paths)
assert np.array_equal(ten_percent.coreset_indices_, state.coreset(0.1))
assert np.all(np.diff(state.radii) <= 1e-4)  # each pick can only shrink the radius
print(f"greedy picks: {len(state.order)}; radius after the first {state.radii[0]:.1f}, after the last {state.radii[-1]:.1f}")

# %% [markdown]
# Random subsampling is the obvious alternative: keep a uniformly drawn fraction. It mirrors the
# bank's density — many picks where patches are common, few or none where they are rare — so some
# rare but nominal patches lose every representative nearby. Coverage radius in the full feature
# space, for both:

# %%
coverage = []
for ratio in RATIOS:
    n = coreset_size(len(bank), ratio)
    for sampler, picks in (("greedy", state.coreset(ratio)), ("random", random_coreset(bank, n, seed=0))):
        coverage.append({"sampler": sampler, "ratio": ratio, "bank entries": n,
                         "radius": covering_radius(bank, picks)})
coverage = pd.DataFrame(coverage)
wide = coverage.pivot(index="ratio", columns="sampler", values="radius")
assert (wide.greedy < wide.random).all(), wide  # greedy covers better at every size
assert wide.greedy.is_monotonic_decreasing  # more picks, smaller radius
wide.round(2)

# %% [markdown]
# ## 3 · Where the coreset sits: a UMAP picture of the bank
#
# UMAP (McInnes et al., 2018) draws high-dimensional points in 2-D so that near neighbours stay
# near. Grey dots are a uniform random sample of the bank — where they crowd, the bank is dense —
# and orange dots the greedy coreset (every pick is drawn). The picks spread over the *whole*
# picture, out to the sparse fringes, while dense regions get far fewer than their crowd of grey
# suggests: coverage, not density. On the right, the picks that fall into one training image —
# they tend to sit on the rarer structures (edges, odd spots) rather than on the plain surface,
# which a handful of representatives already covers.

# %%
render_coreset_view(state, ratio=0.1)

# %% [markdown]
# ## 4 · What does the ratio cost? Coverage and AUROC
#
# Now the question that matters: how small can the coreset be before detection suffers? For each
# ratio we fit PatchCore with each sampler (from the cached backbone features) and score the test
# set. The paper (Sec. 4.4) finds that greedy coresets of 1–10 % lose almost nothing, while random
# subsampling degrades much sooner — the uncovered rare patches turn into false alarms.

# %%
masks = ground_truth_masks(split, IMAGE_SIZE)  # None when the dataset has no masks


def detection(model) -> dict:
    start = time.perf_counter()
    scores, maps = model.score(split.test_paths)
    return {"image_auroc": image_auroc(split.test_labels, scores),
            "pixel_auroc": None if masks is None else pixel_auroc(masks, maps),
            "ms per image": 1000 * (time.perf_counter() - start) / len(split.test)}


rows = []
for ratio in RATIOS:
    for sampler in ("greedy", "random"):
        model = PatchCore(coreset_ratio=ratio, sampler=sampler, **settings).fit(split.train_paths)
        rows.append({"sampler": sampler, "ratio": ratio, **detection(model)})
reference = detection(full)  # the whole bank
table = pd.DataFrame(rows).merge(coverage[["sampler", "ratio", "radius"]], on=["sampler", "ratio"])
viz.plot_coreset_curves(table, metrics=("radius", "image_auroc") + (("pixel_auroc",) if split.has_masks else ()))

# %%
print(f"whole bank: image AUROC {reference['image_auroc']:.3f}, pixel AUROC {reference['pixel_auroc'] or float('nan'):.3f}")
greedy_10 = table.query("sampler == 'greedy' and ratio == 0.1").image_auroc.item()
assert greedy_10 > 0.6 and greedy_10 >= reference["image_auroc"] - 0.1, (greedy_10, reference)
table.round(3)

# %% [markdown]
# ## 5 · Explore
#
# Move the ratio and watch the coreset thin out in the UMAP picture and in the training images.
# (The greedy picks were computed once; the slider only takes a longer or shorter prefix.)

# %%
coreset_explorer(state, ratios=RATIOS)

# %% [markdown]
# ## What we have
#
# The memory bank holds every nominal patch; greedy k-center keeps a few percent of them that
# still cover the whole bank, so nearest-neighbour distances — and AUROC — barely change while the
# search becomes much cheaper. Random subsampling of the same size leaves gaps. Notebook **03**
# asks how many *training images* PatchCore needs; notebook **04** looks at the resulting anomaly
# maps defect by defect.
