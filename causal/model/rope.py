"""3-D rotary position embedding of Wan (frame, height, width), applied to interleaved pairs.

The head dimension is split into a frame part and two spatial parts (128 -> 44/42/42). Tables are computed in
float64 and applied in float32; a frame position may be any integer below the table size (1024 for Wan).
"""
from __future__ import annotations

from functools import lru_cache

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dimensions given to (frame, height, width): 128 -> (44, 42, 42)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return positions.to(torch.float64)[:, None] * inv[None, :]


def rope_table(frame_positions, height: int, width: int, head_dim: int, table: int | None = 1024,
               theta: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each [len(frame_positions) * height * width, head_dim // 2], frame-major token order.

    table: frame positions must stay below it (the trained table); None lifts that limit for callers that only
    depend on position differences. Memoised: every denoising step and expert of a chunk asks for the same
    positions."""
    positions = tuple(int(p) for p in torch.as_tensor(frame_positions, dtype=torch.long).flatten().tolist())
    return _rope_table(positions, height, width, head_dim, table, theta, torch.device(device or "cpu"))


@lru_cache(maxsize=16)
def _rope_table(positions: tuple, height: int, width: int, head_dim: int, table: int, theta: float, device):
    fpos = torch.tensor(positions, dtype=torch.long)
    if fpos.numel() and (int(fpos.min()) < 0 or (table is not None and int(fpos.max()) >= table)):
        raise ValueError(f"frame position {int(fpos.max())} is outside the RoPE table of {table} positions; "
                         f"use a rolling attention window with the 'window' position policy for longer streams")
    if max(height, width) > (table or 1024):
        raise ValueError(f"latent grid {height}x{width} exceeds the RoPE table of {table or 1024} positions")
    dt, dh, dw = axis_dims(head_dim)
    at = _angles(fpos, dt, theta)
    ah = _angles(torch.arange(height), dh, theta)
    aw = _angles(torch.arange(width), dw, theta)
    f = fpos.numel()
    ang = torch.cat([
        at[:, None, None, :].expand(f, height, width, -1),
        ah[None, :, None, :].expand(f, height, width, -1),
        aw[None, None, :, :].expand(f, height, width, -1),
    ], dim=-1).reshape(f * height * width, head_dim // 2)
    return ang.cos().to(device=device, dtype=torch.float32), ang.sin().to(device=device, dtype=torch.float32)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, heads, L, D] by (cos, sin) [L, D/2]; pairs are (x[2i], x[2i+1])."""
    dtype = x.dtype
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    c, s = cos[None, None], sin[None, None]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    return out.to(dtype)
