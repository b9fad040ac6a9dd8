"""Numbers reported in the PatchCore paper, kept apart from the code that draws or compares them."""

from __future__ import annotations

__all__ = ["PAPER_MVTEC_REFERENCE"]

#: The PatchCore paper's full-data results on MVTec AD (class averages, WideResNet-50 features):
#: Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022, Table 1 (image
#: AUROC: SPADE 85.5, PaDiM 95.3, PatchCore-10% 99.0; PatchCore-25% reaches 99.1, and PaDiM with
#: its task-selected EfficientNet-B5 backbone 97.9) and Table 2 (pixel AUROC / PRO: SPADE 96.0 /
#: 91.7, PaDiM 97.5 / 92.1, PatchCore-10% 98.1 / 93.5). Fractions, like the sweep's results.
PAPER_MVTEC_REFERENCE = {
    "patchcore": {"image_auroc": 0.990, "pixel_auroc": 0.981, "aupro": 0.935},
    "padim": {"image_auroc": 0.953, "pixel_auroc": 0.975, "aupro": 0.921},
    "spade": {"image_auroc": 0.855, "pixel_auroc": 0.960, "aupro": 0.917},
}
