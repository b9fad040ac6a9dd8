"""Nominal demo tiles: random crops of texture photographs, train and test from disjoint cells.

The nominal images are tiles cut from texture photographs that ship with scikit-image (brick,
grass, gravel and a stained tissue section). Tiles are random crops with mild augmentation (scale,
small rotation, flips, brightness), so no two are alike but all stay in-distribution. Each
photograph is cut like a chessboard by interleaved vertical and horizontal stripes
(:data:`GRID` x :data:`GRID` cells, :data:`GAP` pixels apart): training tiles come from the
"white" cells, test tiles from the "black" ones. A tile lies wholly inside one cell, so no test
tile shares a pixel with any training tile (the test set is texture the model has never seen, as
with a real held-out object), while both sets still see every side of the photograph: a
photograph that changes from left to right (the tissue section does) does not put one kind of
texture in training and another in the test set.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skimage_data

from ...errors import InputError

__all__ = ["DEMO_CATEGORIES", "GAP", "GRID", "random_tile", "region_cells", "texture_image", "tile_placement"]

# category -> (scikit-image loader, colour for black, colour for white, source and licence).
# The grey photographs get a fixed two-colour tint so that a colour-shift defect has a colour to
# shift; the texture itself is the photograph's. None keeps the photograph's own colours.
_TEXTURES = {
    "brick": ("brick", (72, 30, 22), (242, 204, 174), "skimage.data.brick (CC0Textures Bricks25, CC0)"),
    "grass": ("grass", (18, 40, 10), (208, 232, 132), "skimage.data.grass (DeviantArt linolafett, CC0)"),
    "gravel": ("gravel", (40, 37, 34), (232, 224, 210), "skimage.data.gravel (CC0Textures Gravel04, CC0)"),
    "tissue": ("immunohistochemistry", None, None, "skimage.data.immunohistochemistry (CMMI, no known restrictions)"),
}
DEMO_CATEGORIES: tuple[str, ...] = tuple(_TEXTURES)

GRID = 3  # the photograph is cut into GRID x GRID cells; train and test cells alternate like a chessboard
GAP = 10  # pixels between neighbouring cells: no crop reaches into them, so train and test never touch
# A tile covers this fraction of the photograph's short side (before scale jitter): small enough that
# the largest tile (scaled up and rotated) still fits a cell of a 512-pixel photograph with room to move.
_CROP_FRACTION = 0.22
_SCALE_JITTER = 0.10
_MAX_ROTATION_DEGREES = 8.0
_BRIGHTNESS_JITTER = 0.08


@functools.cache
def texture_image(category: str) -> np.ndarray:
    """The full photograph of a demo category as uint8 RGB ``(H, W, 3)`` (read-only, cached)."""
    if category not in _TEXTURES:
        raise InputError(f"{category!r}: unknown demo category; choose from {', '.join(DEMO_CATEGORIES)}")
    loader, dark, light, _ = _TEXTURES[category]
    photo = getattr(skimage_data, loader)()
    if photo.ndim == 2:
        grey = photo.astype(np.float64)[..., None] / 255.0
        dark_rgb, light_rgb = np.asarray(dark, np.float64), np.asarray(light, np.float64)
        photo = np.round(dark_rgb + grey * (light_rgb - dark_rgb)).astype(np.uint8)
    photo = np.ascontiguousarray(photo[..., :3])
    photo.flags.writeable = False  # shared by every call: nobody may paint on it
    return photo


def region_cells(shape: tuple[int, ...], region: str) -> list[tuple[float, float, float, float]]:
    """The cells of a photograph of ``shape`` that tiles of ``region`` are cut from.

    Each cell is ``(top, bottom, left, right)`` in pixel coordinates, inclusive: a crop may sample
    anywhere from ``top`` to ``bottom`` and ``left`` to ``right``, and bilinear sampling never
    reaches beyond. The photograph is divided by ``GRID - 1`` vertical and as many horizontal
    stripes :data:`GAP` pixels wide into ``GRID x GRID`` cells; ``"train"`` gets the cells whose
    row and column add up to an even number, ``"test"`` the others. Train and test cells are
    therefore disjoint and at least :data:`GAP` pixels apart.

    Example:
        >>> len(region_cells((512, 512), "train")), len(region_cells((512, 512), "test"))
        (5, 4)
        >>> region_cells((512, 512), "test")[0]
        (0.0, 165.0, 176.0, 335.0)
    """
    if region not in ("train", "test"):
        raise ValueError(f"region must be 'train' or 'test', not {region!r}")

    def spans(length: int) -> list[tuple[float, float]]:
        # Cell k covers [k * length / GRID, (k + 1) * length / GRID), less half the gap on inner sides.
        edges = [int(round(k * length / GRID)) for k in range(GRID + 1)]
        low_gap, high_gap = GAP // 2, GAP - GAP // 2
        return [
            (float(edges[k] + (low_gap if k > 0 else 0)), float(edges[k + 1] - 1 - (high_gap if k < GRID - 1 else 0)))
            for k in range(GRID)
        ]

    parity = 0 if region == "train" else 1
    rows, cols = spans(int(shape[0])), spans(int(shape[1]))
    return [
        (top, bottom, left, right)
        for i, (top, bottom) in enumerate(rows)
        for j, (left, right) in enumerate(cols)
        if (i + j) % 2 == parity
    ]


def tile_placement(
    shape: tuple[int, ...], rng: np.random.Generator, region: str = "train"
) -> tuple[float, float, float, float, float]:
    """Where a random tile of ``region`` is cut: ``(centre_y, centre_x, side, angle, half_extent)``.

    ``side`` is the edge of the square in photograph pixels, ``angle`` its rotation in radians and
    ``half_extent`` half the side of the axis-aligned box around the rotated square: every pixel
    the crop samples lies within ``half_extent`` of the centre along both axes, and that box lies
    inside one of :func:`region_cells` (unless the photograph is too small for a tile per cell).
    Draws from ``rng`` in a fixed order; :func:`random_tile` continues with the same ``rng``.
    """
    height, width = int(shape[0]), int(shape[1])
    cells = region_cells(shape, region)
    top, bottom, left, right = cells[int(rng.integers(len(cells)))]
    side = _CROP_FRACTION * min(height, width) * rng.uniform(1 - _SCALE_JITTER, 1 + _SCALE_JITTER)
    angle = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES))
    half_extent = side / 2 * (abs(np.cos(angle)) + abs(np.sin(angle)))  # of the rotated square
    centre_x = _uniform_within(rng, left + half_extent, right - half_extent)
    centre_y = _uniform_within(rng, top + half_extent, bottom - half_extent)
    return centre_y, centre_x, side, angle, half_extent


def random_tile(
    texture: np.ndarray, rng: np.random.Generator, image_size: int = 256, region: str = "train"
) -> np.ndarray:
    """A random, mildly augmented square crop of ``texture`` as uint8 RGB ``(image_size, image_size, 3)``.

    ``region="train"`` crops from the training cells of :func:`region_cells`, ``"test"`` from the
    test cells, so test tiles show texture no training tile contains.

    Example:
        >>> tile = random_tile(texture_image("brick"), np.random.default_rng(0), 64)
        >>> tile.shape, tile.dtype
        ((64, 64, 3), dtype('uint8'))
    """
    centre_y, centre_x, side, angle, _ = tile_placement(texture.shape, rng, region)

    # Sample the rotated square at the photograph's own resolution, then resize with antialiasing.
    n = max(int(round(side)), 2)
    offsets = (np.arange(n) - (n - 1) / 2) * (side / n)
    along_y, along_x = np.meshgrid(offsets, offsets, indexing="ij")
    rows = centre_y + along_y * np.cos(angle) - along_x * np.sin(angle)
    cols = centre_x + along_y * np.sin(angle) + along_x * np.cos(angle)
    channels = [texture[..., c].astype(np.float64) for c in range(3)]
    crop = np.stack([ndimage.map_coordinates(c, [rows, cols], order=1, mode="nearest") for c in channels], -1)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    crop = crop * rng.uniform(1 - _BRIGHTNESS_JITTER, 1 + _BRIGHTNESS_JITTER)
    tile = Image.fromarray(_to_uint8(crop)).resize((image_size, image_size), Image.LANCZOS)
    return np.asarray(tile)


def _uniform_within(rng: np.random.Generator, low: float, high: float) -> float:
    """Uniform in [low, high]; the midpoint when the range is empty (a photograph too small)."""
    value = rng.uniform(0.0, 1.0)
    return (low + high) / 2 if high <= low else low + value * (high - low)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.round(array), 0, 255).astype(np.uint8)
