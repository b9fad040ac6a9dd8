"""Checkers for the notebooks' exercises: your function against the package's own.

Each ``check_*`` takes the function a student wrote, calls it on small random inputs, compares
the answer with the package function that the kit itself uses, and prints one line: a pass, or
what differs and a hint. It returns ``True`` or ``False`` and never raises, whatever the student's
function does (an unsolved exercise raises ``NotImplementedError``: "not solved yet").

>>> from patchcore_kit.exercises import check_eq7_weight
>>> def weight(distances):
...     raise NotImplementedError
>>> check_eq7_weight(weight)
⏳ Eq. 7 weight: not solved yet. Hint: ...
False

Notebook by notebook:

* 01: :func:`check_aggregation`, :func:`check_patch_embedding`, :func:`check_nearest_distance`
* 02: :func:`check_greedy_coreset`, :func:`check_covering_radius`, :func:`check_random_projection`
* 03: :func:`check_gaussian`, :func:`check_mahalanobis`, :func:`check_spade_image_scores`
* 04: :func:`check_eq7_weight`, :func:`check_anomaly_map`, :func:`check_pro_curve`
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .base import upsample_and_smooth
from .baselines import gaussian_from_sums, mahalanobis, spade_image_scores
from .coreset import covering_radius, greedy_coreset_plain
from .features import aggregate_local, patch_embeddings
from .metrics import pro_curve
from .neighbors import nearest_neighbors
from .patchcore import eq7_weight

__all__ = [
    "check_aggregation",
    "check_patch_embedding",
    "check_nearest_distance",
    "check_greedy_coreset",
    "check_covering_radius",
    "check_random_projection",
    "check_gaussian",
    "check_mahalanobis",
    "check_spade_image_scores",
    "check_eq7_weight",
    "check_anomaly_map",
    "check_pro_curve",
]


class _Mismatch(Exception):
    """The student's answer differs from the package's; the message says how."""


def _numpy(value, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _Mismatch(f"{what}: expected numbers (an array or tensor), got {type(value).__name__}") from None


def _same(got, expected, what: str, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    got, expected = _numpy(got, what), _numpy(expected, what)
    if got.shape != expected.shape:
        raise _Mismatch(f"{what}: shape {got.shape}, expected {expected.shape}")
    if not np.all(np.isfinite(got)):
        raise _Mismatch(f"{what}: contains NaN or infinite values")
    if not np.allclose(got, expected, atol=atol, rtol=rtol):
        worst = np.unravel_index(np.argmax(np.abs(got - expected)), got.shape)
        raise _Mismatch(
            f"{what}: differs from the package's answer; largest difference at index "
            f"{tuple(int(i) for i in worst)}: yours {got[worst]:.5g}, expected {expected[worst]:.5g}"
        )


def _check(name: str, hint: str, attempt: Callable[[], str | None]) -> bool:
    try:
        note = attempt()
    except NotImplementedError:
        print(f"⏳ {name}: not solved yet. Hint: {hint}")
        return False
    except _Mismatch as problem:
        print(f"❌ {name}: {problem}. Hint: {hint}")
        return False
    except Exception as error:  # the student's code failed: say so, never crash the notebook
        print(f"❌ {name}: your function raised {type(error).__name__}: {error}. Hint: {hint}")
        return False
    print(f"✅ {name}: matches the package" + (f" ({note})" if note else "") + ".")
    return True


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- 01: patch features ------------------------------------------------------------------------
def check_aggregation(student: Callable) -> bool:
    """``student(feature_map (B, C, H, W), p) -> (B, C, H, W)``: the p×p neighbourhood mean.

    Compared with :func:`patchcore_kit.features.aggregate_local` (``border="valid"``: a border position
    averages only the neighbours that exist) for p = 1, 3, 5.
    """

    def attempt():
        x = torch.randn(2, 4, 7, 9, generator=_generator(1))
        for p in (1, 3, 5):
            _same(student(x.clone(), p), aggregate_local(x, p, border="valid"), f"p = {p}")
        return "p = 1, 3, 5"

    return _check(
        "p×p aggregation",
        "average each position over the p×p window centred on it, stride 1; "
        "at the border average only the positions that exist (torch.nn.functional.avg_pool2d with "
        "padding=p // 2 and count_include_pad=False does exactly this)",
        attempt,
    )


def check_patch_embedding(student: Callable) -> bool:
    """``student(layer_maps [(B, C_l, H_l, W_l)], p) -> (B, sum C_l, H_0, W_0)``: Eq. 1-2.

    Compared with :func:`patchcore_kit.features.patch_embeddings` (no channel pooling, ``border="valid"``).
    """

    def attempt():
        g = _generator(2)
        maps = [torch.randn(2, 5, 8, 8, generator=g), torch.randn(2, 6, 4, 4, generator=g)]
        _same(student([m.clone() for m in maps], 3), patch_embeddings(maps, 3, border="valid"), "embedding")

    return _check(
        "patch embedding",
        "aggregate every stage p×p, resize the coarser ones to the first stage's "
        "grid (bilinear, align_corners=False), then torch.cat along the channels (dim=1)",
        attempt,
    )


def check_nearest_distance(student: Callable) -> bool:
    """``student(queries (Q, D), bank (N, D)) -> (Q,)``: each query's distance to its nearest bank row."""

    def attempt():
        g = _generator(3)
        queries, bank = torch.randn(40, 16, generator=g), torch.randn(300, 16, generator=g)
        _same(student(queries.clone(), bank.clone()), nearest_neighbors(queries, bank, k=1)[0][:, 0], "distances")

    return _check(
        "nearest-neighbour score",
        "torch.cdist(queries, bank) gives all Euclidean distances; take the minimum over the bank (dim=1)",
        attempt,
    )


