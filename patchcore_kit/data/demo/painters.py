"""The six defect painters: pure functions ``(tile, rng) -> (defected, mask)``, collected in :data:`DEFECTS`.

Each changes the tile only inside its mask, so the mask is exactly the ground truth: a scratch,
a hole, a stain, a Perlin patch of foreign texture (as in DRAEM), a colour shift and a missing
chunk. The helpers above them shape the defect (an irregular blob of a chosen area) and paste it
(:func:`_compose`: outside the mask every pixel is untouched).

Example:
    >>> import numpy as np
    >>> from patchcore_kit.data.demo import random_tile, texture_image
    >>> rng = np.random.default_rng(0)
    >>> tile = random_tile(texture_image("grass"), rng, image_size=96, region="test")
    >>> defected, mask = DEFECTS["hole"](tile, rng)
    >>> defected.shape, mask.dtype, bool((defected[~mask] == tile[~mask]).all())
    ((96, 96, 3), dtype('bool'), True)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage import color, draw

from .noise import fractal_noise
from .tiles import _to_uint8, _uniform_within

__all__ = [
    "DEFECTS",
    "DEFECT_TYPES",
    "add_color_shift",
    "add_hole",
    "add_missing_chunk",
    "add_perlin_patch",
    "add_scratch",
    "add_stain",
]


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
