"""PatchCore: the estimator contract, the paper's scoring (Eq. 7, σ=4 maps), thresholds, save/load.

A tiny real problem: crops of a brick texture (skimage) as nominal images, the same texture with a
pasted blob as anomalies, at 64 px with the offline EfficientNet-Lite0.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from patchcore_kit import neighbors
from patchcore_kit.base import upsample_and_smooth
from patchcore_kit.errors import InputError
from patchcore_kit.evaluate import evaluate
from patchcore_kit.features import FeatureExtractor, flatten_patches
from patchcore_kit.images import as_hw
from patchcore_kit.neighbors import MemoryBankIndex
from patchcore_kit.patchcore import PatchCore, reweighted_image_scores

SIZE = 64
SETTINGS = dict(backbone="efficientnet_lite0", image_size=SIZE, coreset_ratio=0.25, seed=0)


def brick_crop(y: int, x: int, blob: tuple[int, int, int] | None = None) -> np.ndarray:
    import skimage.data

    crop = np.array(skimage.data.brick()[y : y + 128, x : x + 128])
    if blob is not None:
        cy, cx, value = blob
        yy, xx = np.mgrid[:128, :128]
        crop[(yy - cy) ** 2 + (xx - cx) ** 2 < 15**2] = value
    return crop


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    """Written as grayscale PNGs: train (5 nominal), test (2 nominal, then both with a bright / dark blob)."""
    folder = tmp_path_factory.mktemp("textures")
    train = [(0, 0), (0, 200), (200, 0), (200, 200), (380, 380)]
    test = [
        brick_crop(300, 100),
        brick_crop(40, 300),
        brick_crop(300, 100, (60, 70, 255)),
        brick_crop(40, 300, (64, 64, 0)),
    ]
    paths = {"train": [], "test": []}
    for i, (y, x) in enumerate(train):
        Image.fromarray(brick_crop(y, x)).save(folder / f"train{i}.png")
        paths["train"].append(folder / f"train{i}.png")
    for i, pixels in enumerate(test):
        Image.fromarray(pixels).save(folder / f"test{i}.png")
        paths["test"].append(folder / f"test{i}.png")
    paths["labels"] = np.array([0, 0, 1, 1])
    paths["blob_centres"] = [None, None, (60, 70), (64, 64)]
    return paths


@pytest.fixture(scope="module")
def fitted(textures):
    return PatchCore(**SETTINGS).fit(textures["train"])


# --- the estimator contract -----------------------------------------------------------------------
def test_fit_returns_self_and_keeps_parameters_untouched(textures):
    model = PatchCore(**SETTINGS, layers=["layer2", "layer3"])
    params = dict(model.get_params())
    before = set(vars(model))
    assert model.fit(textures["train"]) is model
    assert model.get_params() == params  # the list of layers is still the list the user gave
    learned = set(vars(model)) - before
    public = {name for name in learned if not name.startswith("_")}
    assert public and all(name.endswith("_") for name in public), public
    assert {"memory_bank_", "threshold_", "n_train_", "feature_shape_"} <= public
    assert model.n_train_ == 5 and model.feature_shape_ == (8, 8)
    assert model.memory_bank_.shape == (round(5 * 64 * 0.25), 152)
    assert "PatchCore(" in repr(model) and "coreset_ratio=0.25" in repr(model)


def test_unfitted_model_and_empty_training_set_fail_clearly():
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchCore(**SETTINGS).decision_function([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="at least one"):
        PatchCore(**SETTINGS).fit([])


def test_same_seed_gives_identical_bank_and_scores(fitted, textures):
    again = PatchCore(**SETTINGS).fit(textures["train"])
    assert torch.equal(again.memory_bank_, fitted.memory_bank_)
    np.testing.assert_array_equal(again.coreset_indices_, fitted.coreset_indices_)
    np.testing.assert_array_equal(again.decision_function(textures["test"]), fitted.decision_function(textures["test"]))
    assert again.threshold_ == fitted.threshold_


def test_pasted_blob_scores_higher_and_is_located(fitted, textures):
    scores = fitted.decision_function(textures["test"])
    labels = textures["labels"]
    assert scores[labels == 1].min() > scores[labels == 0].max(), scores
    maps = fitted.anomaly_map(textures["test"])
    for anomaly_map, centre in zip(maps, textures["blob_centres"]):
        if centre is None:
            continue
        peak = np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)
        expected = np.array(centre) * SIZE / 128
        assert np.abs(np.array(peak) - expected).max() <= 10, (peak, expected)


def test_output_shapes_and_types(fitted, textures):
    test = textures["test"]
    assert fitted.decision_function(test).shape == (4,)
    assert fitted.decision_function(test[0]).shape == (1,)  # a single path is one image
    maps = fitted.anomaly_map(test)
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype.kind == "f"
    predictions = fitted.predict(test)
    assert predictions.shape == (4,) and predictions.dtype.kind == "i"
    assert set(predictions.tolist()) <= {0, 1}
    np.testing.assert_array_equal(predictions, (fitted.decision_function(test) > fitted.threshold_).astype(int))
    scores, maps_again = fitted.score_images(test)
    np.testing.assert_array_equal(maps_again, maps)
    assert fitted.patch_scores(test).shape == (4, 8, 8)


def test_non_square_image_size(textures):
    model = PatchCore(**{**SETTINGS, "image_size": (64, 96)}, calibrate=False).fit(textures["train"][:2])
    assert model.feature_shape_ == (8, 12)
    assert model.anomaly_map(textures["test"][:1]).shape == (1, 64, 96)


# --- the paper's scoring --------------------------------------------------------------------------
def test_anomaly_map_is_bilinear_upsampling_then_gaussian_sigma_4(fitted, textures):
    patch = fitted.patch_scores(textures["test"]).numpy().astype(np.float64)
    maps = fitted.anomaly_map(textures["test"])
    for grid, anomaly_map in zip(patch, maps):
        # scipy's order-1 zoom on pixel centres (grid_mode) is half-pixel bilinear upsampling
        upsampled = ndimage.zoom(grid, SIZE / grid.shape[0], order=1, grid_mode=True, mode="nearest")
        expected = ndimage.gaussian_filter(upsampled, sigma=4)
        np.testing.assert_allclose(anomaly_map, expected, rtol=1e-4, atol=1e-4 * grid.max())
    # smoothing really happened: the map is smoother than the plain upsampling
    assert np.abs(np.diff(maps[2], axis=0)).max() < np.abs(np.diff(upsampled, axis=0)).max()


@pytest.mark.parametrize(
    ("grid", "size", "sigma"),
    [((28, 28), 224, 4.0), ((8, 12), (64, 96), 4.0), ((5, 7), (40, 33), 2.5), ((6, 6), 48, 0)],
)
def test_anomaly_maps_as_matrix_products_equal_interpolate_then_scipy_filter(grid, size, sigma):
    # upsample_and_smooth applies both linear steps as two small matrices; the reference runs them
    scores = torch.rand(3, *grid, generator=torch.Generator().manual_seed(1)) * 50 - 5
    up = F.interpolate(scores[:, None], size=as_hw(size), mode="bilinear", align_corners=False)[:, 0].numpy()
    expected = np.stack([ndimage.gaussian_filter(m, sigma=sigma) if sigma else m for m in up])
    maps = upsample_and_smooth(scores, size, sigma=sigma)
    assert maps.dtype == np.float32 and maps.shape == expected.shape
    np.testing.assert_allclose(maps, expected, rtol=2e-6, atol=2e-6 * np.abs(expected).max())


def paper_image_score(test_patches: np.ndarray, bank: np.ndarray, b: int) -> float:
    """Eq. 7 of the paper, written out directly in float64."""
    distances = np.linalg.norm(test_patches[:, None] - bank[None], axis=2)  # (P, M)
    patch_scores = distances.min(axis=1)
    worst = int(np.argmax(patch_scores))
    s_star, m_star = patch_scores[worst], int(np.argmin(distances[worst]))
    if b <= 1:
        return float(s_star)
    neighbourhood = np.argsort(np.linalg.norm(bank - bank[m_star], axis=1))[:b]  # N_b(m*), m* first
    to_test = np.linalg.norm(bank[neighbourhood] - test_patches[worst], axis=1)
    weight = 1.0 - np.exp(s_star) / np.exp(to_test).sum()
    return float(weight * s_star)


@pytest.mark.parametrize("b", [1, 2, 5, 9])
def test_reweighted_score_matches_the_papers_equation(b):
    rng = np.random.default_rng(b)
    bank = rng.normal(size=(60, 8))
    tests = rng.normal(size=(3, 25, 8))
    tests[1, 7] += 3.0  # one clearly anomalous patch
    index = MemoryBankIndex(torch.from_numpy(bank).float())
    flat = torch.from_numpy(tests.reshape(-1, 8)).float()
    distances, nearest = index.search(flat, k=1)
    scores = reweighted_image_scores(
        distances[:, 0].reshape(3, 25), nearest[:, 0].reshape(3, 25), flat.reshape(3, 25, 8), index, b
    )
    expected = [paper_image_score(t, bank, b) for t in tests]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)
    maxima = distances[:, 0].reshape(3, 25).amax(dim=1)
    if b == 1:  # plain maximum patch score
        np.testing.assert_allclose(scores.numpy(), maxima.numpy(), rtol=1e-6)
    else:
        assert (scores < maxima).all()  # the weight is below 1


def test_model_image_score_is_eq7_on_its_own_bank(fitted, textures):
    layer_maps = FeatureExtractor("efficientnet_lite0", image_size=SIZE).layer_maps(textures["test"])
    patches = flatten_patches(fitted.embed(layer_maps)).numpy().astype(np.float64).reshape(4, 64, -1)
    bank = fitted.memory_bank_.numpy().astype(np.float64)
    expected = [paper_image_score(p, bank, fitted.num_neighbors) for p in patches]
    np.testing.assert_allclose(fitted.decision_function(textures["test"]), expected, rtol=1e-4)
    fitted_b1 = PatchCore.load(fitted.save(textures["train"][0].parent / "b1.safetensors"))
    fitted_b1.num_neighbors = 1
    maxima = fitted.patch_scores(textures["test"]).amax(dim=(1, 2)).numpy()
    np.testing.assert_allclose(fitted_b1.decision_function(textures["test"]), maxima, rtol=1e-6)


# --- the predict threshold comes from nominal training images only ---------------------------------
def test_threshold_is_the_leave_one_out_quantile_of_training_scores(textures):
    train = textures["train"][:3]
    model = PatchCore(**{**SETTINGS, "sampler": "none"}).fit(train)
    loo_scores, loo_maxima = [], []
    for i, held_out in enumerate(train):
        others = [p for j, p in enumerate(train) if j != i]
        without = PatchCore(**{**SETTINGS, "sampler": "none"}, calibrate=False).fit(others)
        score, anomaly_map = without.score_images([held_out])
        loo_scores.append(score[0])
        loo_maxima.append(anomaly_map[0].max())
    assert model.threshold_ == pytest.approx(np.quantile(loo_scores, 0.99), rel=1e-5)
    assert model.pixel_threshold_ == pytest.approx(np.quantile(loo_maxima, 0.99), rel=1e-5)
    assert model.threshold_ > 0  # not the ~0 a training image scores against a bank holding itself


def test_test_set_never_moves_the_threshold(make_mvtec):
    from patchcore_kit.data import load_dataset

    split = load_dataset(make_mvtec(n_train=3, test={"good": 2, "scratch": 2}), "mvtec")
    good = [s for s in split.test if s.label == 0]
    bad = [s for s in split.test if s.label == 1]
    thresholds = []
    for test in (split.test, [good[0], bad[1]], [good[1], bad[0]]):
        model = PatchCore(**SETTINGS)
        evaluate(model, dataclasses.replace(split, test=test))
        thresholds.append(model.threshold_)
    assert thresholds[0] is not None and thresholds[0] == thresholds[1] == thresholds[2]


def test_one_training_image_has_no_threshold(textures):
    model = PatchCore(**SETTINGS).fit(str(textures["train"][0]))  # one path is one image
    assert model.n_train_ == 1 and model.threshold_ is None
    assert PatchCore(**SETTINGS).fit(brick_crop(0, 0)).n_train_ == 1  # so is one array
    assert model.decision_function(textures["test"]).shape == (4,)  # scoring still works
    with pytest.raises(RuntimeError, match="at least 2 training images"):
        model.predict(textures["test"])
    no_calibration = PatchCore(**SETTINGS, calibrate=False).fit(textures["train"][:2])
    assert no_calibration.threshold_ is None


# --- save / load: one safetensors file, no pickle ---------------------------------------------------
def test_save_load_round_trip_without_pickle(fitted, textures, tmp_path, monkeypatch):
    path = fitted.save(tmp_path / "models" / "brick.safetensors")
    data = path.read_bytes()
    header_length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_length])
    assert header["__metadata__"]["format"].startswith("patchcore_kit.PatchCore")
    assert {"memory_bank", "bank_image", "coreset_indices"} <= set(header)
    assert not list(tmp_path.rglob("*.partial"))

    def refuse(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle anything")

    with monkeypatch.context() as no_pickle:
        no_pickle.setattr(torch, "load", refuse)
        no_pickle.setattr(pickle, "load", refuse)
        no_pickle.setattr(pickle, "loads", refuse)
        loaded = PatchCore.load(path)
    assert loaded.get_params() == {**fitted.get_params(), "feature_cache": None}
    assert torch.equal(loaded.memory_bank_, fitted.memory_bank_)
    assert loaded.threshold_ == fitted.threshold_ and loaded.feature_shape_ == fitted.feature_shape_
    np.testing.assert_array_equal(
        loaded.decision_function(textures["test"]), fitted.decision_function(textures["test"])
    )
    np.testing.assert_array_equal(loaded.anomaly_map(textures["test"]), fitted.anomaly_map(textures["test"]))
    np.testing.assert_array_equal(loaded.predict(textures["test"]), fitted.predict(textures["test"]))


def test_load_rejects_what_is_not_a_model(tmp_path, textures):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for path in (
        tmp_path / "other.safetensors",
        tmp_path / "corrupt.safetensors",
        tmp_path / "empty.safetensors",
        textures["train"][0],  # a PNG
        tmp_path / "missing.safetensors",
        tmp_path,  # a folder
    ):
        with pytest.raises(InputError) as error:
            PatchCore.load(path)
        assert str(error.value).startswith(str(path)), str(error.value)


def test_save_refuses_an_unfitted_model(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchCore(**SETTINGS).save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# --- every input kind gives the same scores -------------------------------------------------------
def test_paths_pil_numpy_and_tensors_give_the_same_scores(fitted, textures):
    paths = textures["test"]
    arrays = [np.asarray(Image.open(p)) for p in paths]  # grayscale (H, W) uint8
    rgb = [np.repeat(a[..., None], 3, axis=2) for a in arrays]
    batch = torch.from_numpy(np.stack(rgb).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    reference = fitted.decision_function(paths)
    for name, images in {
        "str paths": [str(p) for p in paths],
        "PIL": [Image.open(p) for p in paths],
        "numpy HxW": arrays,
        "numpy HxWx3": rgb,
        "numpy batch": np.stack(rgb),
        "tensor batch": batch,
        "list of tensors": list(batch),
    }.items():
        np.testing.assert_array_equal(fitted.decision_function(images), reference, err_msg=name)
    # one (C, H, W) tensor: a batch of one takes other convolution kernels, so equal to float32 rounding
    np.testing.assert_allclose(fitted.decision_function(batch[2]), reference[2:3], rtol=1e-5)


def test_feature_cache_gives_the_same_model(textures, tmp_path, fitted):
    cached = PatchCore(**SETTINGS, feature_cache=str(tmp_path / "cache")).fit(textures["train"])
    assert torch.equal(cached.memory_bank_, fitted.memory_bank_)
    np.testing.assert_array_equal(
        cached.decision_function(textures["test"]), fitted.decision_function(textures["test"])
    )


# --- evaluate(): fit, score, measure ---------------------------------------------------------------
@pytest.mark.parametrize("masks", [True, False])
def test_evaluate_on_a_tiny_mvtec_category(make_mvtec, masks):
    from patchcore_kit.data import load_dataset

    split = load_dataset(make_mvtec(n_train=3, test={"good": 2, "scratch": 2, "dent": 1}, masks=masks), "mvtec")
    result = evaluate(PatchCore(**SETTINGS, calibrate=False), split)
    assert result.scores.shape == (5,) and result.maps.shape == (5, SIZE, SIZE)
    metrics = result.metrics
    assert metrics["image_auroc"] == 1.0  # bright defects against grey nominal noise
    assert set(metrics["per_defect"]) == {"scratch", "dent"}
    if masks:
        assert result.masks.shape == (5, SIZE, SIZE) and result.masks[2:].any() and not result.masks[:2].any()
        assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and 0.0 <= metrics["aupro"] <= 1.0
        assert metrics["per_defect"]["dent"]["pixel_auroc"] is not None
    else:
        assert result.masks is None
        assert metrics["pixel_auroc"] is None and metrics["aupro"] is None
        assert metrics["per_defect"]["dent"]["pixel_auroc"] is None
    assert {"fit_features", "fit_coreset", "fit_total", "fit", "infer", "metrics"} <= set(result.seconds)
    rows = result.score_rows()
    assert [r["label"] for r in rows] == list(split.test_labels)
    assert all(r["path"] == f"test/{r['defect_type']}/{Path(r['path']).name}" for r in rows), rows


@pytest.mark.skipif(not neighbors.faiss_available(), reason="faiss not installed")
def test_approximate_search_is_a_saved_parameter_and_scores_like_exact(fitted, textures, tmp_path):
    """search="hnsw": the index is rebuilt from the bank on load (never saved); on a small bank it
    finds the exact neighbours, so the scores are the exact model's."""
    model = PatchCore.load(fitted.save(tmp_path / "exact.safetensors"))
    model.search = "hnsw"
    path = model.save(tmp_path / "hnsw.safetensors")
    loaded = PatchCore.load(path)
    assert loaded.search == "hnsw" and loaded._bank_index().search_kind == "hnsw"
    np.testing.assert_allclose(
        loaded.decision_function(textures["test"]), fitted.decision_function(textures["test"]), rtol=1e-6
    )
    with pytest.raises(ValueError, match="search must be one of exact, hnsw, ivf, auto, got 'annoy'"):
        PatchCore(**SETTINGS, search="annoy").fit(textures["train"][:1])


