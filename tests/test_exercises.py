"""The exercise checkers: a right answer passes, an unsolved or wrong one is told why, nothing raises."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from patchcore_kit import exercises


def aggregation(x, p):
    return F.avg_pool2d(x, p, stride=1, padding=p // 2, count_include_pad=False) if p > 1 else x


def patch_embedding(maps, p):
    grid = maps[0].shape[-2:]
    parts = [F.interpolate(aggregation(m, p), size=grid, mode="bilinear", align_corners=False) for m in maps]
    return torch.cat(parts, dim=1)


def nearest_distance(queries, bank):
    return torch.cdist(queries, bank).min(dim=1).values


def greedy(x, n, start):
    chosen = [start]
    min_dist = torch.linalg.norm(x - x[start], dim=1)
    while len(chosen) < n:
        pick = int(torch.argmax(min_dist))
        chosen.append(pick)
        min_dist = torch.minimum(min_dist, torch.linalg.norm(x - x[pick], dim=1))
    return chosen


def radius(x, indices):
    return float(torch.cdist(x, x[torch.as_tensor(indices)]).min(dim=1).values.max())


def projection(x, dim, seed):
    return x @ (torch.randn(x.shape[1], dim, generator=torch.Generator().manual_seed(seed)) / dim**0.5)


def gaussian(x, epsilon):
    return x.mean(0), torch.cov(x.T) + epsilon * torch.eye(x.shape[1], dtype=x.dtype)


def mahalanobis(x, mean, covariance):
    delta = x - mean
    return ((delta @ torch.linalg.inv(covariance)) * delta).sum(1).sqrt()


def spade(test, train, k):
    return torch.topk(torch.cdist(test, train), k, dim=1, largest=False).values.mean(1)


def eq7(d):
    return 1 - torch.softmax(torch.as_tensor(d, dtype=torch.float64), 0)[0]


def anomaly_map(scores, size, sigma):
    up = F.interpolate(scores[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    return scipy.ndimage.gaussian_filter(up, sigma)


def pro_point(masks, maps, t):
    flagged = maps >= t
    shares = []
    for mask, hit in zip(masks, flagged):
        regions, n = scipy.ndimage.label(mask, structure=np.ones((3, 3)))
        shares += [(hit & (regions == r)).sum() / (regions == r).sum() for r in range(1, n + 1)]
    return (flagged & ~masks).sum() / (~masks).sum(), np.mean(shares)


SOLUTIONS = {
    "check_aggregation": aggregation,
    "check_patch_embedding": patch_embedding,
    "check_nearest_distance": nearest_distance,
    "check_greedy_coreset": greedy,
    "check_covering_radius": radius,
    "check_random_projection": projection,
    "check_gaussian": gaussian,
    "check_mahalanobis": mahalanobis,
    "check_spade_image_scores": spade,
    "check_eq7_weight": eq7,
    "check_anomaly_map": anomaly_map,
    "check_pro_curve": pro_point,
}


def test_every_checker_has_a_solution_here():
    assert set(SOLUTIONS) == set(exercises.__all__)


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_a_right_answer_passes(name, capsys):
    assert getattr(exercises, name)(SOLUTIONS[name]) is True
    assert capsys.readouterr().out.startswith("✅")


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_an_unsolved_exercise_says_so_with_a_hint(name, capsys):
    def unsolved(*args):
        raise NotImplementedError

    assert getattr(exercises, name)(unsolved) is False
    out = capsys.readouterr().out
    assert out.startswith("⏳") and "not solved yet" in out and "Hint:" in out


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_a_crashing_or_wrong_answer_is_explained_not_raised(name, capsys):
    def crashing(*args):
        return 1 / 0

    def wrong(*args):
        return SOLUTIONS[name](*args) if False else np.zeros(3)

    assert getattr(exercises, name)(crashing) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert getattr(exercises, name)(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("❌") and "Hint:" in out


def test_a_near_miss_names_where_it_differs(capsys):
    def off_by_a_little(d):
        return eq7(d) + 0.01

    assert exercises.check_eq7_weight(off_by_a_little) is False
    assert "yours" in capsys.readouterr().out


def test_greedy_with_the_wrong_rule_names_the_first_wrong_pick(capsys):
    def nearest_first(x, n, start):  # picks the closest point instead of the farthest
        chosen = [start]
        min_dist = torch.linalg.norm(x - x[start], dim=1)
        while len(chosen) < n:
            min_dist[chosen] = float("inf")
            pick = int(torch.argmin(min_dist))
            chosen.append(pick)
        return chosen

    assert exercises.check_greedy_coreset(nearest_first) is False
    assert "picks differ from pick 1" in capsys.readouterr().out