# --- 02: the coreset ---------------------------------------------------------------------------
def check_greedy_coreset(student: Callable) -> bool:
    """``student(features (N, D), n, start) -> n indices``: greedy k-center (Algorithm 1), ``start`` first.

    Compared with :func:`patchcore_kit.coreset.greedy_coreset_plain` without projection.
    """

    def attempt():
        x = torch.randn(500, 8, generator=_generator(4))
        got = [int(i) for i in np.asarray(student(x.clone(), 25, 7)).ravel()]
        expected = greedy_coreset_plain(x, 25, projection_dim=None, start=7).tolist()
        if got != expected:
            first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            raise _Mismatch(
                f"picks differ from pick {first} on: yours {got[first : first + 3]}..., "
                f"expected {expected[first : first + 3]}... ({len(got)} picks, expected {len(expected)})"
            )
        return "25 picks"

    return _check(
        "greedy k-center",
        "keep min_dist = each point's distance to its nearest chosen centre; start "
        "with [start], then repeat: pick argmax(min_dist), update min_dist = minimum(min_dist, distance "
        "to the new pick)",
        attempt,
    )


def check_covering_radius(student: Callable) -> bool:
    """``student(features (N, D), indices) -> float``: the largest distance of a point to its nearest chosen one."""

    def attempt():
        x = torch.randn(400, 6, generator=_generator(5))
        picks = np.random.default_rng(5).choice(400, 20, replace=False)
        _same(float(student(x.clone(), picks.copy())), covering_radius(x, picks), "radius")

    return _check(
        "covering radius",
        "distances of every point to the chosen points (torch.cdist(x, x[indices])), "
        "minimum over the chosen ones, maximum over the points",
        attempt,
    )


def check_random_projection(student: Callable) -> bool:
    """``student(features (N, D), dim, seed) -> (N, dim)``: a Gaussian random projection.

    Random matrices differ, so the check is statistical: squared distances must keep their mean
    (ratio 1 ± 0.1) and spread by about ``sqrt(2 / dim)`` (within a factor 1.5), as
    :func:`patchcore_kit.coreset.projection_distortion` measures for the package's projection.
    """

    def attempt():
        x = torch.randn(600, 256, generator=_generator(6))
        dim = 32
        projected = torch.as_tensor(_numpy(student(x.clone(), dim, 0), "projection")).float()
        if projected.shape != (600, dim):
            raise _Mismatch(f"projection: shape {tuple(projected.shape)}, expected (600, {dim})")
        rng = np.random.default_rng(0)
        a, b = rng.integers(600, size=3000), rng.integers(600, size=3000)
        a, b = a[a != b], b[a != b]
        ratio = (((projected[a] - projected[b]) ** 2).sum(1) / ((x[a] - x[b]) ** 2).sum(1)).numpy()
        expected_sd = (2 / dim) ** 0.5
        if abs(ratio.mean() - 1) > 0.1:
            raise _Mismatch(
                f"squared distances change by a factor {ratio.mean():.3f} on average, expected 1 "
                "(scale the matrix by 1 / sqrt(dim))"
            )
        if not expected_sd / 1.5 < ratio.std() < expected_sd * 1.5:
            raise _Mismatch(
                f"relative spread of squared distances {ratio.std():.3f}, expected about "
                f"{expected_sd:.3f} = sqrt(2 / dim)"
            )
        return f"ratio mean {ratio.mean():.3f}, sd {ratio.std():.3f} vs sqrt(2/{dim}) = {expected_sd:.3f}"

    return _check(
        "random projection",
        "x @ M with M a (D, dim) matrix of standard normal numbers divided by "
        "sqrt(dim) (torch.randn with a torch.Generator().manual_seed(seed))",
        attempt,
    )


# --- 03: the baselines -------------------------------------------------------------------------
def check_gaussian(student: Callable) -> bool:
    """``student(x (N, d), epsilon) -> (mean (d,), covariance (d, d))``: PaDiM's regularised Gaussian."""

    def attempt():
        x = torch.randn(12, 5, generator=_generator(7)).double() * 2 + 1
        mean, covariance = student(x.clone(), 0.01)
        ref_mean, ref_cov = gaussian_from_sums(x.sum(0)[None], (x.T @ x)[None], len(x), 0.01)
        _same(mean, ref_mean[0], "mean")
        _same(covariance, ref_cov[0], "covariance")

    return _check(
        "PaDiM Gaussian",
        "mean over the images; covariance = (x - mean)ᵀ (x - mean) / (N - 1) "
        "(the unbiased one, torch.cov(x.T)), plus epsilon times the identity",
        attempt,
    )


