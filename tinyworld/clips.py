"""Training clips of the tiny world: random scenes (some turning mid-clip) as video tensors in [-1, 1]."""
from __future__ import annotations

import numpy as np
import torch

from .world import DIRECTIONS, SIZE, render, sample_scene, turned


def random_scene(rng: np.random.Generator, frames: int, turn_prob: float, turn_frames=None):
    """A scene; with probability `turn_prob` it turns to another direction at one of `turn_frames`."""
    scene = sample_scene(rng)
    if rng.random() < turn_prob:
        at = int(rng.choice(turn_frames if turn_frames is not None else range(1, frames)))
        to = str(rng.choice([d for d in DIRECTIONS if d != scene.direction]))
        scene = turned(scene, at, to)
    return scene


def to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float video [3, T, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)


def vae_batch(rng: np.random.Generator, batch: int, frames: int, crop: int) -> torch.Tensor:
    """[batch, 3, frames, crop, crop] crops around the moving shape (the VAE is convolutional)."""
    out = []
    for _ in range(batch):
        scene = random_scene(rng, frames, 0.5 if frames > 1 else 0.0)
        video = render(scene, frames)
        if crop < SIZE:  # most crops around the shape, some anywhere (background too)
            cx, cy = (scene.x, scene.y) if rng.random() < 0.8 else rng.uniform(0, SIZE, 2)
            x0 = int(np.clip(cx - crop / 2 + rng.uniform(-crop / 3, crop / 3), 0, SIZE - crop))
            y0 = int(np.clip(cy - crop / 2 + rng.uniform(-crop / 3, crop / 3), 0, SIZE - crop))
            video = video[:, y0:y0 + crop, x0:x0 + crop]
        out.append(to_video(np.ascontiguousarray(video)))
    return torch.stack(out)

