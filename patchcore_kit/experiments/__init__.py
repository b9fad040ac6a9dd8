"""The sample-efficiency sweep: how good is each method with 1, 2, 5, ... 50 training images?

For every number of shots and every seed, ``Split.with_shots(shots, seed)`` draws the training
images; every method is fitted on them and scored on the whole test set (image AUROC, pixel AUROC,
AUPRO, fit and inference seconds). This is the PatchCore paper's low-shot study (Sec. 4.5).

Why a sweep costs little more than one pass of the backbone over the images: PatchCore, PaDiM and
SPADE read the *same* backbone stage maps, so the sweep first runs the backbone once over every
image it will need (the test set and the union of all training draws) and stores the maps in the
:class:`~patchcore_kit.features.FeatureExtractor` cache. Every fit and every scoring after that
reads the cache, and the backbone is never loaded again. The same cache serves a second sweep.

Each finished row is appended to ``results_path`` at once; a sweep that is interrupted and started
again skips the rows already there (and refuses a results file made with other settings).

Each baseline reads the stages its own paper sets (``baseline_stages="paper"``: PaDiM layer1+2+3,
SPADE and 1-NN pixels from layer1+2+3 and the pooled layer4), or PatchCore's (``"shared"``, the
kit's earlier setting). The extraction pass runs the backbone once over the union of the stages
all methods need; the cache keeps them in one entry per image. SPADE's k=1 pixel search, the
sweep's dominant cost, is shared between rows: the distance of each test position to its nearest
position in each training image is computed once per (test image, training image) pair and serves
every shot count and seed that picks that image (exactly; :class:`SpadePairTable`).

``shots`` may contain ``"all"``: the whole training pool, stored as its real count with
``full=True``. :func:`run_sweep` with ``category="all"`` sweeps every category of an MVTec-layout
dataset, and :func:`category_summary` averages per shot count over categories as the paper's
Fig. 6 averages MVTec AD's 15; :func:`check_claims` tests the paper's §C.1 statements on it.

The package, one job per module:

* :mod:`.grid` — the methods, columns and shot counts; each method's stages; the grid's checks;
* :mod:`.cell` — one cell (fit, score, measure) and the one extraction pass;
* :mod:`.spade_table` — SPADE's rows from one shared table of nearest distances;
* :mod:`.rows` — results rows appended as they finish, read back to resume; the JSON summary;
* :mod:`.sweep` — :func:`sample_efficiency`, the sweep of one dataset;
* :mod:`.summary` — averages over seeds and over categories;
* :mod:`.command` — :func:`run_sweep`, the ``patchcore-kit sweep`` command.

>>> table = sample_efficiency(load_dataset("../shared/data/mtd", "mtd"), shots=(1, 5, 20),
...                           cache_dir="runs/cache", results_path="runs/sweep/results.csv")  # doctest: +SKIP
>>> table.groupby(["method", "shots"]).image_auroc.mean()                                      # doctest: +SKIP
"""

from .cell import evaluate_once, extraction_pass
from .command import run_sweep
from .grid import (
    ALL,
    BASELINE_STAGES,
    COLUMNS,
    DEFAULT_SHOTS,
    METHODS,
    METRICS,
    SHARED_PADIM_FEATURES,
    method_stages,
    resolve_shots,
    sweep_categories,
)
from .spade_table import SPADE_TABLE_GB, SpadePairTable
from .summary import category_summary, summarize
from .sweep import sample_efficiency

__all__ = [
    "ALL",
    "BASELINE_STAGES",
    "COLUMNS",
    "DEFAULT_SHOTS",
    "METHODS",
    "METRICS",
    "SHARED_PADIM_FEATURES",
    "SPADE_TABLE_GB",
    "SpadePairTable",
    "category_summary",
    "evaluate_once",
    "extraction_pass",
    "method_stages",
    "resolve_shots",
    "run_sweep",
    "sample_efficiency",
    "summarize",
    "sweep_categories",
]
