"""3-D rotary position embedding of Wan (frame, height, width), applied to interleaved pairs.

The head dimension is split into a frame part and two spatial parts (128 -> 44/42/42). Tables are computed in
float64 and applied in float32 as one complex rotation cos + i sin per pair; a frame position may be any integer
below the table size (1024 for Wan).
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
               theta: float = 10000.0, device=None) -> torch.Tensor:
    """The rotation of every token, complex64 [len(frame_positions) * height * width, head_dim // 2]: cos + i sin
    of each pair's angle, frame-major token order.

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
    return torch.complex(ang.cos().float(), ang.sin().float()).to(device)


def clear_tables() -> None:
    """Forget the memoised tables (a released model's: they sit on its device, ~38 MB at A14B chunk size)."""
    _rope_table.cache_clear()


def apply_rope(x: torch.Tensor, rot: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Rotate x [B, heads, L, D] by the table rot [L, D/2] (rope_table); pairs are (x[2i], x[2i+1]):
    out[2i] = x[2i] cos - x[2i+1] sin, out[2i+1] = x[2i+1] cos + x[2i] sin.

    Computed as one complex multiply of the pairs by cos + i sin (a single pass over x, no swapped copy),
    token-major ([B, L, heads, D] in memory, as the projections make it), and returned as a [B, heads, L, D] view of
    that: attention kernels read it faster than a heads-major copy. Where autograd does not track x, a float32
    copy made here is rotated in place, and with inplace=True (for an x nothing else reads afterwards) so is x."""
    dtype = x.dtype
    xt = x.transpose(1, 2)
    if xt.dtype != torch.float32:
        xt = xt.float()
    if xt.stride(-1) != 1 or xt.storage_offset() % 2 or any(s % 2 for s in xt.stride()[:-1]):
        xt = xt.contiguous()  # view_as_complex needs (real, imag) pairs adjacent and aligned
    pairs = torch.view_as_complex(xt.unflatten(-1, (-1, 2)))
    tracked = torch.is_grad_enabled() and x.requires_grad
    if not tracked and (inplace or xt.data_ptr() != x.data_ptr()):
        pairs.mul_(rot[:, None])
        out = xt
    else:
        out = torch.view_as_real(pairs * rot[:, None]).flatten(-2)
    return out.to(dtype).transpose(1, 2)