def test_a_model_file_from_before_the_search_parameter_loads_exact(fitted, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = fitted.save(tmp_path / "new.safetensors")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    params = json.loads(metadata["params"])
    del params["search"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(path), old, metadata={**metadata, "params": json.dumps(params)})
    assert PatchCore.load(old).search == "exact"


@pytest.mark.parametrize("block", [1, 3])
def test_scoring_blocks_do_not_change_the_answer(fitted, textures, monkeypatch, block):
    """Every scoring path (score_images, score_embedded, score_neighbors, patch_scores) cuts the test
    images into blocks of SCORE_BLOCK across the extractor's batches: image scores and patch scores
    equal scoring each image on its own, bit for bit (exact distances, row by row)."""
    import patchcore_kit.base as base

    test = textures["test"]
    maps = fitted._extractor().layer_maps(test)

    class SameMaps:  # every path reads these maps, in batches of 2 (another backbone run may round differently)
        def iter_layer_maps(self, images, desc=""):
            return iter([[m[:2] for m in maps], [m[2:] for m in maps]])

    monkeypatch.setattr(fitted, "_extractor", SameMaps)
    alone = [fitted._score_maps([m[i : i + 1] for m in maps]) for i in range(len(test))]
    monkeypatch.setattr(base, "SCORE_BLOCK", block)
    scored = fitted.score_images(test)
    np.testing.assert_array_equal(scored.scores, np.concatenate([s for s, _ in alone]))
    grids = torch.cat([g for _, g in alone])
    assert torch.equal(fitted.patch_scores(test), grids)
    np.testing.assert_allclose(scored.maps, upsample_and_smooth(grids, fitted.image_size), rtol=1e-6)
    again = fitted.score_embedded(fitted.embed_images(test))
    np.testing.assert_array_equal(again.scores, scored.scores)
    np.testing.assert_array_equal(again.maps, scored.maps)
    s_star, _, maps = fitted.score_neighbors(test)
    np.testing.assert_array_equal(s_star, grids.flatten(1).amax(1).double().numpy())
    np.testing.assert_array_equal(maps, scored.maps)
