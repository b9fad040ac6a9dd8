"""An inference-only copy of a backbone: batch norm folded into the convolutions, static padding.

PatchCore never trains its backbone, so every batch norm is a fixed per-channel affine map
``y = (x - mean) / sqrt(var + eps) * gamma + beta`` applied right after a convolution. It can be
folded into that convolution once, at load time (:func:`fold_batch_norm`): the weights are scaled
per output channel and the shift becomes a bias. That removes one full pass over every feature map
per convolution, which on a CPU costs about as much as the depthwise convolution itself.

EfficientNet-Lite (``efficientnet-lite-pytorch``) also pads every convolution TensorFlow's "same"
way, computing the amounts and copying the map with ``F.pad`` on every call. For a stride-1
convolution with an odd kernel that padding is symmetric, ``(k - 1) / 2`` on each side, whatever
the input size, so it becomes the convolution's own zero padding (no copy). Only a stride-2
convolution's padding depends on the input's size (it is lopsided for even sizes); the few of those
get a kernel one tap larger with a zero first row or column, which turns the lopsided padding into
a symmetric one (:class:`SamePadConv`).

:func:`fuse_backbone` returns a new :class:`~patchcore_kit.backbones.Backbone` with the same stages;
its weights are laid out channels-last, the layout the CPU convolution kernels (oneDNN) prefer, and
its forward runs them so. Its feature maps equal the unfused backbone's within float rounding
(tested for efficientnet_lite0, efficientnet_lite2 and resnet18).

>>> from patchcore_kit.backbones import load_backbone
>>> fast = fuse_backbone(load_backbone("efficientnet_lite0"))
>>> [tuple(m.shape) for m in fast(torch.zeros(1, 3, 224, 224))]
[(1, 40, 28, 28), (1, 112, 14, 14)]
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import OFFLINE_BACKBONES, Backbone


def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution that computes ``norm(conv(x))`` (eval-mode batch norm).

    Folded in float64 and rounded once to float32, so the fused weights carry no more rounding
    than the original ones.
    """
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    bias = (bias - norm.running_mean.double()) * scale + norm.bias.double()
    return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)


