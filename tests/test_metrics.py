"""Each metric against an independent computation: pair counts, per-threshold loops, hand values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from patchcore_kit.errors import InputError
from patchcore_kit.metrics import (
    PixelGroundTruth,
    aupro,
    image_auroc,
    per_defect_metrics,
    pixel_auroc,
    pro_curve,
)

# --- independent reference computations -------------------------------------------------------


def pairwise_auroc(labels, scores):
    """AUROC as the Mann-Whitney statistic, counted pair by pair (ties count half)."""
    labels, scores = np.asarray(labels).ravel(), np.asarray(scores, dtype=float).ravel()
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return (wins + 0.5 * ties) / (positive.size * negative.size)


def brute_force_pro_curve(masks, maps):
    """Threshold the maps at every distinct score (and -inf), measuring FPR and PRO directly."""
    regions = []  # (image index, region mask)
    for index, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labelled == r) for r in range(1, n + 1)]
    nominal = ~masks
    fprs, pros = [], []
    # Above the highest score nothing is flagged: thresholding at it gives the point (0, 0).
    for t in np.append(np.unique(maps)[::-1], -np.inf):
        flagged = maps > t
        fprs.append((flagged & nominal).sum() / nominal.sum())
        pros.append(np.mean([(flagged[i] & region).sum() / region.sum() for i, region in regions]))
    return np.array(fprs), np.array(pros)


def brute_force_aupro(masks, maps, max_fpr=0.3):
    """Integrate the brute-force curve piece by piece, cutting the piece that crosses the limit."""
    fpr, pro = brute_force_pro_curve(masks, maps)
    area = 0.0
    for x0, x1, y0, y1 in zip(fpr[:-1], fpr[1:], pro[:-1], pro[1:]):
        if x1 <= max_fpr:
            area += (x1 - x0) * (y0 + y1) / 2
        elif x0 < max_fpr:
            y_limit = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            area += (max_fpr - x0) * (y0 + y_limit) / 2
    return area / max_fpr


def random_case(seed, n_images=4, height=9, width=11):
    """Masks with several regions of different sizes, one image without defects, tied scores."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_images, height, width), dtype=bool)
    for image in range(1, n_images):  # image 0 stays defect-free
        for _ in range(rng.integers(1, 4)):
            h, w = rng.integers(1, 4, size=2)
            top, left = rng.integers(0, height - h), rng.integers(0, width - w)
            masks[image, top : top + h, left : left + w] = True
    # Scores on a coarse grid so that ties, also between nominal and defective pixels, are common.
    maps = np.round(rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape), 1)
    return masks, maps


# --- image AUROC ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=40)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 6, size=40) + labels  # few distinct values: many ties
    assert image_auroc(labels, scores) == pytest.approx(pairwise_auroc(labels, scores))


def test_image_auroc_hand_value():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert image_auroc([True, False], [0.0, 1.0]) == 0.0


def test_image_auroc_refuses_a_single_class():
    with pytest.raises(InputError, match="labels: all 3 images are nominal"):
        image_auroc([0, 0, 0], [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "labels: expected 0"),
        ([0, 1], [0.1, 0.2, 0.3], "same length"),
        ([0, 1], [0.1, np.nan], "scores: contain NaN"),
        ([], [], "no images"),
    ],
)
def test_image_auroc_names_bad_input(labels, scores, message):
    with pytest.raises(InputError, match=message):
        image_auroc(labels, scores)


# --- pixel AUROC ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_pixel_auroc_matches_pairwise_count(seed):
    masks, maps = random_case(seed)
    assert pixel_auroc(masks, maps) == pytest.approx(pairwise_auroc(masks, maps), abs=1e-12)


def test_pixel_auroc_matches_sklearn_on_flattened_float32_maps():
    rng = np.random.default_rng(7)
    masks = rng.random((20, 32, 32)) < 0.05
    maps = (rng.random(masks.shape) + masks).astype(np.float32)
    maps = np.round(maps, 2)  # ties
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_accepts_a_single_image_and_integer_masks():
    mask = np.array([[0, 0], [1, 1]])
    scores = np.array([[0.1, 0.4], [0.35, 0.8]])
    assert pixel_auroc(mask, scores) == pytest.approx(0.75)


