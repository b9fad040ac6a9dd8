"""The numbers the notebooks teach, pinned where a computation can check them (issue #11).

Each test names the notebook statement it guards. The MTD-scale figures (distances of 30-80,
weights 0.992-1.000) were measured on the real data; here they are reproduced with distances of
that size, which is all the weight sees.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from patchcore_kit.coreset import projection_distortion
from patchcore_kit.features import patch_embeddings
from patchcore_kit.patchcore import eq7_weight, image_scores_for
from patchcore_kit.thresholds import budget_threshold, decision_counts, quantile_threshold


# --- 04 / patchcore.py: the direction and range of Eq. 7 -----------------------------------------
def test_eq7_weight_for_b_9_lies_in_one_minus_a_ninth_to_one():
    rng = np.random.default_rng(0)
    distances = np.sort(rng.uniform(0, 5, size=(2000, 9)), axis=1)  # m* is the nearest: first and smallest
    weights = eq7_weight(torch.from_numpy(distances)).numpy()
    assert weights.min() >= 1 - 1 / 9 - 1e-6 and weights.max() < 1
    assert eq7_weight(torch.full((9,), 3.0)).item() == pytest.approx(8 / 9)  # all equally far: the minimum


def test_eq7_keeps_an_isolated_match_and_lowers_a_crowded_one():
    isolated = eq7_weight(torch.tensor([2.0, 6.0, 6.5, 7.0])).item()  # m*'s neighbours far from the test patch
    crowded = eq7_weight(torch.tensor([2.0, 2.1, 2.2, 2.3])).item()
    assert isolated > 0.98 and crowded < 0.8


def test_at_mtd_scale_the_weight_is_one_and_the_ranking_that_of_b_1():
    rng = np.random.default_rng(1)
    s_star = rng.uniform(30, 80, size=300)
    gaps = np.cumsum(rng.uniform(1.0, 4.0, size=(300, 8)), axis=1)  # neighbours several units farther
    distances = np.concatenate([s_star[:, None], s_star[:, None] + gaps], axis=1)
    weights = image_scores_for(s_star, distances, 9) / s_star
    assert weights.min() > 0.99
    assert spearmanr(image_scores_for(s_star, distances, 9), s_star).statistic > 0.9999
    # the same features divided by 30: distances of O(1), and now the weight moves scores
    scaled = image_scores_for(s_star / 30, distances / 30, 9) / (s_star / 30)
    assert scaled.min() < 0.95


def test_a_smaller_b_reuses_the_larger_bs_neighbors():
    distances = np.array([[1.0, 1.2, 1.5, 2.0, 2.2]])
    for b in (1, 3, 5):
        expected = eq7_weight(torch.tensor(distances[0, :b])).item() * 1.0
        assert image_scores_for([1.0], distances, b)[0] == pytest.approx(expected)


# --- 02 / coreset.py: what the random projection does to distances -------------------------------
@pytest.mark.parametrize("dim", [16, 32, 64, 128])
def test_projection_distortion_of_squared_distances_is_about_sqrt_2_over_dim(dim):
    features = torch.randn(3000, 1024, generator=torch.Generator().manual_seed(dim))
    ratios = projection_distortion(features, dim, n_pairs=6000)
    assert abs(ratios.mean() - 1) < 0.03
    assert ratios.std() == pytest.approx((2 / dim) ** 0.5, rel=0.15)


def test_at_128_dims_a_squared_distance_moves_by_about_12_percent_not_very_little():
    ratios = projection_distortion(torch.randn(3000, 152), 128, n_pairs=6000)  # lite0's 152 dims -> 128
    assert 0.10 < ratios.std() < 0.15


# --- 01: without target_dim, lite0's layer3 supplies 112 of the 152 dimensions -----------------------
def test_without_target_dim_nothing_is_pooled_and_layer3_has_most_dimensions():
    maps = [torch.randn(1, 40, 28, 28), torch.randn(1, 112, 14, 14)]  # lite0's layer2 and layer3
    assert patch_embeddings(maps, 3).shape[1] == 152
    assert patch_embeddings(maps, 3, target_dim=1024).shape[1] == 1024  # pooling happens only when asked


# --- 04 / 05: thresholds from nominal data only ------------------------------------------------------
def test_a_false_alarm_budget_is_kept_on_the_nominal_scores_it_was_chosen_on():
    nominal = np.random.default_rng(2).normal(size=200)
    for budget in (0.0, 0.01, 0.05, 0.2):
        threshold = budget_threshold(nominal, budget)
        assert (nominal > threshold).mean() <= budget
    assert quantile_threshold(nominal, 0.99) == pytest.approx(np.quantile(nominal, 0.99))
    counts = decision_counts([0.0, 5.0, -1.0], [0, 1, 1], threshold=1.0)
    assert (counts["missed"], counts["false_alarms"], counts["miss_rate"]) == (1, 0, 0.5)
