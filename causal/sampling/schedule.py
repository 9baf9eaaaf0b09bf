"""Flow-matching schedule of the few-step causal samplers.

x_t = (1 - s) x0 + s noise with s = t / 1000; the model predicts v = noise - x0. Nominal steps are warped by the
scheduler shift, s' = shift u / (1 + (shift - 1) u) with u = t / 1000 (the 1000-point grid of the scheduler).
With an expert pair, steps at or above the boundary timestep go to the high-noise expert, which predicts the
boundary sample x_b = x_t - (s_t - s_b) v and re-noises forward from it; the last high step hands x_b to the
first low step without new noise. Low-noise (and dense) steps predict x0 = x_t - s v and re-noise with fresh
noise to the next step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRID = 1000
SELF_FORCING_STEPS = (1000, 750, 500, 250)
CAUSALWAN_A14B_STEPS = (1000, 850, 700, 550, 350, 275, 200, 125)
CONTEXT_T = 0.0  # timestep of the clean re-run that writes a chunk into the caches


def warp_sigma(u: float, shift: float) -> float:
    return shift * u / (1 + (shift - 1) * u)


def warp(t: float, shift: float) -> float:
    """Nominal timestep -> warped timestep (both on the 0..1000 scale)."""
    return GRID * warp_sigma(t / GRID, shift)


def grid_sigmas(shift: float) -> torch.Tensor:
    """The scheduler's 1000 training sigmas, descending from 1."""
    return warp_sigma(torch.linspace(1, 0, GRID + 1, dtype=torch.float64)[:-1], shift)


def boundary_sigma(boundary_t: float, shift: float) -> float:
    """Sigma of the boundary timestep looked up on the scheduler grid (0.8748499 for 875 at shift 5)."""
    g = grid_sigmas(shift)
    return float(g[(g - boundary_t / GRID).abs().argmin()])


@dataclass(frozen=True)
class Step:
    t: float  # warped timestep given to the model
    sigma: float
    expert: str  # "high" or "low"


def plan_steps(steps, shift: float, boundary_t: float | None = None) -> list[Step]:
    """Warp nominal steps and assign each to an expert (all "low" for a dense model)."""
    steps = [float(s) for s in steps]
    if not steps:
        raise ValueError("the step list is empty; give at least one timestep such as 1000")
    if any(not 0 < s <= GRID for s in steps) or any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"steps must be strictly decreasing timesteps in (0, 1000], got {steps}, e.g. 1000, 750, 500")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    out = []
    for s in steps:
        t = warp(s, shift)
        expert = "high" if boundary_t is not None and t >= boundary_t else "low"
        out.append(Step(t, t / GRID, expert))
    return out


def parse_steps(text: str, name: str = "steps") -> list[float]:
    """'1000, 750, 500, 250' -> [1000.0, 750.0, 500.0, 250.0]; one readable line naming `name` otherwise."""
    example = "e.g. '1000, 750, 500, 250'"
    if not text.strip():
        raise ValueError(f"{name} is empty; write timesteps separated by commas, {example}")
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"could not read the step list {text!r} ({name}); write timesteps separated by commas, {example}") from None
    try:
        plan_steps(vals, 1.0)
    except ValueError as e:
        raise ValueError(f"{name} {text!r}: {e}") from None
    return vals


def predict(x_t: torch.Tensor, v: torch.Tensor, step: Step, sigma_b: float | None) -> torch.Tensor:
    """The prediction of one step: x_b for a high-noise step, x0 otherwise."""
    if step.expert == "high":
        return x_t - (step.sigma - sigma_b) * v
    return x_t - step.sigma * v


def renoise(pred: torch.Tensor, step: Step, nxt: Step, sigma_b: float | None, noise: torch.Tensor) -> torch.Tensor:
    """Input of the next step from this step's prediction."""
    if step.expert == "high":
        if nxt.expert == "low":
            return pred  # x_b goes to the first low step as it is
        alpha = (1 - nxt.sigma) / (1 - sigma_b)
        beta = math.sqrt(max(nxt.sigma ** 2 - (alpha * sigma_b) ** 2, 0.0))
        return alpha * pred + beta * noise
    return (1 - nxt.sigma) * pred + nxt.sigma * noise