def test_pixel_auroc_is_absent_without_defective_or_nominal_pixels():
    maps = np.random.default_rng(0).random((2, 4, 4))
    assert pixel_auroc(np.zeros((2, 4, 4), dtype=bool), maps) is None
    assert pixel_auroc(np.ones((2, 4, 4), dtype=bool), maps) is None


@pytest.mark.parametrize(
    "masks, maps, message",
    [
        (np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5)), "same shape"),
        (np.zeros((4, 4), bool), np.zeros((1, 4, 4)), "same shape"),
        (np.full((1, 4, 4), 255), np.zeros((1, 4, 4)), "masks: expected boolean"),
        (np.zeros((1, 2, 2), bool), np.array([[[0.0, np.inf], [0.0, 0.0]]]), "maps: contain NaN"),
    ],
)
def test_pixel_metrics_name_bad_input(masks, maps, message):
    with pytest.raises(InputError, match=message):
        pixel_auroc(masks, maps)
    with pytest.raises(InputError, match=message):
        aupro(masks, maps)


# --- PRO curve and AUPRO ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_pro_curve_matches_thresholding_at_every_distinct_score(seed):
    masks, maps = random_case(seed)
    fpr, pro = pro_curve(masks, maps)
    expected_fpr, expected_pro = brute_force_pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, expected_fpr, atol=1e-12)
    np.testing.assert_allclose(pro, expected_pro, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 0.5, 1.0])
def test_aupro_matches_brute_force(seed, max_fpr):
    masks, maps = random_case(seed)
    expected = brute_force_aupro(masks, maps, max_fpr)
    assert aupro(masks, maps, max_fpr) == pytest.approx(expected, abs=1e-12)


def test_aupro_matches_brute_force_with_continuous_float32_scores():
    masks, _ = random_case(11, n_images=3, height=12, width=12)
    maps = np.random.default_rng(11).random(masks.shape).astype(np.float32) + 0.3 * masks
    assert aupro(masks, maps) == pytest.approx(brute_force_aupro(masks, maps), abs=1e-6)


def test_truncated_curve_is_the_start_of_the_full_curve():
    masks, maps = random_case(3)
    full_fpr, full_pro = pro_curve(masks, maps)
    fpr, pro = pro_curve(masks, maps, max_fpr=0.3)
    np.testing.assert_allclose(fpr, full_fpr[: fpr.size], atol=1e-12)
    np.testing.assert_allclose(pro, full_pro[: pro.size], atol=1e-12)
    assert fpr[-2] <= 0.3 < fpr[-1]
    assert (full_fpr[fpr.size :] > 0.3).all()
    assert (full_fpr[0], full_pro[0], full_fpr[-1], full_pro[-1]) == (0, 0, 1, pytest.approx(1))


def test_aupro_of_a_perfect_map_is_one():
    masks, _ = random_case(0)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)


@pytest.mark.parametrize("max_fpr", [0.3, 0.1, 1.0])
def test_aupro_of_a_constant_map_is_half_the_limit(max_fpr):
    # Everything is flagged at once: the curve jumps from (0, 0) to (1, 1), the diagonal, whose
    # area up to L is L**2 / 2; divided by L that is L / 2.
    masks, _ = random_case(1)
    assert aupro(masks, np.full(masks.shape, 0.7), max_fpr) == pytest.approx(max_fpr / 2)


def hand_case():
    """Region A (1 pixel) and region B (2x2), ten nominal pixels; values worked out below."""
    masks = np.zeros((1, 3, 5), dtype=bool)
    masks[0, 0, 0] = True  # A
    masks[0, 1:3, 3:5] = True  # B, apart from A
    maps = np.zeros((1, 3, 5))
    maps[0, 0, 0] = 0.9  # A
    maps[0, 1:3, 3:5] = [[0.8, 0.8], [0.5, 0.4]]  # B
    nominal = [0.95, 0.7, 0.6, 0.4, 0.3, 0.2, 0.2, 0.0, 0.0, 0.0]
    maps[~masks] = nominal
    return masks, maps


