"""A built-in demo dataset that needs no download: real textures with synthetic defects.

Four rooms, read in this order:

* :mod:`~patchcore_kit.data.demo.tiles` — nominal tiles cut from scikit-image's texture photographs
  (brick, grass, gravel, a stained tissue section); train and test tiles come from disjoint cells;
* :mod:`~patchcore_kit.data.demo.noise` — Perlin noise, the smooth randomness the painters use;
* :mod:`~patchcore_kit.data.demo.painters` — six defects painted onto held-out test tiles by pure
  functions ``(tile, rng) -> (defected, mask)`` collected in :data:`DEFECTS`; each changes the
  tile only inside its mask, so the mask is exactly the ground truth;
* :mod:`~patchcore_kit.data.demo.build` — :func:`build_demo_dataset` writes it all in the MVTec AD
  layout (read with :func:`patchcore_kit.data.load_mvtec`), reused while its manifest matches.

Everything follows from ``seed``: the same seed gives byte-identical PNG files.

Example:
    >>> import numpy as np
    >>> from patchcore_kit.data.demo import build_demo_dataset, DEFECTS, random_tile, texture_image
    >>> root = build_demo_dataset("data/demo", categories=("brick",), progress=False)  # doctest: +SKIP
    >>> rng = np.random.default_rng(0)
    >>> tile = random_tile(texture_image("grass"), rng, image_size=96, region="test")
    >>> defected, mask = DEFECTS["scratch"](tile, rng)
    >>> defected.shape, int(mask.sum()) > 0
    ((96, 96, 3), True)
"""

from __future__ import annotations

from ...paths import default_data_dir, default_demo_root
from .build import GENERATOR_VERSION, MANIFEST_NAME, build_demo_dataset
from .noise import fractal_noise, perlin_noise
from .painters import (
    DEFECT_TYPES,
    DEFECTS,
    add_color_shift,
    add_hole,
    add_missing_chunk,
    add_perlin_patch,
    add_scratch,
    add_stain,
)
from .tiles import DEMO_CATEGORIES, GAP, GRID, random_tile, region_cells, texture_image, tile_placement

__all__ = [
    "DEFECTS",
    "DEFECT_TYPES",
    "DEMO_CATEGORIES",
    "GAP",
    "GENERATOR_VERSION",
    "GRID",
    "MANIFEST_NAME",
    "add_color_shift",
    "add_hole",
    "add_missing_chunk",
    "add_perlin_patch",
    "add_scratch",
    "add_stain",
    "build_demo_dataset",
    "default_data_dir",
    "default_demo_root",
    "fractal_noise",
    "perlin_noise",
    "random_tile",
    "region_cells",
    "texture_image",
    "tile_placement",
]
