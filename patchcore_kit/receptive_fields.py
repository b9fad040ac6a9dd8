"""Receptive fields measured by backpropagation: which input pixels move a feature map's centre.

Drawn by :func:`patchcore_kit.viz.plot_receptive_fields`; kept here because it runs the backbone
(forward and backward passes), and the figure functions compute nothing expensive.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["receptive_field_maps"]


def receptive_field_maps(backbone, image: torch.Tensor, layers) -> dict[str, np.ndarray]:
    """How strongly each input pixel moves the feature at the centre of each stage's map.

    ``image`` is one normalised image ``(1, 3, H, W)``. For each layer: the absolute gradient of
    the sum of the centre position's channels with respect to the input, summed over RGB, as
    ``(H, W)``. Its non-zero support lies *within* the theoretical receptive field and can be
    smaller (a ReLU that is off or a zero weight gives zero gradient inside the field), so it is a
    lower bound on the field; where the weight concentrates is the *effective* receptive field
    (Luo et al., NeurIPS 2016). One backward pass per layer.
    """
    fields = {}
    for layer in layers:
        x = image.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = backbone.stem(x)
            for name, stage in backbone.stages.items():
                out = stage(out)
                if name == layer:
                    break
            cy, cx = out.shape[2] // 2, out.shape[3] // 2
            out[0, :, cy, cx].sum().backward()
        fields[layer] = x.grad[0].abs().sum(0).numpy()
    return fields
