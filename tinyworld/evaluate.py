"""How well a tiny-world model does what its captions say: videos from start frames, tracked by colour.

    student_video(folder_models, caption, image, seed, chunks)  -> frames [T, 128, 128, 3] in [0, 1]
    teacher_video(teacher, ..., steps=40)                       -> the bidirectional teacher's clip
    direction_accuracy(make_video)                              -> share of 4 colours x 4 directions x 2 seeds

The student runs through the one sampler of the pack (causal/sampling/stream.py); the teacher through the
trainer's teacher ODE (causal/training/causal_init.py), both decoded by the streaming VAE decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..causal.sampling.stream import Stream, StreamOptions
from ..vae.streaming import StreamingDecoder
from .track import direction, track
from .world import COLOURS, DIRECTIONS, caption, render, start_scene


@dataclass
class Models:
    experts: object  # ExpertPair (the causal student)
    vae: object
    encoder: object  # TextEncoder
    teacher: object = None  # CausalWanModel (bidirectional), optional

    def text(self, prompt: str) -> torch.Tensor:
        return self.encoder.encode([prompt])[0][None]


def load_models(folder, teacher: bool = False) -> Models:
    from ..causal.weights.loader import load_experts, load_transformer
    from ..causal.weights.text_encoder import load_text_encoder
    from ..vae.weights import load_vae

    t = load_transformer(f"{folder}/teacher.safetensors", dtype=torch.float32) if teacher else None
    return Models(load_experts(folder=folder, dtype=torch.float32), load_vae(f"{folder}/vae"),
                  load_text_encoder(folder, dtype=torch.float32), t)


def start_frame(colour: str, shape: str = "circle", x: float = 64.0, y: float = 64.0) -> np.ndarray:
    return render(start_scene(colour, shape, x=x, y=y), 1)[0]


def student_video(m: Models, prompt: str, image: np.ndarray, seed: int, chunks: int) -> np.ndarray:
    start = m.vae.encode_images(torch.from_numpy(image).float()[None] / 255.0)
    stream = Stream(m.experts, seed=seed, options=StreamOptions(max_frames=1 + 3 * chunks))
    stream.set_prompt(m.text(prompt))
    stream.prime(start)
    dec = StreamingDecoder(m.vae)
    frames = [dec.decode(start)] + [dec.decode(c) for c in stream.chunks(chunks)]
    return torch.cat(frames).numpy()


@torch.no_grad()
def teacher_video(m: Models, prompt: str, image: np.ndarray, seed: int, latent_frames: int = 7,
                  steps: int = 40, guidance: float = 0.0, decode_frames: int | None = None) -> np.ndarray:
    """The teacher's whole clip from one start frame (Euler ODE, frame 0 held clean); the first `decode_frames`
    latent frames decoded (all by default)."""
    from ..causal.sampling.experts import ExpertPair
    from ..causal.training.causal_init import ode_grid, ode_trajectory

    start = m.vae.encode_images(torch.from_numpy(image).float()[None] / 255.0)
    pair = ExpertPair(low=m.teacher, shift=m.experts.shift)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, 16, latent_frames, *start.shape[-2:]), generator=g)
    grid = ode_grid(steps, pair.shift, [])
    _, x0 = ode_trajectory(pair, noise, m.text(prompt), m.text(""), guidance, grid, set(), start)
    return StreamingDecoder(m.vae).decode(x0[:, :, :decode_frames]).numpy()


def direction_accuracy(make_video, seeds=(0, 1), frames: int | None = None) -> tuple[float, list]:
    """make_video(prompt, image, seed) -> frames; the tracked way of every colour x direction x seed video."""
    rows = []
    for colour in COLOURS:
        image = start_frame(colour)
        for d in DIRECTIONS:
            for seed in seeds:
                video = make_video(caption(colour, "circle", d), image, seed)
                cents, _ = track(video[:frames])
                rows.append((colour, d, seed, direction(cents)))
    return sum(r[1] == r[3] for r in rows) / len(rows), rows
