"""What the demo report runs and what it keeps of each category: settings, sizes, one result per category."""

from __future__ import annotations

from dataclasses import dataclass

from ..backbones import DEFAULT_LAYERS
from ..evaluate import Evaluation
from ..patchcore import PatchCore

__all__ = ["DEMO_MODEL", "FAST", "FULL", "CategoryResult", "DemoSize"]

#: The PatchCore settings of the demo, the same for every category. A 1 % coreset keeps the fit
#: to seconds on a laptop CPU, and on this data it scores as well as the paper's 10 % or better
#: (image AUROC 1 % / 10 %: grass 0.86 / 0.87, tissue 0.91 / 0.75; demo data generator version 2).
#: Selecting 10 % took about 7 times as long (tissue 36 s / 250 s on a busy 2-core machine).
DEMO_MODEL = {"layers": DEFAULT_LAYERS, "coreset_ratio": 0.01, "num_neighbors": 9}


@dataclass(frozen=True)
class DemoSize:
    """How much data the demo builds and shows."""

    categories: tuple[str, ...]
    n_train: int  # training tiles per category
    n_test_good: int  # nominal test tiles per category
    n_test_per_defect: int  # test tiles per defect type
    data_size: int  # pixels of the generated tiles
    image_size: int  # pixels the model sees
    shots: tuple[int, ...]  # training-set sizes of the sample-efficiency curve (plus all)
    gallery: int  # images per defect type in the galleries

    def build_sizes(self) -> dict[str, int]:
        """The sizes of the demo build, as :func:`~patchcore_kit.paths.demo_data_dir` names folders by."""
        return {
            "image_size": self.data_size,
            "n_train": self.n_train,
            "n_test_good": self.n_test_good,
            "n_test_per_defect": self.n_test_per_defect,
        }


FULL = DemoSize(("brick", "grass", "gravel", "tissue"), 40, 10, 4, 256, 224, (1, 2, 5, 10), 4)
FAST = DemoSize(("brick", "tissue"), 6, 3, 1, 64, 64, (1, 2), 1)


@dataclass
class CategoryResult:
    """One category's fitted model and evaluation."""

    name: str
    model: PatchCore
    evaluation: Evaluation

    @property
    def fit_s(self) -> float:
        seconds = self.model.fit_seconds_
        return seconds["fit_total"] + seconds.get("calibration", 0.0)

    def row(self) -> dict:
        """The metrics-table row: the three metrics, sizes, seconds and what ``predict`` does."""
        metrics, labels = self.evaluation.metrics, self.evaluation.labels
        flagged = self.evaluation.scores > self.model.threshold_
        return {
            "category": self.name,
            "image_auroc": metrics["image_auroc"],
            "pixel_auroc": metrics["pixel_auroc"],
            "aupro": metrics["aupro"],
            "n_train": self.model.n_train_,
            "n_test": len(labels),
            "fit_s": self.fit_s,
            "infer_s": self.evaluation.seconds["infer"],
            "threshold": self.model.threshold_,
            "caught": float(flagged[labels == 1].mean()),  # anomalous test images predict() flags
            "false_alarms": float(flagged[labels == 0].mean()),  # nominal test images it flags
        }
