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
# This notebook starts with a 2-D toy where coverage can be seen, then builds a real bank,
# compares the paper's **greedy k-center** coreset with plain random subsampling, measures what
# the random projection does to distances, looks at the picks in a UMAP picture and on the patch
# grid (where a border effect shows up), and measures what the coreset ratio does to coverage and
# to detection (AUROC). Three exercises ask you to write greedy k-center, the covering radius and
# the random projection yourself.
#
# **Running time** on a 2-core CPU: about 1.5 min in FAST mode (measured) and 5–8 minutes with
# the full settings (estimated: the greedy search over 31 000 patches up to 10 %, UMAP of about
# 9 000 points, 10 fits from cached features).

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
PROJECTION_DIMS = (16, 32, 64, 128)

# %%
# %matplotlib inline

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from patchcore_kit import viz
from patchcore_kit.coreset import coreset_size, covering_radius, greedy_coreset, projection_distortion, random_coreset
from patchcore_kit.evaluate import evaluate, ground_truth_masks
from patchcore_kit.exercises import check_covering_radius, check_greedy_coreset, check_random_projection
from patchcore_kit.features import border_ring
from patchcore_kit.images import display_image
from patchcore_kit.lessons import expect, notebook_dataset
from patchcore_kit.patchcore import PatchCore
from patchcore_kit.paths import feature_cache_dir, umap_cache_dir
from patchcore_kit.widgets import coreset_explorer, coreset_state, patch_positions, render_coreset_view

# %%
FEATURE_CACHE = feature_cache_dir()  # backbone maps are computed once per image
split = notebook_dataset(DATA_ROOT, FORMAT, CATEGORY, fast=FAST, n_train=N_TRAIN)
assert 0 < len(split.train) <= N_TRAIN and split.test_labels.any()  # nominal training images, defects to find
ON_DEMO = DATA_ROOT is None  # data-dependent checks: strict on the demo data, warnings on yours
settings = dict(backbone=BACKBONE, image_size=IMAGE_SIZE, feature_cache=FEATURE_CACHE, calibrate=False)
split

# %% [markdown]
# ## 0 · Intuition first: covering points in 2-D
#
# The **k-center problem**: choose $n$ of the points as centres so that the largest distance
# from any point to its nearest centre — the **covering radius** — is as small as possible:
#
# $$r(\mathcal{M}_C) = \max_{m \in \mathcal{M}} \min_{c \in \mathcal{M}_C} \lVert m - c \rVert_2,
#   \qquad \mathcal{M}_C^* = \arg\min_{\mathcal{M}_C \subset \mathcal{M},\, |\mathcal{M}_C| = n} r(\mathcal{M}_C).$$
#
# Finding the best set is NP-hard. The paper's **Algorithm 1** is the greedy rule (Gonzalez, 1985),
# run on randomly projected features $\psi(m)$:
#
# $$\mathcal{M}_C \leftarrow \{m_0\}, \qquad \text{repeat } n - 1 \text{ times:}\quad
#   m_i = \arg\max_{m \in \mathcal{M}} \min_{c \in \mathcal{M}_C} \lVert \psi(m) - \psi(c) \rVert_2, \quad
#   \mathcal{M}_C \leftarrow \mathcal{M}_C \cup \{m_i\}.$$
#
# **Why it is within a factor 2 of the best.** Let $r_n$ be greedy's radius after $n$ picks and
# $m_n$ the point that attains it (greedy's next pick). Every pick was the farthest point when
# it was chosen, so the $n + 1$ points $m_0, \dots, m_n$ are pairwise at least $r_n$ apart. Any
# $n$ centres must serve two of these $n + 1$ points with the same centre $c$, and by the triangle
# inequality one of the two is at least $r_n / 2$ from $c$: the optimal radius is at least
# $r_n / 2$, so $r_n \le 2\, r^*$. (No polynomial algorithm can guarantee better than 2 unless P = NP.)
#
# A cloud of points — a dense blob (common nominal patches) and a sparse ring (rare ones) — and 30
# centres chosen greedily or at random. The discs have the covering radius: random picks follow
# the density and leave the ring uncovered; greedy picks spread to the fringes.

