"""PaDiM, SPADE and 1-NN against slow direct computations on tiny random maps, plus one real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from patchcore_kit.base import upsample_and_smooth
from patchcore_kit.baselines import (
    SPADE,
    NearestImage,
    PaDiM,
    gaussian_from_sums,
    global_features,
    knn_distance,
    nearest_in_each_image,
    padim_feature_count,
    random_channels,
)
from patchcore_kit.errors import InputError

IMAGE_SIZE = 16  # synthetic maps: 4x4 grid upsampled to 16x16
#: The random maps below play layer2 + layer3; SPADE and 1-NN then pool the deeper of them (the
#: "shared stages" setting). Their paper stages (layer1+2+3, global layer4) are tested further down.
SHARED = dict(layers=("layer2", "layer3"), global_layer=None)


def random_maps(n: int, seed: int) -> list[torch.Tensor]:
    """Two stages like layer2/layer3: (n, 6, 4, 4) and a coarser (n, 5, 2, 2)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 6, 4, 4, generator=generator), torch.randn(n, 5, 2, 2, generator=generator)]


def direct_aligned(maps: list[torch.Tensor]) -> np.ndarray:
    """Aligned features (n, 4, 4, 11) computed here, independently of the package."""
    deep = F.interpolate(maps[1], size=(4, 4), mode="bilinear", align_corners=False)
    return torch.cat([maps[0], deep], dim=1).permute(0, 2, 3, 1).numpy().astype(np.float64)


def direct_global(maps: list[torch.Tensor]) -> np.ndarray:
    return maps[1].numpy().astype(np.float64).mean(axis=(2, 3))


def batches_of(maps: list[torch.Tensor], size: int) -> list[list[torch.Tensor]]:
    n = len(maps[0])
    return [[m[i : i + size] for m in maps] for i in range(0, n, size)]


def fit_on_maps(model, maps: list[torch.Tensor], batch_size: int = 2):
    model._fit_maps(iter(batches_of(maps, batch_size)), len(maps[0]), {})
    model.n_train_ = len(maps[0])
    return model


class FakeExtractor:
    """Stands in for the backbone: yields given maps, as ``iter_layer_maps`` does."""

    def __init__(self, maps, batch_size: int = 2):
        self.maps, self.batch_size = maps, batch_size

    def iter_layer_maps(self, images, desc=""):
        return iter(batches_of(self.maps, self.batch_size))


# --- PaDiM ------------------------------------------------------------------------------------
def test_gaussian_from_sums_matches_numpy_covariance():
    x = np.random.default_rng(0).normal(size=(7, 3, 4))  # 7 images, 3 positions, 4 channels
    t = torch.from_numpy(x)
    mean, cov = gaussian_from_sums(t.sum(0), torch.einsum("npi,npj->pij", t, t), 7, epsilon=0.01)
    for p in range(3):
        np.testing.assert_allclose(mean[p].numpy(), x[:, p].mean(0), atol=1e-12)
        np.testing.assert_allclose(cov[p].numpy(), np.cov(x[:, p], rowvar=False) + 0.01 * np.eye(4), atol=1e-10)


def test_gaussian_of_one_image_is_epsilon_identity():
    x = torch.randn(1, 2, 5, dtype=torch.float64)
    _, cov = gaussian_from_sums(x.sum(0), torch.einsum("npi,npj->pij", x, x), 1, epsilon=0.01)
    np.testing.assert_allclose(cov.numpy(), np.broadcast_to(0.01 * np.eye(5), (2, 5, 5)), atol=1e-12)


def test_random_channels_are_seeded_and_bounded():
    assert torch.equal(random_channels(152, 100, seed=3), random_channels(152, 100, seed=3))
    assert not torch.equal(random_channels(152, 100, seed=3), random_channels(152, 100, seed=4))
    chosen = random_channels(152, 100, seed=3)
    assert len(chosen) == 100 and len(set(chosen.tolist())) == 100 and chosen.max() < 152
    assert torch.equal(random_channels(11, 100, seed=0), torch.arange(11))
    assert torch.equal(random_channels(11, None, seed=0), torch.arange(11))
    with pytest.raises(ValueError, match="n_features"):
        random_channels(11, 0, seed=0)


