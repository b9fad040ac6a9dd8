"""Coreset samplers: the lazy greedy k-center makes exactly the plain loop's choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchcore_kit import coreset
from patchcore_kit.coreset import (
    coreset_size,
    covering_radius,
    greedy_coreset,
    greedy_coreset_plain,
    random_coreset,
    random_projection,
    select_coreset,
)


def clustered(n_points: int, dim: int, n_clusters: int = 12, spread: float = 0.3, seed: int = 0) -> torch.Tensor:
    """Gaussian blobs of different sizes, like patch features of a few textures."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 3
    labels = torch.randint(0, n_clusters, (n_points,), generator=g)
    scale = torch.rand(n_clusters, generator=g)[labels, None] * spread * 2
    return centres[labels] + torch.randn(n_points, dim, generator=g) * scale


def uniform(n_points: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n_points, dim, generator=torch.Generator().manual_seed(seed))


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(
    params=[(7, 3, 14), (64, 10**9, 2**20), (64, 11, 64 * 3)],
    ids=["block7-regroup3-tile2", "block64", "block64-regroup11-tile3"],
)
def small_blocks(request, monkeypatch):
    """Tiny blocks, so that small test data spans many of them (the default is 1024 points);
    regrouping every few steps (the default is every 500) or never; and a block catching up on
    a few centres at a time (the default screen tile holds 2**20 pairs)."""
    block_size, regroup_every, tile = request.param
    monkeypatch.setattr(coreset, "BLOCK_SIZE", block_size)
    monkeypatch.setattr(coreset, "REGROUP_EVERY", regroup_every)
    monkeypatch.setattr(coreset, "_TILE", tile)
    return block_size


def assert_same_as_plain(features, n, **kwargs):
    fast, fast_radii = greedy_coreset(features, n, return_radii=True, **kwargs)
    plain, plain_radii = greedy_coreset_plain(features, n, return_radii=True, **kwargs)
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(fast_radii, plain_radii)  # same float distances, bit for bit
    return fast, fast_radii


@pytest.mark.parametrize(
    "features, n, kwargs",
    [
        (clustered(600, 40), 60, {}),
        (clustered(500, 152, n_clusters=3, spread=0.05, seed=1), 120, {"projection_dim": 16}),
        (uniform(400, 3), 90, {"projection_dim": None}),
        (uniform(150, 8, seed=2), 150, {"projection_dim": None}),  # n = N: every point, in greedy order
        (clustered(350, 20, seed=3), 1, {}),  # n = 1: just the start point
        (clustered(350, 20, seed=4), 40, {"start": 17}),
        (clustered(350, 20, seed=5), 40, {"seed": 11}),
        (clustered(300, 24, seed=6) + 1000.0, 50, {"projection_dim": None}),  # a large offset: rounding
        (clustered(300, 24, seed=7) * 1e-3, 50, {}),  # tiny scale
    ],
    ids=[
        "clustered",
        "project-16",
        "uniform-3d",
        "n-equals-N",
        "n-1",
        "fixed-start",
        "other-seed",
        "offset",
        "tiny-scale",
    ],
)
def test_lazy_greedy_equals_plain_loop(small_blocks, features, n, kwargs):
    picks, _ = assert_same_as_plain(features, n, **kwargs)
    assert len(picks) == min(n, len(features))
    if "start" in kwargs:
        assert picks[0] == kwargs["start"]


def test_duplicates_and_more_centres_than_distinct_points(small_blocks):
    base = clustered(40, 6, seed=8)
    features = torch.cat([base, base, base[:10]])  # 90 rows, 40 distinct
    picks, radii = assert_same_as_plain(features, 70, projection_dim=None, start=3)
    assert len(set(picks[:40].tolist())) == 40 and radii[39] == 0.0
    # once everything is covered, both loops keep returning the lowest index at distance 0
    assert (picks[40:] == 0).all()


def test_exact_ties_break_to_the_lowest_index(small_blocks):
    # the corners of a square around the start: four points at exactly the same distance
    features = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [0.5, 0.0]])
    picks, _ = assert_same_as_plain(features, 6, projection_dim=None, start=0)
    assert picks[1] == 1


def test_default_block_size_on_more_points():
    features = clustered(2500, 32, seed=9)
    assert_same_as_plain(features, 250)


def test_the_loop_leaves_torch_threads_as_they_were(monkeypatch):
    monkeypatch.setattr(coreset, "REGROUP_EVERY", 5)
    torch.set_num_threads(2)  # the autouse fixture restores the caller's setting afterwards
    seen = []
    regroup = coreset._LazyDistances.regroup
    monkeypatch.setattr(
        coreset._LazyDistances, "regroup", lambda self: seen.append(torch.get_num_threads()) or regroup(self)
    )
    assert_same_as_plain(clustered(500, 16, seed=15), 40)
    assert seen and set(seen) == {coreset.LOOP_THREADS}
    assert torch.get_num_threads() == 2


