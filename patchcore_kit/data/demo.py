"""A built-in demo dataset that needs no download: real textures with synthetic defects.

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

Defects are painted onto held-out test tiles by small pure functions
``(tile, rng) -> (defected, mask)`` collected in :data:`DEFECTS`. Each changes the tile only
inside its mask, so the mask is exactly the ground truth. The result is written in the MVTec AD
layout and read with :func:`patchcore_kit.data.load_mvtec`::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png      (0 / 255)
    <root>/demo_manifest.json                                 (parameters: decides cache reuse)

Everything follows from ``seed``: the same seed gives byte-identical PNG files.

Example:
    >>> from patchcore_kit.data.demo import build_demo_dataset, DEFECTS, random_tile, texture_image
    >>> root = build_demo_dataset("data/demo", categories=("brick",), progress=False)  # doctest: +SKIP
    >>> rng = np.random.default_rng(0)
    >>> tile = random_tile(texture_image("grass"), rng, image_size=96, region="test")
    >>> defected, mask = DEFECTS["hole"](tile, rng)
    >>> defected.shape, mask.dtype, bool((defected[~mask] == tile[~mask]).all())
    ((96, 96, 3), dtype('bool'), True)
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color, data as skimage_data, draw
from tqdm.auto import tqdm

from ..errors import InputError

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

# Bump when the generated images change for the same parameters: old caches are then rebuilt.
# 1: train tiles from the left 64 % of a photograph, test tiles from the rest.
# 2: train and test tiles from the two colours of a chessboard of interleaved stripes.
GENERATOR_VERSION = 2
MANIFEST_NAME = "demo_manifest.json"
_GENERATOR = "patchcore_kit.data.demo"  # marks a folder as ours to replace

# category -> (scikit-image loader, colour for black, colour for white, source and licence).
# The grey photographs get a fixed two-colour tint so that a colour-shift defect has a colour to
# shift; the texture itself is the photograph's. None keeps the photograph's own colours.
_TEXTURES = {
    "brick": ("brick", (72, 30, 22), (242, 204, 174), "skimage.data.brick (CC0Textures Bricks25, CC0)"),
    "grass": ("grass", (18, 40, 10), (208, 232, 132), "skimage.data.grass (DeviantArt linolafett, CC0)"),
    "gravel": ("gravel", (40, 37, 34), (232, 224, 210), "skimage.data.gravel (CC0Textures Gravel04, CC0)"),
    "tissue": (
        "immunohistochemistry", None, None, "skimage.data.immunohistochemistry (CMMI, no known restrictions)"
    ),
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


# --------------------------------------------------------------------------------------------
# Nominal tiles
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
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
            (float(edges[k] + (low_gap if k > 0 else 0)),
             float(edges[k + 1] - 1 - (high_gap if k < GRID - 1 else 0)))
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


# --------------------------------------------------------------------------------------------
# Noise and shapes
# --------------------------------------------------------------------------------------------
def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic 6t^5 - 15t^4 + 10t^3: smooth (C2) blending between lattice points."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Gradient (Perlin) noise of ``shape`` with ``cells`` lattice cells across each side, about in [-1, 1].

    Example:
        >>> noise = perlin_noise((32, 32), 4, np.random.default_rng(0))
        >>> noise.shape, bool(np.abs(noise).max() <= 1.0)
        ((32, 32), True)
    """
    height, width = shape
    angles = rng.uniform(0.0, 2 * np.pi, size=(cells + 1, cells + 1))
    grad_y, grad_x = np.sin(angles), np.cos(angles)
    y = np.arange(height) * cells / height
    x = np.arange(width) * cells / width
    cell_y, cell_x = y.astype(int)[:, None], x.astype(int)[None, :]
    frac_y, frac_x = (y % 1.0)[:, None], (x % 1.0)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        # dot product of the corner's gradient with the vector from that corner to the pixel
        corner_y, corner_x = cell_y + dy, cell_x + dx
        return grad_y[corner_y, corner_x] * (frac_y - dy) + grad_x[corner_y, corner_x] * (frac_x - dx)

    blend_y, blend_x = _fade(frac_y), _fade(frac_x)
    top = corner(0, 0) * (1 - blend_x) + corner(0, 1) * blend_x
    bottom = corner(1, 0) * (1 - blend_x) + corner(1, 1) * blend_x
    return (top * (1 - blend_y) + bottom * blend_y) * np.sqrt(2)