# %%
rng = np.random.default_rng(0)
toy = np.concatenate([rng.normal(0, 0.6, size=(900, 2)),
                      np.stack([np.cos(a := rng.uniform(0, 2 * np.pi, 60)), np.sin(a)], 1) * 4 + rng.normal(0, 0.15, (60, 2))])
toy_picks = {"greedy k-center": greedy_coreset(toy, 30, projection_dim=None, seed=0),
             "random": random_coreset(toy, 30, seed=0)}
viz.plot_coverage_2d(toy, toy_picks)

# %%
toy_radius = {name: covering_radius(toy, picks) for name, picks in toy_picks.items()}
order, radii = greedy_coreset(toy, 31, projection_dim=None, seed=0, return_radii=True)
first = torch.as_tensor(toy[order], dtype=torch.float32)  # greedy's first n + 1 = 31 picks
pairwise = torch.cdist(first, first) + torch.eye(31) * 1e9
assert pairwise.min() >= radii[29] - 1e-5  # pairwise >= r_30 apart: so any 30 centres have radius >= r_30 / 2
assert toy_radius["greedy k-center"] < toy_radius["random"], toy_radius
print(f"greedy radius {toy_radius['greedy k-center']:.2f}, random {toy_radius['random']:.2f}; "
      f"the best possible 30 centres have radius >= {radii[29] / 2:.2f}")

# %% [markdown]
# ### Exercise 1 · Greedy k-center
#
# Write `my_greedy(features, n, start)` for `features (N, D)`: return the `n` indices greedy
# k-center picks, `start` first (no projection). Keep one vector `min_dist` of every point's
# distance to its nearest centre: after each pick only the distances to the *new* centre need
# computing. `check_greedy_coreset` compares with `coreset.greedy_coreset_plain`.

# %%
def my_greedy(features, n, start):
    raise NotImplementedError  # your code here


check_greedy_coreset(my_greedy)

# %% tags=["solution"] jupyter={"source_hidden": true}
def my_greedy(features, n, start):
    chosen = [start]
    min_dist = torch.linalg.norm(features - features[start], dim=1)
    for _ in range(n - 1):
        pick = int(torch.argmax(min_dist))
        chosen.append(pick)
        min_dist = torch.minimum(min_dist, torch.linalg.norm(features - features[pick], dim=1))
    return chosen


assert check_greedy_coreset(my_greedy)

# %% [markdown]
# ### Exercise 2 · The covering radius
#
# Write `my_radius(features, indices)`: the largest distance from any row of `features` to its
# nearest chosen row. Use it on the toy: does it agree with the titles above?

# %%
def my_radius(features, indices):
    raise NotImplementedError  # your code here


check_covering_radius(my_radius)

# %% tags=["solution"] jupyter={"source_hidden": true}
def my_radius(features, indices):
    features = torch.as_tensor(features, dtype=torch.float32)
    return float(torch.cdist(features, features[torch.as_tensor(indices)]).min(dim=1).values.max())


assert check_covering_radius(my_radius)
assert abs(my_radius(toy, toy_picks["random"]) - toy_radius["random"]) < 1e-4

# %% [markdown]
# ## 1 · The memory bank: every training patch
#
# With `sampler="none"` PatchCore keeps everything, so its `memory_bank_` *is* the full bank:
# one row per patch, image after image, each image's grid row by row.

# %%
full = PatchCore(sampler="none", progress=True, **settings).fit(split.train_paths)  # the backbone pass: a progress bar
bank, grid = full.memory_bank_, full.feature_shape_
print(f"{len(split.train)} images × {grid[0]}×{grid[1]} patches = {len(bank)} bank entries "
      f"of {bank.shape[1]} numbers ({bank.numel() * 4 / 2**20:.1f} MiB)")
assert bank.shape == (len(split.train) * grid[0] * grid[1], bank.shape[1])

