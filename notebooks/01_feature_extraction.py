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
# # 01 · From pixels to patch embeddings
#
# PatchCore (Roth et al., *Towards Total Recall in Industrial Anomaly Detection*, CVPR 2022) never
# trains a network. It borrows one that learned to classify ImageNet photographs, reads the feature
# maps *inside* it, and describes every small patch of an image by a vector. Everything that
# follows — the memory bank, the coreset, the nearest-neighbour score — works on these vectors, so
# this notebook looks at how they are made (the paper's Section 3.1):
#
# 1. a backbone is a stack of **stages**, each coarser and more abstract than the one before;
# 2. a stage's feature at one position "sees" a **receptive field** of the image;
# 3. **local p×p aggregation** lets each patch see a little more of its surroundings;
# 4. two stages are **aligned** to one grid and concatenated into the **patch embedding**;
# 5. a **PCA** of the embeddings shows what separates a defect from the nominal texture.
#
# Every step calls a function of `patchcore_kit`; open `patchcore_kit/features.py` next to this
# notebook to read the same recipe as code. Three **exercises** ask you to write steps yourself
# (the p×p aggregation, the patch embedding, the nearest-neighbour score); a checker compares your
# function with the package's, and a hidden cell tagged `solution` holds an answer.
#
# **Running time** on a 2-core CPU: about 40 s in FAST mode (measured) and 2–3 minutes with the
# full settings (estimated: 40 training images through the backbone once, three small fits).

# %% [markdown]
# ## Settings
#
# The notebook runs on the built-in demo data (texture photographs with painted-on defects, built
# in a second, no download). To use your own copy of MVTec AD or MTD, set `DATA_ROOT` to its folder
# and `FORMAT` to `"mvtec"`, `"mtd"` or `"folder"` — or set the environment variables
# `PATCHCORE_KIT_DATASET`, `PATCHCORE_KIT_FORMAT`, `PATCHCORE_KIT_CATEGORY`. `FAST` (set by
# `PATCHCORE_KIT_FAST=1`, as the test suite does) shrinks images and counts so that the whole
# notebook runs in seconds. `notebook_dataset` (from `patchcore_kit.lessons`, shared by all
# notebooks) builds the demo data or loads yours, and keeps a seeded draw of `N_TRAIN` training
# images.

# %% tags=["parameters"]
import os

FAST = os.environ.get("PATCHCORE_KIT_FAST", "0") == "1"
DATA_ROOT = os.environ.get("PATCHCORE_KIT_DATASET")  # None: the built-in demo data
FORMAT = os.environ.get("PATCHCORE_KIT_FORMAT", "mvtec")  # "mvtec", "mtd" or "folder"
CATEGORY = os.environ.get("PATCHCORE_KIT_CATEGORY", "brick")  # MVTec AD / demo category
BACKBONE = "efficientnet_lite0"  # ImageNet weights ship with the package: works offline
IMAGE_SIZE = 128 if FAST else 224
N_TRAIN = 10 if FAST else 40

# %%
# %matplotlib inline
import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from patchcore_kit import viz
from patchcore_kit.backbones import STAGES, load_backbone
from patchcore_kit.data import read_sample_mask
from patchcore_kit.evaluate import evaluate, ground_truth_masks
from patchcore_kit.exercises import check_aggregation, check_nearest_distance, check_patch_embedding
from patchcore_kit.features import FeatureExtractor, aggregate_local, align_to, flatten_patches, patch_embeddings
from patchcore_kit.images import display_image, image_tensor, resize_mask, to_pil_list
from patchcore_kit.lessons import expect, notebook_dataset
from patchcore_kit.neighbors import nearest_neighbors
from patchcore_kit.patchcore import PatchCore
from patchcore_kit.paths import feature_cache_dir
from patchcore_kit.receptive_fields import receptive_field_maps

# %%
FEATURE_CACHE = feature_cache_dir()  # backbone maps are computed once per image
split = notebook_dataset(DATA_ROOT, FORMAT, CATEGORY, fast=FAST, n_train=N_TRAIN)
assert 0 < len(split.train) <= N_TRAIN and split.test_labels.any()  # nominal training images, defects to find
ON_DEMO = DATA_ROOT is None  # data-dependent checks: strict on the demo data, warnings on yours
split

