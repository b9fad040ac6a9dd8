"""Patch features both ways (issue #10): the paper's mean and the official code's unfold, and the
border rules, checked against direct computations written out position by position."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from patchcore_kit import PatchCore
from patchcore_kit.features import (
    aggregate_local,
    border_ring,
    patch_embeddings,
    top_patch_on_border,
    unfold_neighbourhood,
)


def _maps(seed: int = 0, batch: int = 2):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 5, 8, 8, generator=generator), torch.randn(batch, 7, 4, 4, generator=generator)]


@pytest.mark.parametrize(
    "aggregation, border, depth",
    [
        ("mean", "valid", 12),
        ("mean", "zeros", 12),
        ("mean", "reflect", 12),
        ("unfold", "zeros", 1024),
        ("unfold", "reflect", 1024),
    ],
)
def test_shapes_of_both_aggregations(aggregation, border, depth):
    embeddings = patch_embeddings(_maps(), 3, aggregation=aggregation, border=border)
    assert embeddings.shape == (2, depth, 8, 8)
    assert torch.isfinite(embeddings).all()


def test_unfold_dimensions_follow_pretrain_and_target_dim():
    embeddings = patch_embeddings(_maps(), 3, target_dim=32, aggregation="unfold", border="zeros", pretrain_dim=64)
    assert embeddings.shape == (2, 32, 8, 8)


def _explicit_padding(fmap: torch.Tensor, border: str) -> torch.Tensor:
    return F.pad(fmap, (1, 1, 1, 1)) if border == "zeros" else F.pad(fmap, (1, 1, 1, 1), mode="reflect")


@pytest.mark.parametrize("aggregation", ["mean", "unfold"])
@pytest.mark.parametrize("border", ["zeros", "reflect"])
def test_a_border_patch_is_an_inner_patch_of_the_padded_map(aggregation, border):
    """With zeros or reflect, a border patch is built by the same 9-neighbour formula as an inner one:
    it equals the inner patch at the same place of the map padded by that rule beforehand."""
    fmap = _maps()[0]
    ours = patch_embeddings([fmap], 3, aggregation=aggregation, border=border)
    padded = patch_embeddings([_explicit_padding(fmap, border)], 3, aggregation=aggregation, border=border)
    torch.testing.assert_close(ours, padded[:, :, 1:-1, 1:-1])


def test_valid_border_builds_border_patches_unlike_inner_ones():
    """Today's rule averages fewer neighbours at the edge: its corner patch is not the zero-padded
    map's inner patch (what zeros gives), and has a larger spread on noise (4 values, not 9)."""
    fmap = torch.randn(4000, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    valid = aggregate_local(fmap, 3, border="valid")
    zeros = aggregate_local(fmap, 3, border="zeros")
    torch.testing.assert_close(valid[:, 0, 1, 1], zeros[:, 0, 1, 1])  # the centre sees all 9 either way
    assert valid[:, 0, 0, 0].std() == pytest.approx(1 / 2, rel=0.08)  # mean of 4 values
    assert zeros[:, 0, 0, 0].std() == pytest.approx(2 / 9, rel=0.08)  # 4 values of 9, rest zeros
    assert valid[:, 0, 1, 1].std() == pytest.approx(1 / 3, rel=0.08)  # inner patch: mean of 9


def _adaptive_pool(vector: np.ndarray, size: int) -> np.ndarray:
    """adaptive_avg_pool1d written out: output i averages input[floor(i L / n) : ceil((i+1) L / n)]."""
    length = len(vector)
    return np.array([vector[(i * length) // size : -((-(i + 1) * length) // size)].mean() for i in range(size)])


def test_unfold_path_against_a_direct_computation():
    """Position by position: the zero-padded 3x3xC neighbourhood in (channel, row, column) order,
    the deeper layer's neighbourhood vectors bilinearly resized to the first grid, each layer pooled
    to pretrain_dim, the concatenation pooled to target_dim."""
    layer2, layer3 = [m[:1] for m in _maps(seed=3)]
    pretrain_dim, target_dim = 40, 24
    ours = patch_embeddings([layer2, layer3], 3, target_dim, "unfold", "zeros", pretrain_dim)[0].numpy()

    def neighbourhoods(fmap: np.ndarray) -> np.ndarray:  # (C*9, H, W), written out
        c, h, w = fmap.shape
        padded = np.zeros((c, h + 2, w + 2), np.float32)
        padded[:, 1:-1, 1:-1] = fmap
        out = np.zeros((c * 9, h, w), np.float32)
        for y in range(h):
            for x in range(w):
                out[:, y, x] = padded[:, y : y + 3, x : x + 3].reshape(-1)  # channel, then row, then column
        return out

    n2 = neighbourhoods(layer2[0].numpy())
    n3 = neighbourhoods(layer3[0].numpy())
    n3 = F.interpolate(torch.from_numpy(n3)[None], size=(8, 8), mode="bilinear", align_corners=False)[0].numpy()
    for y, x in [(0, 0), (0, 5), (3, 4), (7, 7)]:
        joined = np.concatenate([_adaptive_pool(n2[:, y, x], pretrain_dim), _adaptive_pool(n3[:, y, x], pretrain_dim)])
        np.testing.assert_allclose(ours[:, y, x], _adaptive_pool(joined, target_dim), rtol=1e-5, atol=1e-6)


def test_unfold_neighbourhood_keeps_positions():
    fmap = torch.arange(9.0).reshape(1, 1, 3, 3)
    vectors = unfold_neighbourhood(fmap, 3, border="zeros")
    assert vectors[0, :, 1, 1].tolist() == list(range(9))  # the centre sees the whole map, in order
    assert vectors[0, :, 0, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 3, 4]


def test_unfold_refuses_the_valid_border():
    with pytest.raises(ValueError, match="border='zeros'"):
        patch_embeddings(_maps(), 3, aggregation="unfold", border="valid")
    with pytest.raises(ValueError, match="aggregation must be one of"):
        patch_embeddings(_maps(), 3, aggregation="median")


def test_reflect_on_a_map_thinner_than_the_radius_repeats_the_edge():
    fmap = torch.randn(1, 3, 1, 1)
    torch.testing.assert_close(aggregate_local(fmap, 3, border="reflect"), fmap)


def test_border_ring_and_the_top_patch_share():
    ring = border_ring((28, 28))
    assert ring.sum() == 28 * 28 - 26 * 26  # 108 of 784 patches, 14 %
    scores = torch.zeros(4, 28, 28)
    scores[0, 0, 5] = scores[1, 27, 27] = scores[2, 10, 10] = scores[3, 5, 0] = 1.0
    assert top_patch_on_border(scores) == 0.75


def test_patchcore_passes_the_aggregation_through(tmp_path):
    images = [np.full((64, 64, 3), 100 + 10 * i, np.uint8) for i in range(3)]
    model = PatchCore(
        image_size=64,
        aggregation="unfold",
        border="zeros",
        pretrain_dim=64,
        target_dim=48,
        coreset_ratio=0.5,
        calibrate=False,
    ).fit(images)
    assert model.memory_bank_.shape[1] == 48
    path = model.save(tmp_path / "m.safetensors")
    loaded = PatchCore.load(path)
    assert (loaded.aggregation, loaded.border, loaded.pretrain_dim) == ("unfold", "zeros", 64)
    np.testing.assert_allclose(loaded.decision_function(images), model.decision_function(images), rtol=1e-5)


def test_a_model_file_from_before_the_aggregation_parameters_loads_as_it_scored(tmp_path):
    """Files written before #10 carry no aggregation/border/pretrain_dim: they scored with the mean
    and the 'valid' border, and load that way."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    images = [np.full((64, 64, 3), 100 + 10 * i, np.uint8) for i in range(3)]
    model = PatchCore(image_size=64, border="valid", coreset_ratio=0.5, calibrate=False).fit(images)
    path = model.save(tmp_path / "new.safetensors")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    params = json.loads(metadata["params"])
    for name in ("aggregation", "border", "pretrain_dim"):
        del params[name]
    old = tmp_path / "old.safetensors"
    save_file(load_file(path), old, metadata={**metadata, "params": json.dumps(params)})
    loaded = PatchCore.load(old)
    assert (loaded.aggregation, loaded.border, loaded.pretrain_dim) == ("mean", "valid", None)
    np.testing.assert_allclose(loaded.decision_function(images), model.decision_function(images), rtol=1e-6)