def fractal_noise(
    shape: tuple[int, int], rng: np.random.Generator, cells: int = 4, octaves: int = 3, persistence: float = 0.5
) -> np.ndarray:
    """Perlin noise summed over ``octaves`` (each twice as fine, ``persistence`` times as strong)."""
    total = np.zeros(shape)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * perlin_noise(shape, cells * 2**octave, rng)
        norm += amplitude
        amplitude *= persistence
    return total / norm


def _target_area(rng: np.random.Generator, shape: tuple[int, int], low: float, high: float) -> float:
    """A defect area in pixels, drawn as a fraction of the tile."""
    return rng.uniform(low, high) * shape[0] * shape[1]


def _random_centre(rng: np.random.Generator, shape: tuple[int, int], margin: float) -> tuple[float, float]:
    height, width = shape
    return _uniform_within(rng, margin, height - 1 - margin), _uniform_within(rng, margin, width - 1 - margin)


def _blob(
    rng: np.random.Generator, shape: tuple[int, int], area: float, roughness: float, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """An irregular blob of about ``area`` pixels: ``(mask, strength)``, strength 0 at the rim, 1 at the core.

    The field is an elliptical bowl plus ``roughness`` times fractal noise; thresholding it at
    the right quantile gives exactly the wanted area, and the largest piece is kept.
    """
    height, width = shape
    radius = np.sqrt(area / np.pi)
    centre_y, centre_x = _random_centre(rng, shape, 1.2 * radius)
    aspect = rng.uniform(0.6, 1.6)
    tilt = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy, xx = yy - centre_y, xx - centre_x
    along = (xx * np.cos(tilt) + yy * np.sin(tilt)) / np.sqrt(aspect)
    across = (-xx * np.sin(tilt) + yy * np.cos(tilt)) * np.sqrt(aspect)
    bowl = -(along**2 + across**2) / radius**2
    field = bowl + roughness * fractal_noise(shape, rng, cells=cells, octaves=3)
    threshold = np.quantile(field, 1.0 - area / (height * width))
    mask = _largest_component(field > threshold)
    inside = field[mask]
    strength = np.where(mask, (field - threshold) / max(inside.max() - threshold, 1e-9), 0.0)
    return mask, np.clip(strength, 0.0, 1.0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def _smoothstep(low: float, high: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _compose(tile: np.ndarray, changed: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tile with ``changed`` pasted inside ``mask`` only: outside, every pixel is untouched."""
    return np.where(mask[..., None], _to_uint8(changed), tile), mask


def _luminance(tile: np.ndarray) -> float:
    return float(np.asarray(tile, np.float64).mean())


def _check_tile(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB tile of shape (H, W, 3), got {tile.dtype} {tile.shape}")
    return tile


# --------------------------------------------------------------------------------------------
# Defects: (tile, rng) -> (defected tile, boolean mask); the tile changes only inside the mask
# --------------------------------------------------------------------------------------------
def add_scratch(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One or two thin curved lines, bright on dark textures and dark on bright ones."""
    tile = _check_tile(tile)
    shape = tile.shape[:2]
    size = min(shape)
    lines = np.zeros(shape, dtype=bool)
    taper = np.zeros(shape)  # 1 along the middle of a scratch, thinning towards both ends
    length = size * rng.uniform(0.45, 0.8)
    direction = rng.uniform(0.0, np.pi)
    start_y, start_x = _random_centre(rng, shape, 0.25 * size)
    unit = np.array([np.sin(direction), np.cos(direction)])
    normal = np.array([unit[1], -unit[0]])
    for k in range(rng.integers(1, 3)):
        # A second scratch runs roughly alongside the first, as when something is dragged across.
        shift = normal * k * size * rng.uniform(0.03, 0.08) + unit * k * length * rng.uniform(-0.2, 0.2)
        start = np.array([start_y, start_x]) - unit * length / 2 + shift
        end = start + unit * length * rng.uniform(0.6, 1.0) ** k
        control = (start + end) / 2 + normal * rng.uniform(-0.25, 0.25) * length
        t = np.linspace(0.0, 1.0, int(4 * length) + 2)[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end  # quadratic Bezier
        points = np.round(points).astype(int)
        keep = ((points >= 0) & (points < np.array(shape))).all(axis=1)
        lines[points[keep, 0], points[keep, 1]] = True
        taper[points[keep, 0], points[keep, 1]] = np.sin(np.pi * t[keep, 0]) ** 0.4
    distance, (nearest_y, nearest_x) = ndimage.distance_transform_edt(~lines, return_indices=True)
    half_width = max(0.75, size * rng.uniform(0.006, 0.011)) * np.maximum(taper[nearest_y, nearest_x], 0.35)
    alpha = np.clip(half_width + 0.5 - distance, 0.0, 1.0)  # anti-aliased edge
    mask = alpha >= 0.25
    strength = rng.uniform(0.75, 0.95)
    if _luminance(tile) < 128:
        paint = np.array([rng.uniform(235, 255)] * 3) * np.array([1.0, 0.98, 0.95])
    else:
        paint = np.array([rng.uniform(12, 35)] * 3)
    weight = (alpha * strength)[..., None]
    changed = tile * (1 - weight) + paint * weight
    return _compose(tile, changed, mask)


def add_hole(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark, roughly round hole, deepest in the middle, its inner wall lit from one side."""
    tile = _check_tile(tile)
    shape = tile.shape[:2]
    radius = np.sqrt(_target_area(rng, shape, 0.012, 0.05) / np.pi)
    centre_y, centre_x = _random_centre(rng, shape, 1.3 * radius)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    yy, xx = yy - centre_y, xx - centre_x
    theta = np.arctan2(yy, xx)
    # An irregular outline: a few low angular harmonics on top of the circle.
    harmonics = np.arange(2, 5)
    amplitudes = rng.uniform(0.0, 0.12, harmonics.size)
    phases = rng.uniform(0.0, 2 * np.pi, harmonics.size)
    outline = radius * (1 + (amplitudes * np.cos(harmonics * theta[..., None] + phases)).sum(-1))
    depth = np.hypot(yy, xx) / outline  # 0 at the centre, 1 on the rim
    mask = depth <= 1.0
    light = rng.uniform(0.0, 2 * np.pi)
    lit_wall = 0.4 * np.clip(-np.cos(theta - light), 0.0, None) * _smoothstep(0.55, 1.0, depth)
    shade = 0.1 + 0.3 * depth**2 + lit_wall
    changed = tile * shade[..., None]
    return _compose(tile, changed, mask)


# coffee, rust, oil, ink, algae
_STAIN_COLOURS = np.array([(120, 78, 40), (150, 70, 30), (50, 48, 58), (60, 80, 150), (90, 110, 40)], float)


def add_stain(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth translucent blotch (coffee, rust, oil, ink) that darkens and tints the texture."""
    tile = _check_tile(tile)
    shape = tile.shape[:2]
    area = _target_area(rng, shape, 0.02, 0.07)
    mask, strength = _blob(rng, shape, area, roughness=0.35, cells=int(rng.integers(3, 6)))
    stain = np.clip(_STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))] + rng.normal(0, 12, 3), 0, 255)
    opacity = rng.uniform(0.6, 0.85)
    # Multiplying keeps the texture visible through the stain; a dried stain has a visible rim.
    alpha = (opacity * (0.5 + 0.5 * strength))[..., None]
    changed = tile * (1 - alpha) + tile * (stain / 255.0) * alpha
    return _compose(tile, changed, mask)


def add_perlin_patch(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A Perlin-noise shaped patch filled with a foreign two-colour texture (as in DRAEM)."""
    tile = _check_tile(tile)
    shape = tile.shape[:2]
    area = _target_area(rng, shape, 0.02, 0.07)
    mask, _ = _blob(rng, shape, area, roughness=2.0, cells=int(rng.integers(3, 7)))
    pattern = (fractal_noise(shape, rng, cells=int(rng.integers(6, 12)), octaves=2) + 1) / 2
    # Colours from the far side of the colour wheel, so the patch stands out from the texture.
    texture_hue = color.rgb2hsv(tile.reshape(-1, 1, 3).mean(0, keepdims=True) / 255.0)[0, 0, 0]
    hues = (texture_hue + 0.5 + rng.uniform(-0.2, 0.2, 2)) % 1.0
    dark = color.hsv2rgb(np.array([[[hues[0], rng.uniform(0.5, 1.0), rng.uniform(0.1, 0.3)]]]))[0, 0] * 255
    bright = color.hsv2rgb(np.array([[[hues[1], rng.uniform(0.5, 1.0), rng.uniform(0.8, 1.0)]]]))[0, 0] * 255
    foreign = dark + np.clip(pattern, 0, 1)[..., None] * (bright - dark)
    keep = rng.uniform(0.1, 0.35)  # how much of the original texture still shows through
    changed = keep * tile + (1 - keep) * foreign
    return _compose(tile, changed, mask)


def add_color_shift(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A region whose hue is turned and saturation raised: discoloured, but the texture is intact."""
    tile = _check_tile(tile)
    shape = tile.shape[:2]
    mask, strength = _blob(rng, shape, _target_area(rng, shape, 0.025, 0.08), roughness=0.4, cells=4)
    hsv = color.rgb2hsv(tile[mask][None])  # only the pixels that change, as a 1 x N image
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0.15, 0.4) * rng.choice([-1.0, 1.0])) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1.4, 2.0) + rng.uniform(0.2, 0.35), 0.0, 1.0)
    shifted = np.zeros(tile.shape)
    shifted[mask] = color.hsv2rgb(hsv)[0] * 255.0
    alpha = (0.65 + 0.35 * _smoothstep(0.0, 1.0, strength))[..., None]
    changed = tile * (1 - alpha) + shifted * alpha
    return _compose(tile, changed, mask)