def check_mahalanobis(student: Callable) -> bool:
    """``student(x (M, d), mean (d,), covariance (d, d)) -> (M,)``: PaDiM's Mahalanobis distance."""

    def attempt():
        g = _generator(8)
        a = torch.randn(4, 4, generator=g).double()
        covariance = a @ a.T + 0.5 * torch.eye(4, dtype=torch.float64)
        mean, x = torch.randn(4, generator=g).double(), torch.randn(30, 4, generator=g).double()
        expected = mahalanobis(x[:, None, :], mean[None], torch.linalg.inv(covariance)[None])[:, 0]
        _same(student(x.clone(), mean.clone(), covariance.clone()), expected, "distances")

    return _check(
        "Mahalanobis distance",
        "delta = x - mean; sqrt of the sum over d of delta * (delta @ inv(cov)) (torch.linalg.inv), one number per row",
        attempt,
    )


def check_spade_image_scores(student: Callable) -> bool:
    """``student(test_global (B, D), train_global (N, D), k) -> (B,)``: SPADE's first stage."""

    def attempt():
        g = _generator(9)
        test, train = torch.randn(6, 10, generator=g), torch.randn(25, 10, generator=g)
        for k in (1, 5):
            _same(student(test.clone(), train.clone(), k), spade_image_scores(test, train, k)[0], f"k = {k}")
        return "k = 1, 5"

    return _check(
        "SPADE image scores",
        "torch.cdist(test, train), then torch.topk(..., k, largest=False) and the "
        "mean of those k distances per test image",
        attempt,
    )


# --- 04: scoring ---------------------------------------------------------------------------------
def check_eq7_weight(student: Callable) -> bool:
    """``student(distances (b,)) -> float``: Eq. 7's weight; ``distances[0]`` is to ``m*``, the nearest.

    Compared with :func:`patchcore_kit.patchcore.eq7_weight` on equal, spread and large distances.
    """

    def attempt():
        rng = np.random.default_rng(10)
        cases = [
            np.full(9, 2.0),
            np.array([1.0, 1.5, 2.0, 2.5]),
            np.sort(rng.uniform(30, 80, 9)),
            np.sort(rng.uniform(0, 1.5, 9)),
        ]
        for case in cases:
            got = float(_numpy(student(torch.tensor(case)), "weight").reshape(-1)[0])
            _same(got, float(eq7_weight(torch.tensor(case))), f"weight for distances {np.round(case, 2)[:4]}...")
        return "equal, spread and large distances"

    return _check(
        "Eq. 7 weight",
        "1 - exp(d[0]) / sum(exp(d)); large distances overflow exp: subtract d.max() "
        "first (or use torch.softmax(d, 0)[0])",
        attempt,
    )


def check_anomaly_map(student: Callable) -> bool:
    """``student(patch_scores (h, w), size (H, W), sigma) -> (H, W)``: upsample, then Gaussian smoothing."""

    def attempt():
        scores = torch.rand(7, 7, generator=_generator(11))
        expected = upsample_and_smooth(scores[None], (56, 56), sigma=4.0)[0]
        _same(student(scores.clone(), (56, 56), 4.0), expected, "anomaly map", atol=1e-3)

    return _check(
        "anomaly map",
        "torch.nn.functional.interpolate(scores[None, None], size, mode='bilinear', "
        "align_corners=False), then scipy.ndimage.gaussian_filter(..., sigma)",
        attempt,
    )


def check_pro_curve(student: Callable) -> bool:
    """``student(masks (N, H, W), maps (N, H, W), t) -> (fpr, pro)`` for pixels with ``map >= t``.

    ``fpr``: flagged share of the nominal pixels; ``pro``: the mean over the defect regions
    (8-connected) of each region's flagged share. Compared with points of
    :func:`patchcore_kit.metrics.pro_curve`.
    """

    def attempt():
        rng = np.random.default_rng(12)
        masks = np.zeros((3, 16, 16), bool)
        masks[0, 2:6, 2:6] = True
        masks[0, 10:12, 9:15] = True
        masks[1, 7:9, 7:9] = True
        maps = rng.random(masks.shape) + 0.6 * masks
        fpr, pro = pro_curve(masks, maps, max_fpr=1.0)
        thresholds = np.unique(maps)[::-1]  # the curve's points, highest threshold first
        for i in (3, 40, 150, 400):
            got = student(masks.copy(), maps.copy(), float(thresholds[i]))
            _same(
                np.asarray(got, dtype=float).ravel(), [fpr[i + 1], pro[i + 1]], f"(fpr, pro) at t = {thresholds[i]:.3f}"
            )
        return "four thresholds"

    return _check(
        "PRO curve point",
        "scipy.ndimage.label(mask, structure=np.ones((3, 3))) per image finds the "
        "regions; pro = mean over regions of (flagged & region).sum() / region.sum(); fpr = flagged "
        "nominal pixels / all nominal pixels",
        attempt,
    )