# %% [markdown]
# ## 2 · Greedy k-center: cover the bank with few centres
#
# The paper's Algorithm 1 (section 0) starts from one random patch and then, again and again,
# adds the bank entry that is **farthest from everything chosen so far**. After *n* picks, every
# entry lies within the *coverage radius*, within a factor of two of the best possible for *n*
# centres. Distances are taken after a random projection $\psi$ to 128 dimensions, which makes
# each step cheaper and changes the distances by a measurable amount (section 2b).
#
# Because the rule never revisits a pick, the coreset for any smaller size is a prefix of the
# pick order. `coreset_state` runs the greedy loop once up to the largest ratio, and we check that
# the estimator makes the very same choices.

# %%
images = np.stack([display_image(path, IMAGE_SIZE) for path in split.train_paths])
state = coreset_state(bank, grid, images, max_ratio=max(RATIOS), n_shown=N_SHOWN,
                      cache_dir=umap_cache_dir(), umap_params=UMAP_PARAMS)
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
expect((wide.greedy < wide.random).all(), f"random covered better somewhere:\n{wide}", strict=ON_DEMO)  # greedy covers better
assert wide.greedy.is_monotonic_decreasing  # more picks, smaller radius
wide.round(2)

# %% [markdown]
# ## 2b · What the random projection does to distances
#
# A Gaussian random projection $\psi(m) = A m$, $A \in \mathbb{R}^{k \times d}$ with entries
# $\mathcal{N}(0, 1/k)$, keeps squared distances *on average*: for any pair,
# $\lVert \psi(m) - \psi(m') \rVert^2 / \lVert m - m' \rVert^2$ is distributed as $\chi^2_k / k$, mean 1
# and standard deviation $\sqrt{2/k}$ (Johnson–Lindenstrauss). That is 35 % at 16 dimensions and
# still **12.5 % at 128** — not "very little". And the saving depends on the backbone: from
# WideResNet-50's 1024 (or 1536) dimensions to 128 it is an 8–12× cheaper search; from
# EfficientNet-Lite0's 152 dimensions to 128 it saves almost nothing. Measured on this bank:

# %%
distortion = pd.DataFrame({k: {"relative sd of squared distances": projection_distortion(bank, k).std(),
                               "sqrt(2 / k)": (2 / k) ** 0.5} for k in PROJECTION_DIMS}).T
distortion.index.name = f"k (from {bank.shape[1]} dims)"
assert distortion.iloc[:, 0].is_monotonic_decreasing  # more dimensions, less distortion
assert distortion.loc[128].iloc[0] > 0.08  # about 12 %: a real change, not "very little"
distortion.round(3)

# %% [markdown]
# Does it change the picks? Greedy k-center on the projected features against greedy on the
# features as they are, both at 10 %, judged by the covering radius in the *full* space:

# %%
n_ten = coreset_size(len(bank), 0.1)
plain_picks = greedy_coreset(bank, n_ten, projection_dim=None, seed=0)
projected_picks = state.coreset(0.1)
with_and_without = pd.Series({
    "greedy on 128-d projection (the paper)": covering_radius(bank, projected_picks),
    f"greedy on all {bank.shape[1]} dims": covering_radius(bank, plain_picks),
    "random": covering_radius(bank, random_coreset(bank, n_ten, seed=0)),
}, name="covering radius in the full space")
shared = len(np.intersect1d(plain_picks, projected_picks)) / n_ten
print(f"picks shared by the two greedy runs: {shared:.0%}")
expect(with_and_without.iloc[0] < with_and_without.iloc[2], f"random covered better:\n{with_and_without}", strict=ON_DEMO)
with_and_without.round(2)

# %% [markdown]
# ### Exercise 3 · A random projection
#
# Write `my_projection(features, dim, seed)` returning `(N, dim)`: multiply by a seeded Gaussian
# matrix scaled so that squared distances keep their mean. The checker measures your projection's
# distortion and compares it with $\sqrt{2/k}$.

# %%
def my_projection(features, dim, seed):
    raise NotImplementedError  # your code here


