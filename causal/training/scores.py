"""Denoisers of the score networks: the frozen teacher (real score, with guidance) and the critic (fake score).

Both are bidirectional: the same Wan model class called on the whole clip without a KV cache. For an expert pair
the expert is chosen by the timestep against the pair's boundary, as in sampling.
"""
from __future__ import annotations

import torch

from ..sampling.experts import ExpertPair


def expert_for(pair: ExpertPair, t: float) -> str:
    return "high" if pair.high is not None and t >= pair.boundary else "low"


def velocity(pair: ExpertPair, x_t: torch.Tensor, t: float, context: torch.Tensor, model=None) -> torch.Tensor:
    """v = noise - x0 predicted for the whole clip x_t [B, C, F, h, w] at timestep t (one for every frame).
    `model` overrides the expert module (e.g. its data-parallel wrapper)."""
    model = model or pair.get(expert_for(pair, t))
    tt = torch.full((x_t.shape[0],), float(t), device=x_t.device)
    return model(x_t, tt, context=context).float()


def x0_of(x_t: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    return x_t - (t / 1000) * v


def real_x0(teacher: ExpertPair, x_t, t: float, context, negative, guidance: float) -> torch.Tensor:
    """The teacher's x0 with classifier-free guidance: cond + guidance * (cond - uncond) (facts sheet 7)."""
    with torch.no_grad():
        cond = x0_of(x_t, velocity(teacher, x_t, t, context), t)
        if guidance == 0:
            return cond
        uncond = x0_of(x_t, velocity(teacher, x_t, t, negative), t)
        return cond + guidance * (cond - uncond)


def noised(x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
    s = t / 1000
    return (1 - s) * x0 + s * noise