# %% [markdown]
# ## 1 · A backbone is a stack of stages
#
# An ImageNet classifier shrinks the image step by step. Each *stage* halves the grid and adds
# channels: early stages respond to edges and colours, late ones to object parts and classes. The
# kit names the stages after ResNet's (`layer1` … `layer4`, strides 4, 8, 16, 32) for every
# backbone; here it is EfficientNet-Lite0, whose ImageNet weights come with the package. We run one
# training image through all four stages and look at the shapes.

# %%
backbone = load_backbone(BACKBONE)
image_path = split.train_paths[0]
batch = image_tensor(to_pil_list([image_path]), IMAGE_SIZE)  # resized + ImageNet-normalised
stage_maps = dict(zip(STAGES, backbone(batch, STAGES)))
pd.DataFrame(
    [(name, m.shape[1], backbone.strides[name], f"{m.shape[2]}×{m.shape[3]}") for name, m in stage_maps.items()],
    columns=["stage", "channels", "stride", "grid"],
)

# %%
for name, fmap in stage_maps.items():
    assert fmap.shape[-2:] == (IMAGE_SIZE // backbone.strides[name],) * 2, name

# %% [markdown]
# A map with more than three channels cannot be looked at directly. Below, each map's first three
# principal components are shown as red, green and blue: similar colours mean similar features.
# `layer1` still traces the mortar lines; `layer4` is a handful of coarse cells that each describe
# a large part of the image.

# %%
picture = display_image(image_path, IMAGE_SIZE)
viz.plot_feature_maps({name: m[0] for name, m in stage_maps.items()}, image=picture)

# %% [markdown]
# ## 2 · How much of the image does one feature see?
#
# A feature at one grid position depends on a window of input pixels, its *receptive field*
# (fixed by the kernel sizes and strides of the layers below it). We look at it through the
# gradient of the centre feature with respect to the input. That gradient can only be non-zero
# *inside* the receptive field, but it can also be zero inside it (a ReLU that is off, a weight
# that happens to be zero), so its non-zero support is a **subset** of the receptive field: the
# box marks that support (clipped by the image border) and is a lower bound on the field's size.
# The heat shows which pixels matter most (the *effective* receptive field, concentrated in the
# middle).
#
# This is why PatchCore uses the *middle* of the hierarchy (Sec. 3.1): `layer1` sees too little
# to tell a scratch from a grain of the texture, and `layer4` sees the whole image and is biased
# towards ImageNet's classes. `layer2` and `layer3` are local enough to place a defect and generic
# enough to describe any surface.

# %%
fields = receptive_field_maps(backbone, batch, STAGES)
viz.plot_receptive_fields(picture, fields, backbone.strides)

# %%
extent = {name: int((field.max(axis=0) > 0).sum()) for name, field in fields.items()}  # width of the gradient's support
assert list(extent.values()) == sorted(extent.values()), extent  # deeper stages see more
extent

# %% [markdown]
# ## 3 · Local aggregation: a patch sees its neighbours
#
# A single `layer2` feature sees a few dozen pixels. PatchCore widens this view without losing
# resolution: each position's feature is replaced by the **average over its p×p neighbourhood**
# (stride 1, so the grid stays the same size). The paper uses p = 3 (Sec. 3.1) and finds in its
# ablation (Sec. 4.4) that some aggregation helps while too much blurs small defects away.
#
# **In symbols** (Sec. 3.1). Let $\phi_{i,j} \in \mathbb{R}^{c^* \times h^* \times w^*}$ be the
# feature map of stage $j$ for image $x_i$, and $\phi_{i,j}(h, w) \in \mathbb{R}^{c^*}$ its feature
# at position $(h, w)$. The neighbourhood of patch size $p$ around $(h, w)$ is (Eq. 1)
#
# $$\mathcal{N}_p^{(h,w)} = \{(a, b) \mid a \in [h - \lfloor p/2 \rfloor, \dots, h + \lfloor p/2 \rfloor],\;
#   b \in [w - \lfloor p/2 \rfloor, \dots, w + \lfloor p/2 \rfloor]\},$$
#
# and the locally aware feature at $(h, w)$ aggregates the features in it (Eq. 2):
#
# $$\phi_{i,j}\big(\mathcal{N}_p^{(h,w)}\big) = f_\text{agg}\big(\{\phi_{i,j}(a, b) \mid (a, b) \in
#   \mathcal{N}_p^{(h,w)}\}\big), \qquad f_\text{agg} = \text{mean}.$$
#
# At the border part of $\mathcal{N}_p^{(h,w)}$ lies outside the map; Eq. 1 does not say what to
# do there. `border="valid"` averages only the positions that exist, so a border patch is a mean
# over 4 or 6 features instead of 9 — built differently from the rest; notebook 02 shows what that
# does to the coreset. The kit's default, `border="zeros"` (as the authors' code), counts the
# missing neighbours as zeros; `"reflect"` mirrors the map.
#
# Left to right: `layer2` with p = 1 (no aggregation), 3 and 5, coloured by one shared PCA so
# colours compare across panels.

# %%
layer2 = stage_maps["layer2"]
aggregated = {f"p = {p}": aggregate_local(layer2, p)[0] for p in (1, 3, 5)}
viz.plot_feature_maps(aggregated)


# %%
def roughness(fmap: torch.Tensor) -> float:
    """Mean change of the feature between horizontally neighbouring positions."""
    return float((fmap[:, :, 1:] - fmap[:, :, :-1]).norm(dim=0).mean())


smoothness = {p: roughness(fmap) for p, fmap in aggregated.items()}
assert all(fmap.shape == layer2[0].shape for fmap in aggregated.values())  # same grid, same channels
expect(smoothness["p = 1"] > smoothness["p = 3"] > smoothness["p = 5"], f"not smoother with p: {smoothness}", strict=ON_DEMO)
smoothness

# %% [markdown]
# ### Exercise 1 · p×p aggregation
#
# Write `my_aggregate(feature_map, p)`: `feature_map` is a tensor `(B, C, H, W)`, `p` an odd
# patch size; return the tensor of Eq. 2 with $f_\text{agg}$ = mean, same shape, where a border
# position averages only the neighbours that exist. `check_aggregation` compares your function
# with `features.aggregate_local(..., border="valid")` for p = 1, 3 and 5. (Try it first with two loops over `h`
# and `w`; then find the one-line version.)

# %%
def my_aggregate(feature_map, p):
    raise NotImplementedError  # your code here


check_aggregation(my_aggregate)

# %% tags=["solution"] jupyter={"source_hidden": true}
# Solution (hidden): average pooling with stride 1 and p // 2 padding that is *not* counted.
def my_aggregate(feature_map, p):
    if p == 1:
        return feature_map
    return torch.nn.functional.avg_pool2d(feature_map, p, stride=1, padding=p // 2, count_include_pad=False)


assert check_aggregation(my_aggregate)

# %% [markdown]
# What does that do to the anomaly map? Below, three PatchCore models that differ only in `p`
# score the same defective test image. They keep their whole memory bank (`sampler="none"`, no
# coreset: notebook 02), so nothing but `p` differs; the backbone maps come from the on-disk cache. Top: the image with the ground truth
# outlined in green; below: the anomaly map over it, each stretched to its own maximum so that
# the shapes compare. A larger p gives smoother maps with fewer isolated hot spots, and blurs the
# outline of the defect.

# %%
masks = ground_truth_masks(split, IMAGE_SIZE)  # None when the dataset has no masks
by_p = {}  # fit, score the test set and measure: the kit's one evaluation loop
for p in (1, 3, 5):
    model = PatchCore(backbone=BACKBONE, image_size=IMAGE_SIZE, patch_size=p, sampler="none",
                      feature_cache=FEATURE_CACHE, calibrate=False)
    by_p[p] = evaluate(model, split, masks=masks, pixel=masks is not None, per_defect=False)
shown = next(i for i, s in enumerate(split.test) if s.label == 1)  # the first defective test image
own_scale = [r.maps[shown] / r.maps[shown].max() for r in by_p.values()]  # each map to its own maximum
viz.plot_gallery([display_image(split.test_paths[shown], IMAGE_SIZE)] * 3,
                 [None if masks is None else masks[shown]] * 3, own_scale,
                 titles=[f"p = {p}" for p in by_p], vmin=0, vmax=1, colorbar=False, panel_size=2.6)

# %%
auroc_by_p = pd.DataFrame(
    {f"p = {p}": {"image AUROC": result.metrics["image_auroc"], "pixel AUROC": result.metrics["pixel_auroc"]}
     for p, result in by_p.items()}
).T
expect(auroc_by_p.loc["p = 3", "image AUROC"] > 0.6, f"near chance (0.5):\n{auroc_by_p}", strict=ON_DEMO)
auroc_by_p.astype(float).round(3)

# %% [markdown]
# ## 4 · Aligning two stages on one grid
#
# `layer2` and `layer3` have different grids (stride 8 and 16). To describe a patch by both, the
# coarser map is bilinearly upsampled to the finer grid (`align_to`), and the two are concatenated
# along the channels. Every position of the `layer2` grid now carries mid-level detail *and* the
# wider context of `layer3`. (The two `layer3` panels share their colours: upsampling only
# interpolates between the coarse cells.)

# %%
layer3 = aggregate_local(stage_maps["layer3"], 3)
aligned = align_to(layer3, layer2.shape[-2:])
viz.plot_feature_maps({"layer2 (p = 3)": aggregate_local(layer2, 3)[0], "layer3 (p = 3)": layer3[0],
                       "layer3 aligned to layer2's grid": aligned[0]})

# %%
assert aligned.shape[-2:] == layer2.shape[-2:] and aligned.shape[1] == layer3.shape[1]

# %% [markdown]
# ## 5 · The patch embedding
#
# `patch_embeddings` is the whole recipe in one call: aggregate each stage, align it, concatenate.
# The result has one vector per grid position; `flatten_patches` turns the grid into rows, image
# by image. The `PatchCore` estimator calls exactly this. Collected over all training images,
# these vectors are the memory bank (Eq. 3–4 of the paper, with stride $s = 1$):
#
# $$\mathcal{P}_{s,p}(\phi_{i,j}) = \{\phi_{i,j}(\mathcal{N}_p^{(h,w)}) \mid h, w \bmod s = 0,\;
#   h < h^*, w < w^*\}, \qquad
#   \mathcal{M} = \bigcup_{x_i \in \mathcal{X}_N} \mathcal{P}_{s,p}(\phi_j(x_i)).$$
#
# **Channel pooling is not automatic.** The paper pools the concatenated channels of
# WideResNet-50 (512 + 1024) down to 1024 by adaptive average pooling. In the kit that is the
# `target_dim` parameter, which defaults to `None` (no pooling), and no notebook sets it. With
# EfficientNet-Lite0 the embedding keeps all 40 + 112 = 152 channels: `layer3` supplies 112 of
# the 152 dimensions and most of every distance between patches. `target_dim` pools each stage
# to an equal share first (here 2 × 40 = 80), so both stages weigh the same; the cell after next
# measures the difference.

# %%
layers = ["layer2", "layer3"]
embedding = patch_embeddings([stage_maps[name] for name in layers], patch_size=3)
rows = flatten_patches(embedding)
model = PatchCore(backbone=BACKBONE, image_size=IMAGE_SIZE)
assert torch.equal(model.embed([stage_maps[name] for name in layers]), embedding)
assert embedding.shape == (1, backbone.channels["layer2"] + backbone.channels["layer3"], *layer2.shape[-2:])
assert rows.shape == (embedding.shape[2] * embedding.shape[3], embedding.shape[1])
print(f"one image -> embedding {tuple(embedding.shape)} -> {rows.shape[0]} patches of {rows.shape[1]} numbers")

# %%
def layer3_share(embedding, n_layer2):
    """Share of the squared distance between neighbouring patches that comes from the layer3 channels."""
    step = (embedding[..., 1:] - embedding[..., :-1]) ** 2  # horizontal neighbours, per channel
    return float(step[:, n_layer2:].sum() / step.sum())


stage_list = [stage_maps[name] for name in layers]
shares = pd.Series({
    "target_dim=None (default): 40 + 112 channels": layer3_share(embedding, backbone.channels["layer2"]),
    "target_dim=80: 40 + 40 channels": layer3_share(patch_embeddings(stage_list, 3, target_dim=80), 40),
}, name="layer3's share of squared patch distances")
assert embedding.shape[1] == 152 and backbone.channels["layer3"] == 112  # no pooling unless asked
shares.round(2)

# %% [markdown]
# ## 6 · What separates a defect? A PCA of patch features
#
# Now the embeddings of many patches at once: every patch of the training images (nominal) and of
# the defective test images, each defective patch labelled by the defect type under it (from the
# ground-truth mask, shrunk to the feature grid). Two principal components of the training patches
# give a map of the feature space.
#
# * **Coloured by position** (left): patches from all over the grid mix — a texture looks the
#   same everywhere, so the features say little about *where* a patch is. (On objects such as
#   MVTec's screws, position would matter; PatchCore ignores it on purpose, which makes it robust
#   to objects that are not aligned.)
# * **Coloured by defect** (right): defective patches gather at the fringes of the nominal cloud,
#   each defect type in its own direction. Two components hide most of the dimensions, so the
#   clouds overlap here; the distances below are measured in the full space.

# %%
extractor = FeatureExtractor(BACKBONE, layers, IMAGE_SIZE, cache_dir=FEATURE_CACHE)
anomalous = [s for s in split.test if s.label == 1]


def embed_paths(paths) -> torch.Tensor:
    return patch_embeddings(extractor.layer_maps(paths), patch_size=3)


train_grid = embed_paths(split.train_paths)
test_grid = embed_paths([s.path for s in anomalous])
grid = tuple(train_grid.shape[-2:])
pca = PCA(n_components=2, random_state=0).fit(flatten_patches(train_grid).numpy())

labels = ["nominal"] * (len(split.train) * grid[0] * grid[1])
for sample in anomalous:
    inside = resize_mask(read_sample_mask(sample), grid).ravel() if split.has_masks else np.ones(grid[0] * grid[1], bool)
    labels += [sample.defect_type if hit else "nominal" for hit in inside]
labels = np.array(labels)
features = torch.cat([flatten_patches(train_grid), flatten_patches(test_grid)])
positions = np.arange(len(features)) % (grid[0] * grid[1])
viz.plot_patch_pca(pca.transform(features.numpy()), positions // grid[1], positions % grid[1], grid, labels)

# %% [markdown]
# In the full space: the distance from each test patch to its nearest *training* patch — the raw
# PatchCore patch score (Sec. 3.3) — is larger inside defects than outside them. That is the
# premise of PatchCore: a patch far from *every* nominal patch is anomalous.

# %%
n_train_patches = len(split.train) * grid[0] * grid[1]
test_rows = features[n_train_patches:]
distance, _ = nearest_neighbors(test_rows, features[:n_train_patches], k=1)
distance = distance[:, 0].numpy()
test_labels = labels[n_train_patches:]
summary = pd.Series({"inside defects": distance[test_labels != "nominal"].mean(),
                     "outside defects": distance[test_labels == "nominal"].mean()}, name="mean nearest-neighbour distance")
expect(summary["inside defects"] > summary["outside defects"], f"defects not farther:\n{summary}", strict=ON_DEMO)
summary.round(2)

# %% [markdown]
# ### Exercise 2 · The patch embedding
#
# Write `my_embedding(layer_maps, p)`: `layer_maps` is a list of stage maps `(B, C_l, H_l, W_l)`,
# the first one the finest. Aggregate each with your `my_aggregate` (Eq. 2), resize the coarser
# ones to the first map's grid bilinearly (`align_corners=False`), and concatenate along the
# channels: the embedding of section 5 without channel pooling.

# %%
def my_embedding(layer_maps, p):
    raise NotImplementedError  # your code here


check_patch_embedding(my_embedding)

# %% tags=["solution"] jupyter={"source_hidden": true}
def my_embedding(layer_maps, p):
    grid = layer_maps[0].shape[-2:]
    parts = [torch.nn.functional.interpolate(my_aggregate(m, p), size=grid, mode="bilinear", align_corners=False)
             for m in layer_maps]
    return torch.cat(parts, dim=1)


assert check_patch_embedding(my_embedding)

# %% [markdown]
# ### Exercise 3 · The nearest-neighbour patch score
#
# The distances above are $s(m^\text{test}) = \min_{m \in \mathcal{M}} \lVert m^\text{test} - m \rVert_2$
# for every test patch. Write `my_nearest_distance(queries, bank)` for `queries (Q, D)` and
# `bank (N, D)` returning `(Q,)`. Then use it on `test_rows` and `features[:n_train_patches]`:
# do you get `distance`?

# %%
def my_nearest_distance(queries, bank):
    raise NotImplementedError  # your code here


check_nearest_distance(my_nearest_distance)

# %% tags=["solution"] jupyter={"source_hidden": true}
def my_nearest_distance(queries, bank):
    return torch.cdist(queries, bank).min(dim=1).values  # fine for a few thousand rows; the kit works in tiles


assert check_nearest_distance(my_nearest_distance)
assert np.allclose(my_nearest_distance(test_rows[:200], features[:n_train_patches]).numpy(), distance[:200], atol=1e-3)

# %% [markdown]
# ## What we have
#
# An image becomes a grid of patch embeddings: mid-level stages, each position averaged over its
# p×p neighbourhood, the coarser stage aligned to the finer grid, concatenated. Defective patches
# lie away from the nominal ones. Notebook **02** collects the nominal patches into a memory bank
# and shows why — and how — PatchCore keeps only a small coreset of them.