check_random_projection(my_projection)

# %% tags=["solution"] jupyter={"source_hidden": true}
def my_projection(features, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator) / dim**0.5
    return torch.as_tensor(features, dtype=torch.float32) @ matrix


assert check_random_projection(my_projection)

# %% [markdown]
# ## 3 · Where the coreset sits: a UMAP picture of the bank
#
# UMAP (McInnes et al., 2018) draws high-dimensional points in 2-D so that near neighbours stay
# near. Grey dots are a uniform random sample of the bank — where they crowd, the bank is dense —
# and orange dots the greedy coreset (every pick is drawn). The picks spread over the *whole*
# picture, out to the sparse fringes, while dense regions get far fewer than their crowd of grey
# suggests: coverage, not density. On the right, the picks that fall into one training image.
# With the kit's default `border="zeros"` they spread over the texture. With `border="valid"`
# (the kit's default until the border study) they sat mostly on the **outer ring of the patch
# grid**, along the image border — not on rarer structures of the texture, as this notebook once
# said. Section 3b shows why.

# %%
render_coreset_view(state, ratio=0.1)

# %% [markdown]
# ## 3b · The border effect
#
# The p×p mean of notebook 01 (Eq. 2) needs neighbours a border patch does not have.
# `border="valid"` averages only those that exist — 4 of 9 in a corner, 6 on an edge —
# so a border patch is an average of fewer, differently placed features, and the backbone's own
# zero padding makes border features differ too. Border patches then form a region of the
# feature space of their own, far from the inner patches, and greedy k-center, which hunts the
# farthest points, spends its picks there. `border="zeros"` counts the padding as zeros in the
# mean (as the authors' code does with its zero-padded unfold) and is the kit's default since the
# border study on MTD development folds; `"reflect"` mirrors the map at its edge. We fit the bank
# three ways and count how many greedy picks (10 %) land on the grid's outer ring, against the
# ring's share of all patches.

# %%
ring = border_ring(grid).numpy().ravel()
picks_by_border, on_ring = {}, {}
for border in ("valid", "zeros", "reflect"):
    model = PatchCore(sampler="none", border=border, **settings).fit(split.train_paths)
    picks_by_border[border] = greedy_coreset(model.memory_bank_, n_ten, seed=0)
    on_ring[f'border="{border}"'] = ring[picks_by_border[border] % ring.size].mean()
on_ring = pd.Series(on_ring, name=f"share of greedy picks on the outer ring (ring = {ring.mean():.0%} of patches)")
assert np.array_equal(picks_by_border[full.border], state.coreset(0.1))  # the bank above used the default
expect(on_ring['border="valid"'] > 1.5 * ring.mean(), f"no crowding on the ring:\n{on_ring}", strict=ON_DEMO)
expect(on_ring['border="zeros"'] < on_ring['border="valid"'], f"zeros did not move picks:\n{on_ring}", strict=ON_DEMO)
on_ring.round(3)

# %% [markdown]
# The same training image with the picks of each variant. With `"valid"` the ring is crowded;
# with `"zeros"` the picks move inside the image, onto the texture. (`"reflect"` keeps many on
# the ring: mirrored neighbours repeat the border features, and the backbone's own padding still
# marks them.) Which variant detects better is a separate question, measured per dataset:
# `scripts/aggregation_study.py`.

# %%
figure = Figure(figsize=(12, 4.2), layout="constrained")
for ax, (border, picks) in zip(figure.subplots(1, 3), picks_by_border.items()):
    image_of, rows_, cols_ = patch_positions(picks, grid)
    here = image_of == 0
    viz.plot_patch_picks(images[0], rows_[here], cols_[here], grid, ax=ax,
                         title=f'border="{border}": {int(here.sum())} picks, '
                               f'{ring[picks[here] % ring.size].mean():.0%} on the ring')
figure

