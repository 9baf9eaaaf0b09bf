"""A colour-centroid tracker: where the saturated shape is in each frame, and which way it went.

The background is gray (no saturation) and the shapes are strongly coloured, so the shape is simply the set of
pixels whose max-min channel spread is large.
"""
from __future__ import annotations

import numpy as np

SATURATED = 60  # max - min channel spread (0..255) above which a pixel belongs to the shape


def track(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 or [0, 1] float frames [T, H, W, 3] -> (centroids [T, 2] as (x, y), NaN where no shape; areas [T])."""
    f = np.asarray(frames)
    if f.dtype != np.uint8:
        f = np.clip(np.round(f * 255.0), 0, 255).astype(np.uint8)
    spread = f.max(axis=-1).astype(np.int16) - f.min(axis=-1).astype(np.int16)
    mask = spread > SATURATED
    areas = mask.sum(axis=(1, 2)).astype(np.float64)
    ys, xs = np.mgrid[: f.shape[1], : f.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (mask * xs).sum(axis=(1, 2)) / areas
        cy = (mask * ys).sum(axis=(1, 2)) / areas
    return np.stack([cx, cy], axis=1), areas


def direction(centroids: np.ndarray, min_move: float = 3.0) -> str | None:
    """The named way the centroid went from the first to the last frame (None if it barely moved or was lost)."""
    d = centroids[-1] - centroids[0]
    if np.isnan(d).any() or np.abs(d).max() < min_move:
        return None
    if abs(d[0]) >= abs(d[1]):
        return "right" if d[0] > 0 else "left"
    return "down" if d[1] > 0 else "up"
