"""patchcore_kit: learn, explore and reproduce PatchCore (Roth et al., CVPR 2022).

>>> from patchcore_kit import PatchCore
>>> model = PatchCore(backbone="efficientnet_lite0", coreset_ratio=0.1)   # then .fit(paths)
"""

from .errors import InputError, WeightsUnavailableError
from .version import __version__

__all__ = ["PatchCore", "InputError", "WeightsUnavailableError", "load_settings", "tune", "__version__"]


def __getattr__(name):
    # The estimators are imported on first use, so `import patchcore_kit` (and the command line's
    # start-up, where Ctrl-C must stay one line) does not load torch.
    if name == "PatchCore":
        from .patchcore import PatchCore

        return PatchCore
    if name in ("PaDiM", "SPADE", "NearestImage"):
        from . import baselines

        return getattr(baselines, name)
    if name in ("tune", "load_settings"):  # imported on first use too: tuning pulls in the data loaders
        from . import tuning

        return getattr(tuning, name)
    raise AttributeError(f"module 'patchcore_kit' has no attribute {name!r}")
