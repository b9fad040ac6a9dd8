"""Smooth random fields for the defect painters: Perlin gradient noise and its fractal sum."""

from __future__ import annotations

import numpy as np

__all__ = ["fractal_noise", "perlin_noise"]


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
