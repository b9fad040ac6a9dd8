"""How much memory a run will need, estimated before it starts (microseconds, no tensors made).

A run's memory grows with the image size squared: ``--image-size 8000`` asks the backbone for
gigabytes of activations per image, and the anomaly maps of the test set for gigabytes more. The
command line compares :func:`estimate` with :func:`available_bytes` and refuses a run that will
not fit, with the estimate and the flag that overrides it, instead of letting the machine swap
or the kernel kill the process after minutes of work.

The figures are float32 sizes of the big arrays each stage holds at once, plus the backbone's
activations per image measured with ``ru_maxrss`` at 768 px (e.g. EfficientNet-Lite0: 105 floats
per input pixel for layer2+3). They are estimates: good to a small factor, which is all a
"will it fit" question needs.

>>> estimate(image_size=224, layers=["layer2", "layer3"], channels={"layer2": 40, "layer3": 112},
...          backbone="efficientnet_lite0", n_train=100, n_test=50)["total"] < 2**30
True
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

FLOAT = 4
#: Backbone activation floats per input pixel and image at the peak of a forward pass (measured
#: with ru_maxrss at 768 px; the wide and ResNeXt nets scaled from ResNet-50 by their widths).
ACTIVATIONS_PER_PIXEL = {
    "efficientnet_lite0": 110,
    "efficientnet_lite2": 120,
    "resnet18": 40,
    "resnet34": 40,
    "resnet50": 80,
    "resnet101": 80,
    "resnet152": 80,
    "wide_resnet50_2": 140,
    "wide_resnet101_2": 140,
    "resnext50_32x4d": 110,
    "resnext101_32x8d": 160,
}
STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
#: torch, the backbone's weights and the rest of the process.
BASE = 600 * 2**20
#: Pixel metrics sort every test pixel: score and label copies, float64 and int64 (about 8 of them).
METRIC_BYTES_PER_PIXEL = 64


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


def estimate(
    image_size,
    layers: Sequence[str],
    channels: dict[str, int],
    backbone: str,
    n_train: int = 0,
    n_test: int = 0,
    batch_size: int = 8,
    target_dim: int | None = None,
    coreset_ratio: float = 0.1,
    sampler: str = "greedy",
    projection_dim: int | None = 128,
    pixel_metrics: bool = False,
    bank_rows: int | None = None,
    aggregation: str = "mean",
    patch_size: int = 3,
) -> dict[str, int]:
    """Bytes each stage needs at its peak, and ``"total"`` (the largest stage plus the process itself).

    ``n_train`` images are fitted on (0: scoring a saved model whose bank has ``bank_rows`` rows),
    ``n_test`` scored, keeping one anomaly map each; ``pixel_metrics`` adds the sorting of every
    test pixel that pixel AUROC and AUPRO do.
    """
    h, w = _hw(image_size)
    pixels = h * w
    first = STRIDES[layers[0]]
    grid = math.ceil(h / first) * math.ceil(w / first)
    widths = sum(channels[layer] for layer in layers)
    if aggregation == "unfold":  # every p x p neighbourhood kept whole, then pooled (1024 by default)
        depth, widths = target_dim or 1024, widths * patch_size**2
    else:
        depth = target_dim or widths
    batch = max(1, min(batch_size, max(n_train, n_test, 1)))
    backbone_bytes = batch * pixels * FLOAT * (3 + ACTIVATIONS_PER_PIXEL.get(backbone, 160))
    # each batch's stage maps upsampled to the first grid and concatenated, next to the activations
    embed_bytes = batch * grid * (widths + depth) * FLOAT
    patches = n_train * grid
    if n_train:
        bank = (
            patches
            if sampler == "none"
            else (int(coreset_ratio) if coreset_ratio > 1 else math.ceil(coreset_ratio * patches))
        )
        projection = patches * (projection_dim or depth) * FLOAT if sampler == "greedy" else 0
        fit = patches * depth * FLOAT + projection + patches * FLOAT * 2 + bank * depth * FLOAT
    else:
        bank, fit = bank_rows or 0, 0
    maps = n_test * pixels * (FLOAT + (METRIC_BYTES_PER_PIXEL if pixel_metrics else 0))
    score = bank * depth * FLOAT + maps + 64 * 2**20  # the neighbour search works in 64 MiB tiles
    parts = {
        "backbone activations": backbone_bytes + embed_bytes,
        "memory bank and coreset": fit,
        "anomaly maps and metrics": score,
    }
    parts["total"] = BASE + max(parts["backbone activations"] + fit, parts["backbone activations"] + score)
    return parts


def available_bytes() -> int:
    """Memory the machine can give a new process now: ``MemAvailable`` (Linux), else free pages."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no way to tell (e.g. Windows): do not refuse
        return 2**62


def parse_size(text: str) -> int:
    """``"16G"``, ``"512M"``, ``"2.5GiB"``, ``"1000000"`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2) or "_"))


def format_size(n: int) -> str:
    """Bytes as text: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
