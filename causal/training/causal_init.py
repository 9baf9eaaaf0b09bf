"""Causal initialisation (optional stage before DMD): regress the causal student onto teacher ODE trajectories.

The teacher (bidirectional, with guidance) solves the flow ODE from noise with Euler steps on a grid that passes
through every timestep of the student's few-step plan; the states at those timesteps are the student's inputs and
the ODE's end point is the target x0. The student runs on the whole clip under the block-causal mask (the
training-time equivalent of its KV cache: each chunk sees itself and earlier chunks), each chunk at its own
randomly drawn plan step (as Self-Forcing's ODE regression), and its x0 = x_t - s v is pulled to the target by
MSE (facts sheet 7).
"""
from __future__ import annotations

import torch

from ..model.masks import block_causal_mask, token_mask
from ..sampling.experts import ExpertPair
from ..sampling.schedule import Step, warp
from ..sampling.stream import chunk_sizes, frame_zero_alone
from . import draws
from .scores import velocity


def ode_grid(teacher_steps: int, shift: float, plan: list[Step]) -> list[float]:
    """Descending timesteps from 1000 to 0: the teacher's shifted grid plus the student's plan timesteps."""
    grid = {warp(1000 * (1 - i / teacher_steps), shift) for i in range(teacher_steps)}
    grid |= {s.t for s in plan}
    return sorted(grid, reverse=True) + [0.0]


@torch.no_grad()
def ode_trajectory(teacher: ExpertPair, noise: torch.Tensor, context, negative, guidance: float, grid: list[float],
                   keep: set[float], start: torch.Tensor | None = None) -> tuple[dict[float, torch.Tensor], torch.Tensor]:
    """Euler solution from `noise` at grid[0]; returns ({t: x_t for t in keep}, x0). A start latent (image-to-
    video) is held clean as frame 0 at every step."""
    x, states = noise, {}
    for t, t_next in zip(grid, grid[1:]):
        if start is not None:
            x = torch.cat([start, x[:, :, start.shape[2]:]], 2)
        if t in keep:
            states[t] = x.clone()
        v = velocity(teacher, x, t, context)
        if guidance:
            v = v + guidance * (v - velocity(teacher, x, t, negative))
        x = x + (t_next - t) / 1000 * v
    if start is not None:
        x = torch.cat([start, x[:, :, start.shape[2]:]], 2)
    return states, x


def regression_loss(student: ExpertPair, steps: list[Step], x_t: torch.Tensor, target: torch.Tensor, context,
                    sizes: list[int], n_start: int = 0) -> torch.Tensor:
    """MSE of the student's x0 to the ODE end point over the generated frames. sizes: frames per chunk (a start
    chunk first when n_start); steps: one plan step per generated chunk, the chunk's frames noised to its t. Every
    expert a chunk's step names runs the whole clip (block-causal mask, per-frame t; a start frame is clean at
    t = 0) and is scored on its own chunks, so each chunk's loss comes from the expert that owns its step."""
    b, _, f, h, w = x_t.shape
    cfg = student.config
    tokens = (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
    mask = token_mask(block_causal_mask(sizes), tokens).to(x_t.device)
    t = torch.zeros((b, f), device=x_t.device)
    owner: dict[str, list[int]] = {}
    pos = n_start
    for size, step in zip(sizes[1:] if n_start else sizes, steps, strict=True):
        t[:, pos:pos + size] = step.t
        owner.setdefault(step.expert, []).extend(range(pos, pos + size))
        pos += size
    sse, count = x_t.new_zeros(()), 0
    for name, frames in owner.items():
        v = student.get(name)(x_t, t, context=context, attn_mask=mask).float()
        x0 = x_t - (t / 1000)[:, None, :, None, None] * v
        err = (x0[:, :, frames] - target[:, :, frames]).square()
        sse, count = sse + err.sum(), count + err.numel()
    return sse / count


def run(trainer, steps: int, callback=None, stop=None) -> list[float]:
    """`steps` iterations of the regression on a DMDTrainer's generator and teacher (own AdamW at init_lr);
    resumes from trainer.init_steps_done. Each chunk draws its own plan step (the same for every sample and
    process), as Self-Forcing's ODE regression does. The EMA is set to the result."""
    c, gen = trainer.config, trainer.generator
    opt = trainer.acc.prepare(torch.optim.AdamW(gen.parameters(), lr=c.init_lr, betas=tuple(c.betas),
                                                weight_decay=c.weight_decay))
    grid = ode_grid(c.teacher_steps, trainer.teacher.shift, trainer.plan)
    keep = {s.t for s in trainer.plan}
    losses = []
    for i in range(trainer.init_steps_done, steps):
        if stop is not None and stop():
            break
        seeds, ctx, neg, start = trainer.conditioning("init", i)
        shape = (len(seeds), gen.config.out_dim, c.latent_frames, c.latent_height, c.latent_width)
        noise = draws.noise_like(shape, seeds, "init").to(ctx.device)
        n_start = 0 if start is None else start.shape[2]
        chunks = chunk_sizes(c.latent_frames - n_start, c.chunk_frames, frame_zero_alone(gen, n_start))
        sizes = ([n_start] if n_start else []) + chunks
        chunk_steps = [trainer.plan[int(torch.randint(len(trainer.plan), (),
                                                      generator=draws.generator(c.seed, "init", i, "chunk", j)))]
                       for j in range(len(chunks))]
        with trainer.autocast():
            states, x0 = ode_trajectory(trainer.teacher, noise, ctx, neg, c.guidance, grid, keep, start)
            parts, pos = [states[chunk_steps[0].t][:, :, :n_start]], n_start  # the start frame is clean in all
            for st, n in zip(chunk_steps, chunks):
                parts.append(states[st.t][:, :, pos:pos + n])  # each chunk from the trajectory at its own t
                pos += n
            x_t = torch.cat(parts, 2)
            loss = regression_loss(gen, chunk_steps, x_t, x0, ctx, sizes, n_start)
        trainer.update(loss, opt, gen)
        trainer.init_steps_done = i + 1
        losses.append(float(loss.detach()))
        if callback is not None:
            callback({"init_step": i, "init_loss": losses[-1], "experts": [st.expert for st in chunk_steps],
                      "t": [st.t for st in chunk_steps]})
    trainer.ema.update(gen.modules(), copy=True)
    opt.state.clear()  # the stage's moments (2x the generator): accelerate keeps every prepared optimizer listed
    return losses
