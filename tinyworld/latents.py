"""Stage 3a: the teacher's data set, world clips encoded once by the trained VAE.

Each clip is 1 + 6 latent frames (25 pixel frames). About a third of the clips turn at a latent-frame boundary
`prefix`: the frames before it move one way, every later frame moves the captioned way. The teacher sees the
frames before `prefix` clean (t = 0) and learns the rest, so a caption always names the motion still to come:
what a prompt switch asks of the causal student.
"""
from __future__ import annotations

import numpy as np
import torch

from .clips import random_scene, to_video
from .world import DIRECTIONS, render, scene_caption, turned

LATENT_FRAMES = 7
PIXEL_FRAMES = 1 + 4 * (LATENT_FRAMES - 1)
TURN_PROB = 0.35


@torch.no_grad()
def make_dataset(vae, clips: int, seed: int, log, batch: int = 8) -> dict:
    """{"latents": [N, 16, 7, 16, 16] fp16, "captions": [N], "prefix": [N] (1: no turn)}."""
    rng = np.random.default_rng(seed)
    lat, caps, prefix = [], [], []
    pending = []
    for i in range(clips):
        scene = random_scene(rng, PIXEL_FRAMES, 0.0)
        p = 1
        if rng.random() < TURN_PROB:
            p = int(rng.integers(2, LATENT_FRAMES - 1))  # clean frames 0..p-1, at least two frames to learn
            to = str(rng.choice([d for d in DIRECTIONS if d != scene.direction]))
            scene = turned(scene, 4 * (p - 1), to)
        pending.append(to_video(render(scene, PIXEL_FRAMES)))
        caps.append(scene_caption(scene))
        prefix.append(p)
        if len(pending) == batch or i == clips - 1:
            lat.append(vae.encode(torch.stack(pending)).half())
            pending = []
            if len(lat) % 10 == 0:
                log(f"latents: {i + 1}/{clips} clips encoded")
    return {"latents": torch.cat(lat), "captions": caps, "prefix": torch.tensor(prefix)}