# %% [markdown]
# ## 4 · What does the ratio cost? Coverage and AUROC
#
# Now the question that matters: how small can the coreset be before detection suffers? For each
# ratio we fit PatchCore with each sampler (from the cached backbone features) and score the test
# set. The paper (Sec. 4.4) finds that greedy coresets of 1–10 % lose almost nothing, while random
# subsampling degrades much sooner — the uncovered rare patches turn into false alarms.

# %%
masks = ground_truth_masks(split, IMAGE_SIZE)  # None when the dataset has no masks


def detection(model, fit: bool = True) -> dict:
    """Fit (from the feature cache), score and measure: the kit's one evaluation loop."""
    result = evaluate(model, split, fit=fit, masks=masks, pixel=masks is not None, per_defect=False)
    return {"image_auroc": result.metrics["image_auroc"], "pixel_auroc": result.metrics["pixel_auroc"],
            "ms per image": 1000 * result.seconds["infer"] / len(split.test)}


rows = []
for ratio in RATIOS:
    for sampler in ("greedy", "random"):
        rows.append({"sampler": sampler, "ratio": ratio,
                     **detection(PatchCore(coreset_ratio=ratio, sampler=sampler, **settings))})
reference = detection(full, fit=False)  # the whole bank, fitted above
table = pd.DataFrame(rows).merge(coverage[["sampler", "ratio", "radius"]], on=["sampler", "ratio"])
viz.plot_coreset_curves(table, metrics=("radius", "image_auroc") + (("pixel_auroc",) if split.has_masks else ()))

# %%
print(f"whole bank: image AUROC {reference['image_auroc']:.3f}, pixel AUROC {reference['pixel_auroc'] or float('nan'):.3f}")
greedy_10 = table.query("sampler == 'greedy' and ratio == 0.1").image_auroc.item()
expect(greedy_10 > 0.6 and greedy_10 >= reference["image_auroc"] - 0.1, f"10 % greedy: {greedy_10:.3f}, "
       f"whole bank: {reference['image_auroc']:.3f}", strict=ON_DEMO)
table.round(3)

# %% [markdown]
# ## 5 · Explore
#
# Move the ratio and watch the coreset thin out in the UMAP picture and in the training images;
# switch the sampler between greedy and random to see coverage against density. (Both pick
# orders were computed once; the slider only takes a longer or shorter prefix.) The *bank*
# chooser builds the memory bank from other patch features — patch size 1 or 5, the "valid"
# border of section 3b, the official code's unfold aggregation, deeper stages — the first time
# it is chosen: a fit from the feature cache (a new pair of stages runs the backbone once), a
# greedy search and a UMAP, tens of seconds; after that it is kept.

# %%
def bank_state(**changes):
    model = PatchCore(sampler="none", **settings, **changes).fit(split.train_paths)
    return coreset_state(model.memory_bank_, model.feature_shape_, images, max_ratio=max(RATIOS), n_shown=N_SHOWN,
                         cache_dir=umap_cache_dir(), umap_params=UMAP_PARAMS)


variants = {"layer2+3, p = 3, mean, border zeros (default)": state,
            "patch size 1": lambda: bank_state(patch_size=1),
            "patch size 5": lambda: bank_state(patch_size=5),
            'border "valid"': lambda: bank_state(border="valid"),
            'aggregation "unfold" (official code)': lambda: bank_state(aggregation="unfold", border="zeros"),
            "layer3+4, p = 1": lambda: bank_state(layers=("layer3", "layer4"), patch_size=1)}
coreset_explorer(state, ratios=RATIOS, variants=variants)

# %% [markdown]
# ## What we have
#
# The memory bank holds every nominal patch; greedy k-center keeps a few percent of them that
# still cover the whole bank, within a factor 2 of the best possible radius, so nearest-neighbour
# distances — and AUROC — barely change while the search becomes much cheaper. Random
# subsampling of the same size leaves gaps. The random projection that speeds greedy up moves
# squared distances by about $\sqrt{2/k}$, and how border patches are built decides where many
# picks go. Notebook **03**
# asks how many *training images* PatchCore needs; notebook **04** looks at the resulting anomaly
# maps defect by defect.