def test_aupro_hand_computed():
    # Each nominal pixel adds 0.1 to the FPR; A's pixel adds 1/2 to the PRO, each of B's 1/8.
    # Going down the scores: 0.95 -> (0.1, 0), 0.9 -> (0.1, 0.5), 0.8 -> (0.1, 0.75),
    # 0.7 -> (0.2, 0.75), 0.6 -> (0.3, 0.75), 0.5 -> (0.3, 0.875), 0.4 (tie) -> (0.4, 1.0).
    masks, maps = hand_case()
    fpr, pro = pro_curve(masks, maps, max_fpr=0.3)
    np.testing.assert_allclose(fpr, [0, 0.1, 0.1, 0.1, 0.2, 0.3, 0.3, 0.4])
    np.testing.assert_allclose(pro, [0, 0, 0.5, 0.75, 0.75, 0.75, 0.875, 1.0])
    # Up to 0.3: 0.2 * 0.75 = 0.15, normalised 0.5.
    assert aupro(masks, maps) == pytest.approx(0.5)
    # Up to 0.25: 0.15 * 0.75 = 0.1125, normalised 0.45.
    assert aupro(masks, maps, max_fpr=0.25) == pytest.approx(0.45)
    # Up to 0.35: 0.15 + 0.05 * (0.875 + 0.9375) / 2, the PRO at 0.35 interpolated on the tie.
    assert aupro(masks, maps, max_fpr=0.35) == pytest.approx((0.15 + 0.0453125) / 0.35)


def test_regions_are_eight_connected():
    # Pixel (0,0) touches the pair (1,1)-(1,2) only diagonally: one region of three pixels, so
    # finding only (0,0) gives PRO 1/3 (4-connectivity would give two regions and PRO 1/2).
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.where(masks, 0.0, 0.5)
    maps[0, 0, 0] = 1.0
    assert aupro(masks, maps) == pytest.approx(1 / 3)


def test_regions_do_not_join_across_images():
    # The same defect pixel in two stacked images makes two regions: finding one of them is 1/2.
    masks = np.zeros((2, 2, 2), dtype=bool)
    masks[:, 0, 0] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0], maps[1, 0, 0] = 1.0, 0.0
    assert aupro(masks, maps) == pytest.approx(0.5)


def test_aupro_is_absent_without_regions_or_nominal_pixels():
    maps = np.random.default_rng(0).random((2, 4, 4))
    assert aupro(np.zeros((2, 4, 4), dtype=bool), maps) is None
    assert aupro(np.ones((2, 4, 4), dtype=bool), maps) is None
    assert pro_curve(np.zeros((2, 4, 4), dtype=bool), maps) is None


@pytest.mark.parametrize("max_fpr", [0.0, -0.1, 1.5])
def test_aupro_refuses_a_limit_outside_zero_one(max_fpr):
    masks, maps = hand_case()
    with pytest.raises(InputError, match="max_fpr"):
        aupro(masks, maps, max_fpr)


# --- one sort for both pixel metrics (PixelGroundTruth) ---------------------------------------


