"""Self-Forcing rollout: the generator makes a whole video through the inference Stream, exiting each chunk's
denoising at one step (the same for every chunk), with grad only at that step.

The steps before the exit step run without grad, the exit step with grad (when `grad`), the clean context re-run
without grad, and the KV cache never holds a graph (causal/sampling/stream.py, causal/model/kv_cache.py). With
exit step = the last step the video equals the inference Stream's for the same weights and seeds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sampling.experts import ExpertPair
from ..sampling.stream import Stream, StreamOptions, chunk_sizes, frame_zero_alone


@dataclass
class Rollout:
    video: torch.Tensor  # [B, C, frames, h, w]; start frame (image-to-video) included
    exit_step: int
    expert: str  # expert of the exit step: "high" means only the high-noise expert denoised this video
    grad_calls: list  # (expert, t) of the calls that ran with grad


def rollout(generator: ExpertPair, context: torch.Tensor, seeds: list[int], frames: int, latent_hw: tuple,
            exit_step: int, *, chunk_frames: int = 3, steps=(), shift: float | None = None,
            start_latent: torch.Tensor | None = None, grad: bool = False, text_cache: bool = True,
            cache_dtype: torch.dtype | None = None) -> Rollout:
    """One video per seed (batch row), `frames` latent frames long, text `context` [B, tokens, text_dim].
    text_cache=False for sharded (FSDP) models: every call projects the text inside the model's forward.
    cache_dtype: of the KV cache (None: the model's; bf16 under mixed precision)."""
    opts = StreamOptions(chunk_frames=chunk_frames, steps=tuple(steps) or None, shift=shift, max_frames=frames,
                         text_cache=text_cache, cache_dtype=cache_dtype)
    stream = Stream(generator, seed=list(seeds), options=opts, latent_hw=tuple(latent_hw), batch=len(seeds))
    stream.set_prompt(context)
    parts = []
    if start_latent is not None:
        stream.prime(start_latent)
        parts.append(start_latent.to(stream.device, torch.float32))
    sizes = chunk_sizes(frames - stream.next_frame, chunk_frames, frame_zero_alone(generator, stream.next_frame))
    with torch.set_grad_enabled(grad):
        for n in sizes:
            parts.append(stream.next_chunk(n, exit_step=exit_step))
    return Rollout(torch.cat(parts, 2), exit_step, stream.plan[exit_step].expert, list(stream.grad_calls))


def plan_of(generator: ExpertPair, steps=(), shift: float | None = None) -> list:
    """The generator's denoising plan (Steps: timestep, sigma, expert); the exit step is drawn from it."""
    return Stream(generator, options=StreamOptions(steps=tuple(steps) or None, shift=shift)).plan
