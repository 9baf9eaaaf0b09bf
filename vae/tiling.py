"""Spatial tiles for the VAE decoder: where each tile sits and how overlapping tiles are blended.

Tile size and overlap are given in latent pixels; each latent pixel becomes `scale` (8) image pixels.
Overlaps are cross-faded with linear ramps and the sum is divided by the summed weights, so any layout
(overlaps may exceed the minimum when tiles are spread evenly) blends to a partition of unity.
"""

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tile:
    """One tile: latent rows y0:y1 and columns x0:x1, and its pixel-space blend weight [1,1,1,H,W]."""

    y0: int
    y1: int
    x0: int
    x1: int
    weight: torch.Tensor


def axis_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Evenly spaced tiles of size `tile` covering [0, length), neighbours sharing at least `overlap`."""
    if tile >= length:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (n - 1)) for i in range(n)]
    return [(s, s + tile) for s in starts]


def _ramp(spans, k: int, scale: int) -> torch.Tensor:
    s, e = spans[k]
    w = torch.ones((e - s) * scale)
    if k > 0 and spans[k - 1][1] > s:
        n = (spans[k - 1][1] - s) * scale
        w[:n] = torch.minimum(w[:n], (torch.arange(n) + 0.5) / n)
    if k < len(spans) - 1 and e > spans[k + 1][0]:
        n = (e - spans[k + 1][0]) * scale
        w[-n:] = torch.minimum(w[-n:], (n - torch.arange(n) - 0.5) / n)
    return w


def plan_tiles(height: int, width: int, tile_size: int, overlap: int, scale: int = 8) -> list[Tile]:
    """Tiles covering a latent of height x width, with blend weights for the decoded (x scale) pixels."""
    if tile_size <= 0 or overlap < 0 or overlap >= tile_size:
        raise ValueError(f"tile_size must be > 0 and 0 <= tile_overlap < tile_size, got {tile_size}, {overlap}")
    rows, cols = axis_spans(height, tile_size, overlap), axis_spans(width, tile_size, overlap)
    tiles = []
    for i, (y0, y1) in enumerate(rows):
        wy = _ramp(rows, i, scale)
        for j, (x0, x1) in enumerate(cols):
            weight = (wy[:, None] * _ramp(cols, j, scale)[None, :]).view(1, 1, 1, *wy.shape, -1)
            tiles.append(Tile(y0, y1, x0, x1, weight))
    return tiles
