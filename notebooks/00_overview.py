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
# # 00 · PatchCore in one page
#
# **The task.** A factory photographs every part it makes. Defects are rare and varied — a
# scratch today, a crack tomorrow, a kind never seen before — so there are plenty of pictures of
# good parts and almost none of bad ones. *Cold-start* anomaly detection learns from nominal
# images only and must flag, and outline, whatever does not fit.
#
# **PatchCore's answer** (Roth et al., *Towards Total Recall in Industrial Anomaly Detection*,
# CVPR 2022) needs no training at all:
#
# 1. describe every small patch of every nominal image by mid-level features of an ImageNet
#    network (Sec. 3.1) — notebook **01**;
# 2. keep those patch features in a memory bank, shrunk to a coreset that still covers it
#    (Sec. 3.2) — notebook **02**;
# 3. score a test patch by its distance to the nearest bank entry; the image score is the worst
#    patch's score times the weight of Eq. 7 (b = 9 neighbours here, so a weight in [0.889, 1)
#    that on real data rarely changes the ranking), the anomaly map the patch scores upsampled
#    and smoothed (Sec. 3.3) — notebook **04**.
#
# How well that works with only a few nominal images (Sec. 4.5) is notebook **03**; turning scores
# into decisions without peeking at the test set is notebook **05**, and notebook **06** runs the
# whole recipe on a folder of your own images.
#
# | notebook | question | package modules |
# |---|---|---|
# | [01 · feature extraction](01_feature_extraction.ipynb) | how does an image become patch vectors? | `backbones`, `features` |
# | [02 · coreset and UMAP](02_coreset_umap.ipynb) | why and how is the memory bank subsampled? | `coreset`, `neighbours` |
# | [03 · sample efficiency](03_sample_efficiency.ipynb) | how many nominal images are enough? | `experiments`, `baselines` |
# | [04 · segmentation gallery](04_segmentation_gallery.ipynb) | where does it look, defect by defect? | `patchcore`, `metrics` |
# | [05 · from scores to decisions](05_decisions.ipynb) | which threshold, and what does it cost? | `thresholds`, `patchcore` |
# | [06 · your own images](06_your_own_images.ipynb) | from a folder of photographs to a saved model | `data`, `patchcore`, `report` |
#
# Notebooks 01–04 end their sections with **exercises**: you write a step of the method (the
# p×p aggregation, greedy k-center, the Eq. 7 weight, a PRO curve, …) and a checker from
# `patchcore_kit.exercises` compares it with the package's own function. Each exercise is
# followed by a hidden solution cell (tagged `solution`; expand it, or delete those cells before
# handing the notebook out), which the test suite runs so the solutions stay correct.
#
# **Running time** on a 2-core CPU: this notebook about 25 s in FAST mode (`PATCHCORE_KIT_FAST=1`,
# measured) and about 1 min with the full settings (estimated from the fit and scoring times);
# each notebook states its own at the top.
#
# Every notebook runs on the built-in demo data (texture photographs with painted defects, made in
# seconds, no download). Point `DATA_ROOT` (or the environment variable `PATCHCORE_KIT_DATASET`)
# at MVTec AD or Magnetic Tile Defects to use real data; `patchcore_kit.lessons.notebook_dataset`
# turns these settings into a train/test split, the same way in every notebook. The widgets in
# 02–04 are thin wiring over plain functions in `patchcore_kit.widgets`, which you can call
# yourself.
#
# Below: the whole method in a few lines, before the notebooks take it apart.

# %% tags=["parameters"]
import os

FAST = os.environ.get("PATCHCORE_KIT_FAST", "0") == "1"
DATA_ROOT = os.environ.get("PATCHCORE_KIT_DATASET")  # None: the built-in demo data
FORMAT = os.environ.get("PATCHCORE_KIT_FORMAT", "mvtec")  # "mvtec", "mtd" or "folder"
CATEGORY = os.environ.get("PATCHCORE_KIT_CATEGORY", "brick")  # MVTec AD / demo category
IMAGE_SIZE = 128 if FAST else 224
N_TRAIN = 10 if FAST else 40

# %%
# %matplotlib inline
import numpy as np

from patchcore_kit import viz
from patchcore_kit.evaluate import evaluate
from patchcore_kit.images import display_image
from patchcore_kit.lessons import expect, notebook_dataset
from patchcore_kit.patchcore import PatchCore
from patchcore_kit.paths import feature_cache_dir

# %%
split = notebook_dataset(DATA_ROOT, FORMAT, CATEGORY, fast=FAST, n_train=N_TRAIN)
assert 0 < len(split.train) <= N_TRAIN and split.test_labels.any()  # nominal training images, defects to find
ON_DEMO = DATA_ROOT is None  # data-dependent checks: strict on the demo data, warnings on yours
split

# %% [markdown]
# ## Fit on nominal images, score the test set
#
# `PatchCore` follows scikit-learn: `fit` on nominal images only, then `decision_function` (one
# score per image, higher = more anomalous), `anomaly_map` (one map per image) or `predict`
# (a threshold learned from held-out nominal training images). `evaluate` does fit, score and
# metrics in one call.

# %%
model = PatchCore(backbone="efficientnet_lite0", image_size=IMAGE_SIZE, coreset_ratio=0.1,
                  feature_cache=feature_cache_dir())
result = evaluate(model, split)
print(f"memory bank: {len(model.memory_bank_)} of {model.n_patches_} patches; "
      f"image AUROC {result.metrics['image_auroc']:.3f}")
assert result.maps.shape == (len(split.test), IMAGE_SIZE, IMAGE_SIZE)
expect(result.metrics["image_auroc"] > 0.6, f"image AUROC {result.metrics['image_auroc']:.3f}: barely better than chance",
       strict=ON_DEMO);  # on the demo data: far better than chance; on yours a warning

# %% [markdown]
# ## Which images are flagged?
#
# Image scores of nominal and defective test images, and the threshold that `predict` uses. It
# was set from nominal training images alone (a high quantile of their leave-one-out scores), so
# it knows nothing about the defects it has to catch.

# %%
viz.plot_score_histogram(result.scores, result.labels, threshold=model.threshold_, title=split.name)

# %% [markdown]
# ## Where are the defects?
#
# The four most anomalous test images: image with the ground truth outlined, the anomaly map over
# it, and the pixels above the nominal-calibrated pixel threshold.

# %%
worst = np.argsort(-result.scores)[:4]
viz.plot_gallery([display_image(split.test_paths[i], IMAGE_SIZE) for i in worst],
                 None if result.masks is None else result.masks[worst], result.maps[worst],
                 thresholded=result.maps[worst] > model.pixel_threshold_,
                 titles=[f"{split.test[i].defect_type}\nscore {result.scores[i]:.1f}" for i in worst])
