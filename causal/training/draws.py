"""Every random draw of training, keyed by (seed, step, what, sample index) instead of a running RNG.

So a resumed run draws what an uninterrupted one draws, and a sample's noise is the same whichever process
or batch computes it (the two-process run equals the one-process run with the same global batch). Draws that
decide the route through the experts (exit step, DMD timestep) are shared by every sample and process: all
ranks then run the same experts, which sharded (FSDP) models need.
"""
from __future__ import annotations

import hashlib

import torch

from ..sampling.schedule import GRID, warp


def key(*parts) -> int:
    """A 63-bit seed from any parts."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(key(*parts))


def uniform(*parts) -> float:
    return float(torch.rand((), generator=generator(*parts), dtype=torch.float64))


def exit_step(n_steps: int, *parts) -> int:
    """The denoising step at which the rollout keyed by `parts` exits (same for every sample, chunk and process)."""
    return int(torch.randint(n_steps, (), generator=generator(*parts, "exit")))


def unwarp(t: float, shift: float) -> float:
    """Inverse of warp: the nominal timestep whose shifted value is t."""
    s = t / 1000
    return 1000 * s / (shift - (shift - 1) * s)


def timestep(u: float, shift: float, min_t: float, max_t: float, boundary: float | None = None) -> float:
    """A uniform u in [0, 1) -> DMD / critic timestep, as Self-Forcing and FastVideo draw it (facts sheet 7): a
    nominal timestep uniform over [0, 1000), shifted, then clamped to [min_t, max_t] (so t reaches down to min_t,
    and about 9% of the draws sit at max_t with shift 5). With `boundary` (a rollout made by the high-noise expert
    alone) the nominal range starts where the shifted value reaches the boundary, so t stays in [boundary, max_t]."""
    lo = min_t if boundary is None else max(min_t, boundary)
    a = 0.0 if boundary is None else unwarp(lo, shift)
    t = warp(a + u * (GRID - a), shift)
    return float(min(max(t, lo), max_t))


def noise_like(shape, seeds: list[int], *parts) -> torch.Tensor:
    """Gaussian noise [B, ...] with row b drawn from seeds[b] and `parts`."""
    return torch.cat([torch.randn((1, *shape[1:]), generator=generator(s, *parts)) for s in seeds])