def scipy_padim_grid(train, test, channels, epsilon=0.01) -> np.ndarray:
    """PaDiM's Mahalanobis grid (n_test, 4, 4) by scipy, position by position."""
    x_train, x_test = direct_aligned(train)[..., channels], direct_aligned(test)[..., channels]
    expected = np.zeros((len(x_test), 4, 4))
    for i in range(4):
        for j in range(4):
            inverse = np.linalg.inv(np.cov(x_train[:, i, j], rowvar=False) + epsilon * np.eye(len(channels)))
            for b in range(len(x_test)):
                expected[b, i, j] = scipy_mahalanobis(x_test[b, i, j], x_train[:, i, j].mean(0), inverse)
    return expected


def test_padim_equals_scipy_mahalanobis_per_position():
    train, test = random_maps(9, seed=1), random_maps(3, seed=2)
    model = fit_on_maps(PaDiM(n_features=8, epsilon=0.01, image_size=IMAGE_SIZE, seed=5), train)
    scores, grid = model._score_maps(test)

    channels = model.channel_index_.numpy()
    assert len(channels) == 8
    expected = scipy_padim_grid(train, test, channels)
    np.testing.assert_allclose(grid.numpy(), expected, rtol=1e-4, atol=1e-4)
    smoothed = upsample_and_smooth(torch.from_numpy(expected).float(), IMAGE_SIZE)
    np.testing.assert_allclose(scores, smoothed.max(axis=(1, 2)), rtol=1e-4)


