"""The methods PatchCore is compared with, on the same backbone and the same API.

Each baseline reads the stages its own paper sets, from the same backbone as PatchCore (the
PatchCore paper reimplements PaDiM and SPADE "with WideResNet50 for comparability"), and follows
the estimator contract of :mod:`patchcore_kit.base`: ``fit`` / ``decision_function`` /
``anomaly_map`` / ``predict``, higher = more anomalous. All stages come out of one feature cache,
which stores every stage of an image in one entry, so a sweep still runs the backbone once.

* :class:`PaDiM` (Defard et al., 2020): one Gaussian *per grid position*. Fit: the mean and the
  covariance (plus ``epsilon * I``) of a seeded random subset of the channels of layer1 + 2 + 3
  (WRN50: 550 of 1,792) at each position; score: the Mahalanobis distance of each test position
  to its position's Gaussian.
* :class:`SPADE` (Cohen & Hoshen, 2020): first find the ``top_k_images`` (50) training images
  nearest to the test image in the average-pooled final stage (layer4); the image score is the
  mean distance to them. Then every test position is compared with *all* positions of those
  images in the layer1 + 2 + 3 pixel features (``k``-NN): the anomaly map.
* :class:`NearestImage`: the plainest baseline, the distance to the single nearest training
  image in the same global feature as SPADE.

The "pixel" features of PaDiM and SPADE are the layer maps aligned to the first layer's grid and
concatenated, *without* PatchCore's local p×p aggregation; that aggregation is one of the things
PatchCore adds. ``layers=PatchCore's layers, global_layer=None`` (global = deepest of them) is the
"shared stages" setting of earlier versions of the kit, kept as the sweep's
``baseline_stages="shared"``.

>>> model = PaDiM(backbone="efficientnet_lite0").fit(train_paths)    # doctest: +SKIP
>>> model.decision_function(test_paths)                               # doctest: +SKIP
>>> SPADE(top_k_images=50, k=1).fit(train_paths).anomaly_map(test_paths)   # doctest: +SKIP

Modules: :mod:`.common` (aligned and global features, the exact block-wise nearest-neighbour
kernels), :mod:`.padim`, :mod:`.spade` (SPADE and 1-NN); everything is importable from here.
"""

from __future__ import annotations

from .common import (
    SPADE_CHUNK_BYTES,
    aligned_features,
    global_features,
    knn_distance,
    nearest_images,
    nearest_in_each_image,
    positions_last,
)
from .padim import (
    PADIM_LAYERS,
    PADIM_SHARE,
    PaDiM,
    gaussian_from_sums,
    mahalanobis,
    outer_products,
    padim_feature_count,
    random_channels,
)
from .spade import PIXEL_MATCHING, SPADE, SPADE_GLOBAL_LAYER, SPADE_LAYERS, NearestImage, spade_image_scores

__all__ = [
    "PaDiM",
    "SPADE",
    "NearestImage",
    "PADIM_LAYERS",
    "PADIM_SHARE",
    "SPADE_LAYERS",
    "SPADE_GLOBAL_LAYER",
    "SPADE_CHUNK_BYTES",
    "aligned_features",
    "global_features",
    "positions_last",
    "random_channels",
    "gaussian_from_sums",
    "outer_products",
    "mahalanobis",
    "padim_feature_count",
    "knn_distance",
    "nearest_in_each_image",
    "nearest_images",
    "spade_image_scores",
    "PIXEL_MATCHING",
]