def add_missing_chunk(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A jagged piece broken out of the surface: flat background shows through, the broken edge is dark."""
    tile = _check_tile(tile)
    shape = tile.shape[:2]
    radius = np.sqrt(_target_area(rng, shape, 0.02, 0.06) / np.pi)
    centre_y, centre_x = _random_centre(rng, shape, 1.3 * radius)
    corners = int(rng.integers(6, 11))
    turn = rng.uniform(0, 2 * np.pi)
    angles = (np.arange(corners) + rng.uniform(-0.3, 0.3, corners)) * 2 * np.pi / corners + turn
    radii = radius * rng.uniform(0.75, 1.35, corners)
    rows, cols = draw.polygon(centre_y + radii * np.sin(angles), centre_x + radii * np.cos(angles), shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    # The background is far from the texture's brightness, lit by a faint gradient, with sensor noise.
    level = rng.uniform(10, 40) if _luminance(tile) > 110 else rng.uniform(205, 235)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    gradient = 8.0 * (np.cos(rng.uniform(0, 2 * np.pi)) * xx + np.sin(rng.uniform(0, 2 * np.pi)) * yy)
    background = level + gradient + rng.normal(0.0, 1.5, shape)
    changed = np.repeat(background[..., None], 3, axis=2)
    edge = mask & (ndimage.distance_transform_edt(mask) <= max(1.0, min(shape) / 100))
    changed[edge] = tile[edge] * 0.45
    return _compose(tile, changed, mask)


DEFECTS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": add_scratch,
    "hole": add_hole,
    "stain": add_stain,
    "perlin": add_perlin_patch,
    "color_shift": add_color_shift,
    "missing_chunk": add_missing_chunk,
}
DEFECT_TYPES: tuple[str, ...] = tuple(DEFECTS)


# --------------------------------------------------------------------------------------------
# Where the dataset lives
# --------------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    """The base data folder.

    ``$PATCHCORE_KIT_DATA`` when set, else ``data/`` of a source checkout (a repository with
    ``.git`` or ``pyproject.toml``), else ``~/.cache/patchcore_kit`` for an installed package.
    """
    configured = os.environ.get("PATCHCORE_KIT_DATA")
    if configured:
        return Path(configured).expanduser()
    repository = Path(__file__).resolve().parents[2]
    if (repository / ".git").exists() or (repository / "pyproject.toml").is_file():
        return repository / "data"
    return Path.home() / ".cache" / "patchcore_kit"


def default_demo_root() -> Path:
    """Where :func:`build_demo_dataset` writes by default: ``<data dir>/demo``."""
    return default_data_dir() / "demo"


# --------------------------------------------------------------------------------------------
# Building the dataset
# --------------------------------------------------------------------------------------------
def _image_rng(seed: int, category: str, part: int, index: int) -> np.random.Generator:
    """One generator per image, keyed by name rather than order: a category's images do not
    depend on which other categories are built, nor on the counts of the other parts."""
    return np.random.default_rng([seed, zlib.crc32(category.encode()), part, index])


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _write_category(folder: Path, category: str, parameters: dict, bar: tqdm) -> None:
    texture = texture_image(category)
    seed, size = parameters["seed"], parameters["image_size"]

    def tiles(part: int, count: int, region: str) -> Iterable[tuple[int, np.random.Generator, np.ndarray]]:
        for index in range(count):
            rng = _image_rng(seed, category, part, index)
            yield index, rng, random_tile(texture, rng, size, region)

    nominal = [("train", 0, parameters["n_train"], "train"), ("test", 1, parameters["n_test_good"], "test")]
    for subset, part, count, region in nominal:
        target = folder / subset / "good"
        target.mkdir(parents=True)
        for index, _, tile in tiles(part, count, region):
            _save_png(tile, target / f"{index:03d}.png")
            bar.update()

    for offset, defect_type in enumerate(parameters["defect_types"]):
        images, masks = folder / "test" / defect_type, folder / "ground_truth" / defect_type
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        add_defect = DEFECTS[defect_type]
        for index, rng, tile in tiles(2 + offset, parameters["n_test_per_defect"], "test"):
            defected, mask = add_defect(tile, rng)
            _save_png(defected, images / f"{index:03d}.png")
            _save_png(mask.astype(np.uint8) * 255, masks / f"{index:03d}_mask.png")
            bar.update()


def _read_manifest(root: Path) -> dict | None:
    """The manifest of a demo build at ``root``, or None when there is none (or not ours)."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == _GENERATOR else None


def _is_complete(root: Path, parameters: dict, categories: tuple[str, ...]) -> bool:
    """True when ``root`` holds a demo build with these parameters and all wanted categories."""
    manifest = _read_manifest(root)
    if manifest is None or manifest.get("parameters") != parameters:
        return False
    if not set(categories) <= set(manifest.get("categories", [])):
        return False
    expected = {"train/good": parameters["n_train"], "test/good": parameters["n_test_good"]}
    for defect_type in parameters["defect_types"]:
        for subfolder in ("test", "ground_truth"):
            expected[f"{subfolder}/{defect_type}"] = parameters["n_test_per_defect"]
    for category in categories:
        for subfolder, count in expected.items():
            folder = root / category / subfolder
            if not folder.is_dir() or len(list(folder.glob("*.png"))) != count:
                return False
    return True


def _check_arguments(
    root: Path, categories: tuple[str, ...], counts: dict, image_size: int, seed: int
) -> None:
    unknown = [c for c in categories if c not in _TEXTURES]
    if unknown or not categories:
        choices = ", ".join(DEMO_CATEGORIES)
        raise InputError(f"{root}: unknown demo categories {unknown}; choose from {choices}")
    for name, value in counts.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{root}: {name} must be a positive integer, got {value!r}")
    if not isinstance(image_size, (int, np.integer)) or not 32 <= image_size <= 1024:
        raise InputError(f"{root}: image_size must be an integer between 32 and 1024, got {image_size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{root}: seed must be a non-negative integer, got {seed!r}")


def build_demo_dataset(
    root: str | Path | None = None,
    categories: Iterable[str] = DEMO_CATEGORIES,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_per_defect: int = 4,
    image_size: int = 256,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the demo dataset in the MVTec AD layout under ``root`` (if needed) and return ``root``.

    Each category gets ``n_train`` training tiles, ``n_test_good`` nominal test tiles and
    ``n_test_per_defect`` tiles of each of the :data:`DEFECT_TYPES`, all ``image_size`` pixels
    square. An existing build is reused when its manifest shows the same parameters and
    generator version and it holds the wanted categories; ``force=True`` rebuilds regardless.
    The build goes to a temporary folder beside ``root`` and is renamed into place at the end, so
    an interrupted build never leaves half a dataset. A folder at ``root`` that is not a demo
    build is never touched.

    Example:
        >>> root = build_demo_dataset("/tmp/demo", categories=("gravel",), n_train=8,
        ...                           n_test_good=2, n_test_per_defect=1, image_size=64,
        ...                           progress=False)   # doctest: +SKIP
        >>> from patchcore_kit.data import load_mvtec
        >>> load_mvtec(root, "gravel")                     # doctest: +SKIP
    """
    root = Path(root).expanduser() if root is not None else default_demo_root()
    categories = tuple(dict.fromkeys(categories))  # unique, order kept
    counts = {"n_train": n_train, "n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect}
    _check_arguments(root, categories, counts, image_size, seed)
    parameters = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        **{name: int(value) for name, value in counts.items()},
        "defect_types": list(DEFECT_TYPES),
    }
    if not force and _is_complete(root, parameters, categories):
        return root
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder; choose another demo root")
    if root.is_dir() and any(root.iterdir()) and _read_manifest(root) is None:
        raise InputError(
            f"{root}: folder exists and is not a demo dataset (no {MANIFEST_NAME}); choose another root"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    building.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the dataset should not be
    try:
        total = len(categories) * (n_train + n_test_good + len(DEFECT_TYPES) * n_test_per_defect)
        with tqdm(total=total, desc=f"demo dataset -> {root}", unit="img", disable=not progress) as bar:
            for category in categories:
                bar.set_postfix_str(category)
                _write_category(building / category, category, parameters, bar)
        manifest = {
            "generator": _GENERATOR,
            "parameters": parameters,
            "categories": list(categories),
            "sources": {category: _TEXTURES[category][3] for category in categories},
        }
        # Written last: a folder with a manifest is a finished build.
        (building / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(building, root)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return root


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(building: Path, root: Path) -> None:
    """Replace ``root`` by the finished build; the old build (ours, checked) is removed afterwards."""
    if not root.exists():
        building.rename(root)
        return
    retired = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
    root.rename(retired)
    building.rename(root)
    shutil.rmtree(retired, ignore_errors=True)
