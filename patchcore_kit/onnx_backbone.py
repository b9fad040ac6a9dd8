"""The fused backbone run by ONNX Runtime on the CPU: the same stages, about twice as fast as torch.

PyTorch's eager CPU forward of the fused copy (:mod:`patchcore_kit.fuse`) still spends about a
third of its time outside the convolutions: ReLU6 as a separate pass over every expansion map, the
stride-2 convolutions' "same" padding copies, the residual additions (profile in
docs/benchmarks.md). ONNX Runtime folds the ReLU6 (``Clip``) and the padding into the convolutions
and runs them in its blocked NCHWc layout, which takes the lite0 forward from about 7 × its FLOP
bound to about 3 × on the kit's 2-core test machine.

Optional: ``pip install patchcore-kit[onnx]`` (``onnxruntime``, ``onnx``), then
``load_backbone(name, fuse=True, runtime="onnxruntime")`` or ``PATCHCORE_KIT_BACKBONE_RUNTIME=onnxruntime``
(what :class:`~patchcore_kit.features.FeatureExtractor` then runs). The stages are the fused copy's,
exported with ``torch.onnx.export`` once per process, stage list and image size (a few seconds);
the maps equal the unfused backbone's within float rounding (tested). CPU only.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .backbones import DEFAULT_LAYERS, Backbone
from .errors import InputError

try:  # optional: the onnx extra
    import onnx  # noqa: F401  (torch.onnx.export writes through it)
    import onnxruntime
except ImportError:
    onnxruntime = None

INSTALL_HINT = "pip install 'patchcore-kit[onnx]' (onnxruntime and onnx)"


def onnxruntime_available() -> bool:
    return onnxruntime is not None


class _Stages(nn.Module):
    """The stages up to the deepest wanted one, returning the wanted maps: what gets exported."""

    def __init__(self, backbone: Backbone, layers: Sequence[str]):
        super().__init__()
        self.stem, self.stages, self.layers = backbone.stem, backbone.stages, list(layers)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, maps = self.stem(images), {}
        for name, stage in self.stages.items():
            x = maps[name] = stage(x)
            if name == self.layers[-1]:
                break
        return tuple(maps[layer] for layer in self.layers)


def export_stages(backbone: Backbone, layers: Sequence[str], height: int, width: int) -> bytes:
    """The ONNX model of ``backbone``'s stages up to ``layers[-1]`` for images of this size, any batch.

    The size is fixed: the stride-2 convolutions' "same" padding depends on it.
    """
    # a copy: .to() would change the layout of ``backbone``'s own weights
    model = copy.deepcopy(_Stages(backbone, layers)).to(memory_format=torch.contiguous_format).eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns that the padding amounts become constants: intended (one size per export)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, height, width),),
            buffer,
            input_names=["images"],
            output_names=list(layers),
            dynamic_axes={"images": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


class OnnxBackbone(Backbone):
    """A fused :class:`~patchcore_kit.backbones.Backbone` whose forward runs in ONNX Runtime.

    Holds the fused torch copy (its modules are what gets exported); one inference session per
    (stages, image size), made on first use with ``torch.get_num_threads()`` threads, so the kit's
    thread setting applies. Sessions are not pickled: a copy builds its own.
    """

    def __init__(self, fused: Backbone):
        if not getattr(fused, "fused", False):
            raise ValueError("OnnxBackbone exports the fused inference copy (patchcore_kit.fuse.fuse_backbone)")
        if not onnxruntime_available():
            raise ImportError(f"the onnxruntime backbone needs onnxruntime and onnx: {INSTALL_HINT}")
        super().__init__(fused.name, fused.stem, dict(fused.stages), fused.channels)
        self.fused = True
        self.runtime = "onnxruntime"
        self._sessions = {}

    def __getstate__(self):
        return {**self.__dict__, "_sessions": {}}

    def session(self, layers: Sequence[str], height: int, width: int):
        key = (tuple(layers), height, width, torch.get_num_threads())
        if key not in self._sessions:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            # No busy-waiting between operators: on a shared machine a spinning thread takes CPU
            # from everyone (and measured no faster here under load).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            model = export_stages(self, layers, height, width)
            self._sessions[key] = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def forward(self, images: torch.Tensor, layers: Sequence[str] = DEFAULT_LAYERS) -> list[torch.Tensor]:
        wanted = self.check_layers(layers)
        if images.device.type != "cpu":
            raise InputError(
                f"the onnxruntime backbone runs on the CPU only (images are on {images.device}); "
                f"use runtime='torch' for other devices"
            )
        height, width = images.shape[-2:]
        session = self.session(wanted, height, width)
        pixels = np.ascontiguousarray(images.detach().to(torch.float32).numpy())
        maps = dict(zip(wanted, session.run(None, {"images": pixels})))
        return [torch.from_numpy(maps[layer]) for layer in layers]