@pytest.mark.parametrize("block", [1, 3, 64])
def test_padim_scores_images_in_blocks_as_scipy_says(monkeypatch, block):
    """score_images scores blocks of SCORE_BLOCK images (across the extractor's batches) from the
    shared aligned features: scipy's grid, its maps once smoothed, their maxima as the image scores;
    the same bits whatever the extractor's batch size, and from embed_images / score_embedded."""
    import patchcore_kit.base as base

    monkeypatch.setattr(base, "SCORE_BLOCK", block)
    train, test = random_maps(9, seed=1), random_maps(7, seed=2)
    model = fit_on_maps(PaDiM(n_features=8, epsilon=0.01, image_size=IMAGE_SIZE, seed=5), train)
    model._extractor = lambda: FakeExtractor(test, batch_size=2)
    model._check_params = lambda: None  # the 16 px maps are below the public minimum image size
    scored = model.score_images(list(range(7)))

    expected = scipy_padim_grid(train, test, model.channel_index_.numpy())
    smoothed = upsample_and_smooth(torch.from_numpy(expected).float(), IMAGE_SIZE)
    np.testing.assert_allclose(scored.maps, smoothed, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(scored.scores, scored.maps.max(axis=(1, 2)))
    np.testing.assert_allclose(scored.scores, smoothed.max(axis=(1, 2)), rtol=1e-4)

    again = model.score_embedded(model.embed_images(list(range(7))))
    model._extractor = lambda: FakeExtractor(test, batch_size=3)
    other_batches = model.score_images(list(range(7)))
    for other in (again, other_batches):
        np.testing.assert_array_equal(other.scores, scored.scores)
        np.testing.assert_array_equal(other.maps, scored.maps)


def test_padim_fit_does_not_depend_on_batching():
    train, test = random_maps(6, seed=3), random_maps(2, seed=4)
    one = fit_on_maps(PaDiM(image_size=IMAGE_SIZE), train, batch_size=6)._score_maps(test)
    many = fit_on_maps(PaDiM(image_size=IMAGE_SIZE), train, batch_size=1)._score_maps(test)
    np.testing.assert_allclose(one[0], many[0], rtol=1e-5)


def test_padim_works_from_a_single_image():
    train, test = random_maps(1, seed=5), random_maps(2, seed=6)
    model = fit_on_maps(PaDiM(image_size=IMAGE_SIZE, epsilon=0.01, n_features=None), train)  # every channel
    scores, grid = model._score_maps(test)
    assert np.isfinite(scores).all()
    # covariance = 0.01 I: the Mahalanobis distance is the Euclidean one divided by 0.1
    euclid = np.linalg.norm(direct_aligned(test) - direct_aligned(train), axis=-1)
    np.testing.assert_allclose(grid.numpy(), euclid / 0.1, rtol=1e-4)


def test_padim_leave_one_out_equals_refitting_without_the_image():
    train = random_maps(5, seed=7)
    model = fit_on_maps(PaDiM(image_size=IMAGE_SIZE, n_features=6), train)
    model._extractor = lambda: FakeExtractor(train)
    scores, maxima = model._leave_one_out_scores(list(range(5)))
    for i in range(5):
        keep = [j for j in range(5) if j != i]
        refit = fit_on_maps(PaDiM(image_size=IMAGE_SIZE, n_features=6), [m[keep] for m in train])
        expected, _ = refit._score_maps([m[i : i + 1] for m in train])
        assert scores[i] == pytest.approx(expected[0], rel=1e-4)
    np.testing.assert_array_equal(scores, maxima)


# --- SPADE and 1-NN ---------------------------------------------------------------------------
def brute_force_spade(train, test, top_k_images, k):
    g_train, g_test = direct_global(train), direct_global(test)
    f_train, f_test = direct_aligned(train), direct_aligned(test)
    scores, grids = [], []
    for b in range(len(g_test)):
        image_distances = [np.linalg.norm(g_test[b] - g) for g in g_train]
        nearest = np.argsort(image_distances)[:top_k_images]
        scores.append(np.mean(np.sort(image_distances)[:top_k_images]))
        gallery = [f_train[n, i, j] for n in nearest for i in range(4) for j in range(4)]
        grid = np.zeros((4, 4))
        for i in range(4):
            for j in range(4):
                distances = sorted(np.linalg.norm(f_test[b, i, j] - g) for g in gallery)
                grid[i, j] = np.mean(distances[:k])
        grids.append(grid)
    return np.array(scores), np.array(grids)


@pytest.mark.parametrize("k", [1, 3, 40])
def test_knn_distance_equals_scipy_cdist(k):
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(k)
    queries, gallery = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    expected = np.sort(cdist(queries, gallery), axis=1)[:, :k].mean(axis=1)  # k > 30: all of them
    got = knn_distance(torch.from_numpy(queries).float(), torch.from_numpy(gallery).float(), k)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize("top_k_images, k", [(3, 1), (3, 2), (50, 1)])
def test_spade_equals_brute_force_loops(top_k_images, k):
    train, test = random_maps(6, seed=8), random_maps(3, seed=9)
    model = fit_on_maps(SPADE(top_k_images=top_k_images, k=k, image_size=IMAGE_SIZE, **SHARED), train)
    scores, grid = model._score_maps(test)
    expected_scores, expected_grid = brute_force_spade(train, test, top_k_images, k)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4)
    np.testing.assert_allclose(grid.numpy(), expected_grid, rtol=1e-4, atol=1e-4)