def real_shaped_case(seed, n_images=12, size=64):
    """Smooth float32 maps (upsampled and blurred like the kit's) and blob-shaped defect regions."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_images, size, size), dtype=bool)
    for image in range(n_images // 3, n_images):
        for _ in range(rng.integers(1, 3)):
            cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(2, 7)
            yy, xx = np.ogrid[:size, :size]
            masks[image] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    coarse = rng.random((n_images, size // 8, size // 8))
    maps = ndimage.zoom(coarse, (1, 8, 8), order=1) + 0.3 * ndimage.gaussian_filter(masks.astype(float), (0, 3, 3))
    return masks, ndimage.gaussian_filter(maps, (0, 2, 2)).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_one_sort_gives_the_per_call_metrics_on_real_shaped_maps(seed):
    masks, maps = real_shaped_case(seed)
    truth = PixelGroundTruth(masks)
    pixel, pro = truth.metrics(maps)
    assert pixel == pixel_auroc(masks, maps)  # the same integer count: bit for bit
    assert pro == pytest.approx(aupro(masks, maps), abs=1e-12)
    assert truth.metrics(maps, max_fpr=1.0)[1] == pytest.approx(aupro(masks, maps, 1.0), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_fpr", [0.05, 0.3, 1.0])
def test_one_sort_matches_independent_counts_with_ties(seed, max_fpr):
    masks, maps = random_case(seed)
    maps = (maps - 0.5).astype(np.float32)  # negative, zero and positive scores, many ties
    maps[maps == 0] = np.float32(-0.0) if seed % 2 else np.float32(0.0)  # -0.0 ties with 0.0
    pixel, pro = PixelGroundTruth(masks).metrics(maps, max_fpr)
    assert pixel == pixel_auroc(masks, maps)
    assert pixel == pytest.approx(pairwise_auroc(masks, maps), abs=1e-12)
    assert pro == pytest.approx(brute_force_aupro(masks, maps, max_fpr), abs=1e-12)


def test_one_sort_serves_many_map_stacks_and_float64_maps():
    masks, maps = real_shaped_case(9)
    truth = PixelGroundTruth(masks)
    for scale in (1.0, -1.0, 1e-30, 1e30):  # a reversed ranking, tiny and huge scores
        scaled = (maps.astype(np.float64) * scale).astype(np.float32)
        assert truth.metrics(scaled) == (pixel_auroc(masks, scaled), pytest.approx(aupro(masks, scaled), abs=1e-12))
    as_float64 = maps.astype(np.float64)  # sorted as float64: the same definitions, no rounding
    assert truth.metrics(as_float64) == (
        pixel_auroc(masks, as_float64),
        pytest.approx(aupro(masks, as_float64), abs=1e-12),
    )


def coarse_case(seed):
    """Blob regions (one to many, some touching the image border) and scores on a grid of a few
    levels, negative to positive with -0.0: large tie groups that mix nominal and defective pixels."""
    rng = np.random.default_rng(seed)
    n_images, size = rng.integers(1, 6), rng.integers(5, 20)
    masks = rng.random((n_images, size, size)) < rng.uniform(0.02, 0.3)
    masks = ndimage.binary_dilation(masks, np.ones((1, 2, 2), dtype=bool)) if seed % 3 else masks
    masks[0, 0, 0], masks[-1, -1, -1] = False, True  # both classes, always
    levels = rng.integers(2, 12)
    maps = np.round(rng.random(masks.shape) * levels + masks * rng.uniform(0, levels)) - levels // 2
    maps = maps.astype(rng.choice([np.float32, np.float64]))
    maps[maps == 0] *= -1  # -0.0: equal to 0.0, not below it
    return masks, maps


@pytest.mark.parametrize("seed", range(40))
def test_one_sort_matches_the_definitions_and_sklearn_with_many_ties(seed):
    masks, maps = coarse_case(seed)
    truth = PixelGroundTruth(masks)
    n_nominal = np.count_nonzero(~masks)
    # Limits that cut inside a tie group, that land exactly on a curve point (c / n_nominal), and
    # that flag one nominal pixel or all of them.
    for max_fpr in (0.3, 0.05, 0.5, 0.999, 1.0, 1 / n_nominal, min(1.0, 3 / n_nominal)):
        pixel, pro = truth.metrics(maps, max_fpr)
        assert pixel == pixel_auroc(masks, maps)
        assert pixel == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
        assert pro == pytest.approx(aupro(masks, maps, max_fpr), abs=1e-12)
    assert pro == pytest.approx(brute_force_aupro(masks, maps, max_fpr), abs=1e-12)


def test_one_sort_cuts_the_crossing_tie_group_as_the_curve_does():
    # Ten nominal pixels (0 to 6, four of them 3) and two regions, [3 3] and [7], kept apart by a 0.
    masks = np.zeros((1, 1, 13), dtype=bool)
    masks[0, 0, [9, 10, 12]] = True
    maps = np.array([[[1, 2, 3, 3, 3, 3, 4, 5, 6, 3, 3, 0, 7]]], dtype=np.float32)
    truth = PixelGroundTruth(masks)
    for max_fpr in (0.3, 0.35, 0.4, 0.6, 0.7, 0.75, 1.0):
        assert truth.metrics(maps, max_fpr)[1] == pytest.approx(brute_force_aupro(masks, maps, max_fpr), abs=1e-12)
    # By hand at 0.35: the region [7] is found first (PRO 1/2 at FPR 0); the groups at 6, 5, 4 add
    # FPR 0.3 at PRO 1/2; the group at 3 goes from (0.3, 1/2) to (0.7, 1), at 0.35 PRO 9/16.
    assert truth.metrics(maps, 0.35)[1] == pytest.approx((0.3 * 0.5 + 0.05 * (0.5 + 9 / 16) / 2) / 0.35, abs=1e-12)


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_one_sort_with_a_single_region(decimals):
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[1, 4:9, 5:12] = True
    maps = np.round(np.random.default_rng(decimals).random(masks.shape) + 0.4 * masks, decimals).astype(np.float32)
    for max_fpr in (0.3, 1.0):
        pixel, pro = PixelGroundTruth(masks).metrics(maps, max_fpr)
        assert pixel == pixel_auroc(masks, maps)
        assert pro == pytest.approx(aupro(masks, maps, max_fpr), abs=1e-12)


@pytest.mark.parametrize("n_nominal, flagged", [(22, 15), (10, 9), (13, 3)])
def test_one_sort_at_a_limit_that_rounding_puts_next_to_a_curve_point(n_nominal, flagged):
    # (15/22) * 22 < 15, and just below 9/10 the product rounds up to 9: the cut must not care.
    masks = np.zeros((1, 1, n_nominal + 3), dtype=bool)
    masks[0, 0, [-3, -1]] = True
    maps = np.arange(masks.size, dtype=np.float32)[None, None, ::-1].copy()
    maps[0, 0, -1] = maps[0, 0, 3]  # one region amid the nominal scores, the other at the bottom
    truth = PixelGroundTruth(masks)
    for max_fpr in (flagged / n_nominal, np.nextafter(flagged / n_nominal, 0), np.nextafter(flagged / n_nominal, 1)):
        assert truth.metrics(maps, max_fpr)[1] == pytest.approx(aupro(masks, maps, max_fpr), abs=1e-12)


def test_one_sort_of_constant_and_perfect_maps():
    masks, _ = real_shaped_case(3)
    truth = PixelGroundTruth(masks)
    for constant in (0.0, -0.0, -2.5):
        assert truth.metrics(np.full(masks.shape, constant, dtype=np.float32), 0.3) == (0.5, pytest.approx(0.15))
    assert truth.metrics(masks.astype(np.float32)) == (1.0, pytest.approx(1.0))
    assert truth.metrics(-masks.astype(np.float32)) == (0.0, pytest.approx(0.0))


def test_one_sort_is_absent_without_regions_and_names_bad_input():
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    assert PixelGroundTruth(np.zeros((2, 4, 4), dtype=bool)).metrics(maps) == (None, None)
    assert PixelGroundTruth(np.ones((2, 4, 4), dtype=bool)).metrics(maps) == (None, None)
    with pytest.raises(InputError, match="same shape"):
        PixelGroundTruth(np.zeros((2, 4, 4), dtype=bool)).metrics(maps[:1])
    with pytest.raises(InputError, match="max_fpr"):
        PixelGroundTruth(np.zeros((2, 4, 4), dtype=bool)).metrics(maps, max_fpr=0)


# --- per defect type --------------------------------------------------------------------------


def test_per_defect_metrics_compares_each_type_with_the_nominal_images():
    labels = [0, 0, 0, 1, 1, 1]
    types = ["good", "good", "good", "scratch", "scratch", "dent"]
    scores = [0.1, 0.2, 0.3, 0.25, 0.5, 0.05]
    # scratch 0.25 beats two of three nominal scores, 0.5 all three: 5/6. dent beats none.
    results = per_defect_metrics(labels, types, scores)
    assert list(results) == ["dent", "scratch"]
    assert results["scratch"] == {
        "n_images": 2,
        "image_auroc": pytest.approx(5 / 6),
        "pixel_auroc": None,
        "aupro": None,
    }
    assert results["dent"]["image_auroc"] == 0.0


def test_per_defect_pixel_metrics_use_nominal_plus_that_types_images():
    masks = np.zeros((4, 3, 3), dtype=bool)
    masks[2, 0, 0] = True  # the crack: found perfectly
    masks[3, 1, 1] = True  # the spot: scored below every nominal pixel
    maps = np.full(masks.shape, 0.5)
    maps[2, 0, 0], maps[3, 1, 1] = 1.0, 0.0
    results = per_defect_metrics([0, 0, 1, 1], ["good", "good", "crack", "spot"], [0, 0, 1, 1], masks, maps)
    assert results["crack"]["pixel_auroc"] == pytest.approx(1.0)
    assert results["crack"]["aupro"] == pytest.approx(1.0)
    assert results["spot"]["pixel_auroc"] == pytest.approx(0.0)
    assert results["spot"]["aupro"] == pytest.approx(0.0)
    # Pooled, the nominal pixels of the crack image count as nominal for the spot and vice versa.
    assert pixel_auroc(masks, maps) == pytest.approx(0.5)


def test_per_defect_metrics_names_bad_input():
    with pytest.raises(InputError, match="no nominal images"):
        per_defect_metrics([1, 1], ["a", "b"], [0.1, 0.2])
    with pytest.raises(InputError, match="defect_types"):
        per_defect_metrics([0, 1], ["good"], [0.1, 0.2])
    with pytest.raises(InputError, match="give both"):
        per_defect_metrics([0, 1], ["good", "a"], [0.1, 0.2], masks=np.zeros((2, 2, 2), bool))
    with pytest.raises(InputError, match="masks: expected one per image"):
        per_defect_metrics([0, 1], ["good", "a"], [0.1, 0.2], np.zeros((3, 2, 2), bool), np.zeros((3, 2, 2)))


def test_mask_iou_pools_the_pixels_of_all_images():
    from patchcore_kit.metrics import mask_iou

    truth = np.zeros((2, 4, 4), dtype=bool)
    truth[0, :2, :2] = True  # 4 pixels in the first image
    predicted = np.zeros_like(truth)
    predicted[0, :2, :1] = True  # 2 of them found
    predicted[1, 3, 3] = True  # and a false pixel in the other image
    assert mask_iou(truth, predicted) == pytest.approx(2 / 5)  # pooled, not a mean of per-image IoUs (0.5, 0)
    assert mask_iou(truth, truth) == 1.0 and mask_iou(truth, ~truth) == 0.0
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) is None  # nothing to measure
    with pytest.raises(InputError, match="same shape"):
        mask_iou(truth, predicted[0])


def test_pixel_metrics_do_not_depend_on_the_blas_thread_count():
    """A Dask worker runs with one BLAS thread, the serial sweep with all: the AUPRO's weighted sums
    must give the same digits (a threaded BLAS dot adds in another order)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(4)
    masks = np.zeros((40, 96, 96), dtype=bool)
    masks[:, 20:80, 10:90] = True  # 192,000 defective pixels: long enough for a threaded dot
    maps = (rng.random(masks.shape) + masks * rng.random(masks.shape)).astype(np.float32)
    truth = PixelGroundTruth(masks)
    with threadpool_limits(limits=1):
        one = truth.metrics(maps), truth.metrics(maps, max_fpr=1.0)
    with threadpool_limits(limits=4):
        many = truth.metrics(maps), truth.metrics(maps, max_fpr=1.0)
    assert one == many
