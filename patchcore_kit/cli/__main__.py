"""``python -m patchcore_kit.cli``: the same as the ``patchcore-kit`` command."""

import sys

from . import main

sys.exit(main())