def test_nearest_image_equals_brute_force():
    train, test = random_maps(5, seed=10), random_maps(3, seed=11)
    model = fit_on_maps(NearestImage(image_size=IMAGE_SIZE, **SHARED), train)
    scores, grid = model._score_maps(test)
    g_train, g_test = direct_global(train), direct_global(test)
    f_train, f_test = direct_aligned(train), direct_aligned(test)
    for b in range(3):
        distances = [np.linalg.norm(g_test[b] - g) for g in g_train]
        nearest = int(np.argmin(distances))
        assert scores[b] == pytest.approx(min(distances), rel=1e-5)
        np.testing.assert_allclose(grid[b].numpy(), np.linalg.norm(f_test[b] - f_train[nearest], axis=-1), rtol=1e-4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SPADE(top_k_images=2, image_size=IMAGE_SIZE, **SHARED),
        lambda: NearestImage(image_size=IMAGE_SIZE, **SHARED),
    ],
)
def test_image_memory_leave_one_out_equals_refitting(make):
    train = random_maps(4, seed=12)
    model = fit_on_maps(make(), train)
    scores, maxima = model._leave_one_out_scores(list(range(4)))
    for i in range(4):
        keep = [j for j in range(4) if j != i]
        refit = fit_on_maps(make(), [m[keep] for m in train])
        score, grid = refit._score_maps([m[i : i + 1] for m in train])
        assert scores[i] == pytest.approx(score[0], rel=1e-5)
        assert maxima[i] == pytest.approx(upsample_and_smooth(grid, IMAGE_SIZE)[0].max(), rel=1e-5)


def test_global_feature_pools_the_deepest_layer_whatever_the_order():
    maps = random_maps(2, seed=13)
    np.testing.assert_allclose(global_features(maps, ("layer2", "layer3")).numpy(), direct_global(maps), rtol=1e-6)
    swapped = [maps[1], maps[0]]
    np.testing.assert_allclose(global_features(swapped, ("layer3", "layer2")).numpy(), direct_global(maps), rtol=1e-6)


def test_unfitted_baseline_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        SPADE().decision_function([np.zeros((8, 8, 3), np.uint8)])


def test_params_are_stored_untouched():
    model = PaDiM(n_features=7, epsilon=0.5, layers=("layer2",))
    assert model.get_params()["n_features"] == 7 and model.get_params()["layers"] == ("layer2",)
    assert repr(model) == "PaDiM(epsilon=0.5, layers=('layer2',), n_features=7)"  # scikit-learn's: changed ones only


# --- each paper's stages ----------------------------------------------------------------------
def test_padim_channel_rule_keeps_the_wrn50_share():
    assert padim_feature_count(1792) == 550  # WRN50 layer1+2+3: the PaDiM paper's 550
    assert padim_feature_count(448) == 138  # ResNet18: the rule's 138 (the paper used 100)
    assert padim_feature_count(24 + 40 + 112) == 54  # EfficientNet-Lite0 layer1+2+3
    assert padim_feature_count(176, 100) == 100 and padim_feature_count(176, 500) == 176
    assert padim_feature_count(176, None) == 176 and padim_feature_count(3) == 1
    with pytest.raises(ValueError, match="auto"):
        padim_feature_count(176, "most")
    model = fit_on_maps(PaDiM(image_size=IMAGE_SIZE, seed=1), random_maps(3, seed=20))  # 6 + 5 channels
    assert len(model.channel_index_) == round(11 * 550 / 1792) == 3
    assert PaDiM().layers == ("layer1", "layer2", "layer3") and PaDiM().n_features == "auto"