def test_radii_are_the_covering_radius_after_each_pick(small_blocks):
    features = clustered(400, 16, seed=10)
    picks, radii = greedy_coreset(features, 50, projection_dim=None, return_radii=True)
    assert len(radii) == len(picks)
    assert np.all(np.diff(radii) <= 0)
    for k in (1, 2, 10, 50):
        assert radii[k - 1] == pytest.approx(covering_radius(features, picks[:k]), rel=1e-5)


def test_greedy_covers_better_than_random():
    features = clustered(800, 4, seed=11)
    greedy = covering_radius(features, greedy_coreset(features, 40, projection_dim=None))
    random = covering_radius(features, random_coreset(features, 40, seed=0))
    assert greedy < 0.8 * random


def test_accepts_numpy_and_float64_and_leaves_the_input_alone():
    features = clustered(300, 12, seed=12).double().numpy()
    before = features.copy()
    picks = greedy_coreset(features, 30, projection_dim=None)
    np.testing.assert_array_equal(picks, greedy_coreset_plain(features, 30, projection_dim=None))
    np.testing.assert_array_equal(features, before)


def test_random_projection_is_seeded_and_keeps_distances_roughly():
    features = clustered(200, 512, seed=13)
    a, b = random_projection(features, 128, seed=0), random_projection(features, 128, seed=0)
    assert a.shape == (200, 128) and torch.equal(a, b)
    assert not torch.equal(a, random_projection(features, 128, seed=1))
    ratio = torch.pdist(a) / torch.pdist(features)
    assert 0.7 < float(ratio.min()) and float(ratio.max()) < 1.3  # Johnson-Lindenstrauss at 128 dims
    assert random_projection(features, None) is features  # float32 already: no copy
    assert random_projection(features, 1024).shape == (200, 512)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_features_device():
    features = clustered(3000, 64, seed=14)
    fast, radii = greedy_coreset(features.cuda(), 200, return_radii=True)
    plain, plain_radii = greedy_coreset_plain(features, 200, return_radii=True)
    # a GPU may round a distance differently; then the radii still agree
    assert np.array_equal(fast, plain) or np.allclose(radii, plain_radii, rtol=1e-4)


def test_random_and_none_samplers():
    features = torch.randn(100, 4)
    picks = random_coreset(features, 30, seed=3)
    assert len(np.unique(picks)) == 30 and np.all(np.diff(picks) > 0) and picks.max() < 100
    np.testing.assert_array_equal(picks, random_coreset(features, 30, seed=3))
    assert not np.array_equal(picks, random_coreset(features, 30, seed=4))
    np.testing.assert_array_equal(random_coreset(features, 500), np.arange(100))
    np.testing.assert_array_equal(select_coreset(features, "none", 10), np.arange(100))
    np.testing.assert_array_equal(select_coreset(features, "random", 30, seed=3), picks)
    np.testing.assert_array_equal(
        select_coreset(features, "greedy", 10, projection_dim=None), greedy_coreset(features, 10, projection_dim=None)
    )


@pytest.mark.parametrize(
    "n_points, ratio, expected",
    [
        (1000, 0.1, 100),
        (1000, 1.0, 1000),
        (1000, 1, 1000),
        (5, 0.01, 1),
        (1000, 250, 250),
        (100, 250, 100),
        (1000, 0.0015, 2),
        (3, 2, 2),
        (1000, 250.0, 250),
    ],
)
def test_coreset_size(n_points, ratio, expected):
    assert coreset_size(n_points, ratio) == expected


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, True, float("nan")])
def test_coreset_size_rejects_bad_ratios(ratio):
    with pytest.raises(ValueError, match="coreset_ratio must be"):
        coreset_size(100, ratio)


@pytest.mark.parametrize("text", ["0.1", "1", "250", "250.0", "0", "1.5", "-3", "nan"])
def test_the_command_line_and_the_coreset_share_one_rule(text):
    import argparse

    from patchcore_kit.params import cli_type

    try:
        value = cli_type("coreset_ratio")(text)
    except argparse.ArgumentTypeError:
        with pytest.raises(ValueError, match="coreset_ratio must be"):
            coreset_size(100, float(text))
    else:
        assert 1 <= coreset_size(100, value) <= 100


def test_error_messages():
    features = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least 1"):
        greedy_coreset(features, 0)
    with pytest.raises(ValueError, match="start index 10 outside 0..9"):
        greedy_coreset(features, 3, start=10)
    with pytest.raises(ValueError, match="start index -1"):
        greedy_coreset_plain(features, 3, start=-1)
    with pytest.raises(ValueError, match="empty feature matrix"):
        greedy_coreset(torch.empty(0, 3), 1)
    with pytest.raises(ValueError, match="2-D"):
        greedy_coreset(torch.randn(4, 3, 2), 2)
    with pytest.raises(ValueError, match="projection_dim"):
        random_projection(features, 0)
    with pytest.raises(ValueError, match="unknown sampler 'kmeans'"):
        select_coreset(features, "kmeans", 3)