def _fused_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d | None, padding: int = 0) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` with ``norm`` folded in and the given symmetric padding."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        padding,
        conv.dilation,
        conv.groups,
        bias=True,
    )
    if norm is None:
        weight = conv.weight.detach()
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    else:
        weight, bias = fold_batch_norm(conv, norm)
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused


class SamePadConv(nn.Module):
    """TensorFlow "same" padding, batch norm folded in, then an optional activation; no padding copy.

    Stride 1: the padding is symmetric and fixed, so it is the convolution's own. Stride 2 (only 5
    such convolutions in EfficientNet-Lite): the amounts depend on the input's size, and for an
    even size they are lopsided, one more after than before (``(p, p + 1)``). A kernel one tap
    larger whose first row (column) is zero, padded ``p + 1`` on both sides, reads exactly the same
    pixels with the same weights: the lopsided padding becomes the convolution's own too, with no
    ``F.pad`` copy (and an exported ONNX graph keeps its convolutions in one layout). The zero taps
    add exact zeros.
    """

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d | None, activation: nn.Module | None):
        super().__init__()
        kh, kw = conv.kernel_size
        stride = tuple(conv.stride) if len(conv.stride) == 2 else (conv.stride[0],) * 2
        if tuple(conv.dilation) != (1, 1) or kh != kw or kh % 2 == 0:
            raise ValueError(f"cannot fuse a {conv}: expected odd square kernels without dilation")
        self.kernel, self.stride_ = kh, stride
        self.static = stride == (1, 1)
        self.conv = _fused_conv(conv, norm, padding=(kh - 1) // 2 if self.static else 0)
        if not self.static:  # the kernel widened by a zero first row / column / both, for lopsided padding
            weight = self.conv.weight.detach()
            for rows, columns in ((1, 0), (0, 1), (1, 1)):
                widened = F.pad(weight, (columns, 0, rows, 0))
                self.register_buffer(f"weight_{rows}{columns}", widened)
        self.activation = activation

    def _padding(self, size: int, stride: int) -> tuple[int, int]:
        """(padding before, 1 if the padding after is one larger) along one axis, TensorFlow's "same"."""
        # int(): plain Python arithmetic even while torch.onnx traces the size (the amounts become
        # constants of the exported graph, which is made for one image size)
        size = int(size)
        total = max((-(-size // stride) - 1) * stride + self.kernel - size, 0)
        before, after = total // 2, total - total // 2
        return (before + 1, 1) if after > before else (before, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static:
            x = self.conv(x)
        else:
            (pad_h, rows), (pad_w, columns) = (
                self._padding(x.shape[-2], self.stride_[0]),
                self._padding(x.shape[-1], self.stride_[1]),
            )
            weight = getattr(self, f"weight_{rows}{columns}") if rows or columns else self.conv.weight
            x = F.conv2d(x, weight, self.conv.bias, self.stride_, (pad_h, pad_w), 1, self.conv.groups)
        return self.activation(x) if self.activation is not None else x


class FusedMBConv(nn.Module):
    """EfficientNet-Lite's MBConv block (no squeeze-excitation) with its three batch norms folded."""

    def __init__(self, block: nn.Module):
        super().__init__()
        args = block._block_args
        if block.has_se:
            raise ValueError("squeeze-excitation blocks are not fused (EfficientNet-Lite has none)")
        activation = _in_place(block._swish)  # ReLU6 in the Lite models
        self.expand = SamePadConv(block._expand_conv, block._bn0, activation) if args.expand_ratio != 1 else None
        self.depthwise = SamePadConv(block._depthwise_conv, block._bn1, activation)
        self.project = SamePadConv(block._project_conv, block._bn2, None)
        stride = args.stride if isinstance(args.stride, int) else args.stride[0]
        self.skip = bool(args.id_skip and stride == 1 and args.input_filters == args.output_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.skip else y


def _in_place(activation: nn.Module) -> nn.Module:
    """ReLU6 applied in place: the convolution's fresh output is overwritten instead of copied."""
    if isinstance(activation, nn.ReLU6):
        return nn.ReLU6(inplace=True)
    return activation


def _fuse_efficientnet(stem: nn.Sequential, stages: nn.ModuleDict) -> tuple[nn.Module, dict[str, nn.Module]]:
    conv, norm, activation = stem
    fused_stem = SamePadConv(conv, norm, _in_place(activation))
    fused_stages = {name: nn.Sequential(*[FusedMBConv(block) for block in stage]) for name, stage in stages.items()}
    return fused_stem, fused_stages


def _fold_in_place(module: nn.Module) -> None:
    """Fold every (conv, batch norm) pair of a torchvision ResNet into the conv; the norm becomes Identity."""
    for child in list(module.modules()):  # a list: the loop replaces children
        for conv_name, norm_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            conv, norm = getattr(child, conv_name, None), getattr(child, norm_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(child, conv_name, _fused_conv(conv, norm, padding=conv.padding))
                setattr(child, norm_name, nn.Identity())
        downsample = getattr(child, "downsample", None)
        if isinstance(downsample, nn.Sequential) and len(downsample) == 2:
            conv, norm = downsample
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                child.downsample = nn.Sequential(_fused_conv(conv, norm, padding=conv.padding))


def _fuse_resnet(stem: nn.Sequential, stages: nn.ModuleDict) -> tuple[nn.Module, dict[str, nn.Module]]:
    conv, norm, relu, pool = stem
    fused_stem = nn.Sequential(_fused_conv(conv, norm, padding=conv.padding), relu, pool)
    fused_stages = {name: copy.deepcopy(stage) for name, stage in stages.items()}
    for stage in fused_stages.values():
        _fold_in_place(stage)
    return fused_stem, fused_stages


#: Images per pass through the fused network on the CPU: a batch of the estimators' ``batch_size``
#: (8 by default) goes through four at a time, whose activations stay in the caches. Measured on
#: lite0 at 224 px, 2 threads, batches 2 / 4 / 8 alternating: batch 4 ran ~1.4x faster per image than
#: 8 (docs/benchmarks.md, "The forward batch"). The maps change only by float rounding.
CPU_FORWARD_BATCH = 4


def fuse_backbone(backbone: Backbone) -> Backbone:
    """A new, inference-only :class:`~patchcore_kit.backbones.Backbone`: batch norm folded, static
    padding, channels-last weights. ``backbone`` itself is left unchanged (the reference)."""
    if getattr(backbone, "fused", False):
        return backbone
    build = _fuse_efficientnet if backbone.name in OFFLINE_BACKBONES else _fuse_resnet
    stem, stages = build(backbone.stem, backbone.stages)
    fused = Backbone(backbone.name, stem, stages, backbone.channels)
    fused.fused = True
    fused.memory_format = torch.channels_last
    fused.cpu_forward_batch = CPU_FORWARD_BATCH
    return fused.to(memory_format=torch.channels_last)