def paper_maps(n: int, seed: int) -> list[torch.Tensor]:
    """layer1..layer4 like maps: (n, 3, 4, 4), (n, 4, 2, 2), (n, 5, 2, 2), (n, 7, 1, 1)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, s, s, generator=generator) for c, s in ((3, 4), (4, 2), (5, 2), (7, 1))]


@pytest.mark.parametrize("k", [1, 2])
def test_spade_paper_stages_pixels_from_layer123_global_from_layer4(k):
    train, test = paper_maps(7, seed=21), paper_maps(3, seed=22)
    model = SPADE(top_k_images=4, k=k, image_size=IMAGE_SIZE)
    assert model._extract_layers() == ("layer1", "layer2", "layer3", "layer4")
    fit_on_maps(model, train)
    scores, grid = model._score_maps(test)

    def aligned(maps):
        parts = [maps[0]] + [F.interpolate(m, size=(4, 4), mode="bilinear", align_corners=False) for m in maps[1:3]]
        return torch.cat(parts, 1).permute(0, 2, 3, 1).reshape(len(maps[0]), 16, -1).double().numpy()

    g_train, g_test = train[3].double().mean((2, 3)).numpy(), test[3].double().mean((2, 3)).numpy()
    f_train, f_test = aligned(train), aligned(test)
    for b in range(3):
        distances = np.linalg.norm(g_train - g_test[b], axis=1)
        nearest = np.argsort(distances)[:4]
        assert scores[b] == pytest.approx(np.sort(distances)[:4].mean(), rel=1e-5)
        gallery = f_train[nearest].reshape(-1, f_train.shape[-1])
        pair = np.linalg.norm(f_test[b][:, None] - gallery[None], axis=2)
        np.testing.assert_allclose(
            grid[b].reshape(-1).numpy(), np.sort(pair, axis=1)[:, :k].mean(1), rtol=1e-4, atol=1e-5
        )


def direct_per_layer_grid(train, test, b, nearest, k):
    """SPADE's reference code, written out: each layer searched at its own grid, every distance
    grid resized (bilinear) to layer1's 4 x 4 and the three averaged."""
    grids = []
    for layer in range(3):
        f_train = train[layer].permute(0, 2, 3, 1).double().numpy()
        f_test = test[layer][b].permute(1, 2, 0).double().numpy()  # (h, w, C)
        h, w = f_test.shape[:2]
        gallery = f_train[nearest].reshape(-1, f_train.shape[-1])
        pair = np.linalg.norm(f_test.reshape(-1, 1, f_test.shape[-1]) - gallery[None], axis=2)
        grid = torch.from_numpy(np.sort(pair, axis=1)[:, :k].mean(1).reshape(1, 1, h, w)).float()
        grids.append(F.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False)[0, 0].numpy())
    return np.mean(grids, axis=0)


@pytest.mark.parametrize("k", [1, 2])
def test_spade_per_layer_matching_equals_the_reference_codes_loops(k):
    train, test = paper_maps(7, seed=23), paper_maps(3, seed=24)
    model = fit_on_maps(SPADE(top_k_images=4, k=k, image_size=IMAGE_SIZE, pixel_matching="per_layer"), train)
    scores, grid = model._score_maps(test)
    aligned_scores, aligned_grid = fit_on_maps(SPADE(top_k_images=4, k=k, image_size=IMAGE_SIZE), train)._score_maps(
        test
    )
    np.testing.assert_array_equal(scores, aligned_scores)  # the image score does not depend on the matching
    assert not np.allclose(grid.numpy(), aligned_grid.numpy())  # ... the maps do
    g_train, g_test = train[3].double().mean((2, 3)).numpy(), test[3].double().mean((2, 3)).numpy()
    for b in range(3):
        nearest = np.argsort(np.linalg.norm(g_train - g_test[b], axis=1))[:4]
        np.testing.assert_allclose(
            grid[b].numpy(), direct_per_layer_grid(train, test, b, nearest, k), rtol=1e-4, atol=1e-5
        )


def test_spade_pixel_matching_is_checked():
    with pytest.raises(InputError, match="pixel_matching must be one of aligned, per_layer"):
        SPADE(pixel_matching="stacked")._check_params()


def test_nearest_image_paper_stages_extracts_the_union_once():
    model = NearestImage(layers=("layer2", "layer3"), global_layer="layer4")
    assert model._extract_layers() == ("layer2", "layer3", "layer4")
    assert NearestImage(layers=("layer2", "layer4"), global_layer="layer4")._extract_layers() == ("layer2", "layer4")


@pytest.mark.parametrize("k", [1, 3])
def test_chunked_knn_is_exact(k):
    rng = np.random.default_rng(30 + k)
    queries, gallery = (
        torch.from_numpy(rng.normal(size=(9, 6))).float(),
        torch.from_numpy(rng.normal(size=(50, 6))).float(),
    )
    whole = knn_distance(queries, gallery, k, max_bytes=1 << 30)
    for max_bytes in (1, 4 * 9 * 7, 4 * 9 * 25):  # one gallery row per block, 7 rows, 25 rows
        torch.testing.assert_close(knn_distance(queries, gallery, k, max_bytes=max_bytes), whole, rtol=1e-5, atol=1e-5)


def test_nearest_in_each_image_equals_brute_force_in_any_block_size():
    rng = np.random.default_rng(40)
    queries = torch.from_numpy(rng.normal(size=(2, 5, 4))).float()  # 2 test images, 5 positions
    train = torch.from_numpy(rng.normal(size=(6, 7, 4))).float()  # 6 training images, 7 positions
    q, t = queries.double().numpy(), train.double().numpy()
    index = [4, 1, 3]
    expected = np.array([[np.linalg.norm(q[b][:, None] - t[n][None], axis=2).min(1) for n in index] for b in range(2)])
    for max_bytes in (1, 4 * 7 * 3, 4 * 7 * 10, 1 << 30):  # down to one query row and one image per block
        got = nearest_in_each_image(queries, train, index, max_bytes=max_bytes)
        assert got.shape == (2, 3, 5)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


# --- one real run -----------------------------------------------------------------------------
def textured(seed: int, defect: bool = False) -> np.ndarray:
    """A 64 px stripe texture with noise; a defect is a bright square."""
    rng = np.random.default_rng(seed)
    stripes = 100 + 60 * (np.arange(64) // 4 % 2)
    image = np.repeat(np.tile(stripes, (64, 1))[..., None], 3, axis=2) + rng.normal(0, 8, (64, 64, 3))
    if defect:
        image[24:40, 24:40] = 250
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One feature cache for the three real runs: the backbone runs once, as in a sweep."""
    return tmp_path_factory.mktemp("features")


@pytest.mark.parametrize("make", [PaDiM, SPADE, NearestImage])
def test_end_to_end_on_real_backbone_features(make, shared_cache):
    train = [textured(i) for i in range(4)]
    test = [textured(10), textured(11, defect=True)]
    model = make(backbone="efficientnet_lite0", image_size=64, feature_cache=shared_cache)  # each paper's stages
    model.fit(train)
    scores, maps = model.score_images(test)
    assert scores.shape == (2,) and maps.shape == (2, 64, 64)
    assert scores[1] > scores[0]  # the bright square is found ...
    assert maps[1][24:40, 24:40].mean() > maps[1][:12, :12].mean()  # ... and roughly where it is
    assert model.threshold_ is not None and model.pixel_threshold_ is not None
    assert set(model.predict(test).tolist()) <= {0, 1}
    assert len(list(shared_cache.rglob("*.safetensors"))) == 6  # one entry per image, whatever the stages


def test_map_blocks_runs_every_block_and_raises_a_blocks_error():
    """SPADE's search hands its blocks to threads.map_blocks: every block runs, with torch on one
    thread inside, and an exception in a block is not lost."""
    import torch

    from patchcore_kit.threads import map_blocks

    seen = torch.zeros(50)
    threads_inside = []

    def mark(i):
        seen[i] += 1
        threads_inside.append(torch.get_num_threads())

    before = torch.get_num_threads()
    map_blocks(mark, range(50), threads=2)
    assert seen.tolist() == [1.0] * 50 and set(threads_inside) == {1}
    assert torch.get_num_threads() == before  # restored

    def fail(i):
        if i == 7:
            raise ValueError("block 7")

    with pytest.raises(ValueError, match="block 7"):
        map_blocks(fail, range(20), threads=2)
    assert torch.get_num_threads() == before
