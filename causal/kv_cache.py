"""Per-expert self-attention KV cache, organised by latent frame.

Every layer holds one key and one value buffer [B, heads, slots * tokens_per_frame, head_dim]. A frame owns a slot;
running a chunk again writes into the same slots. Without a window the cache is sized once for the stream's
known length (`capacity`) and grows by doubling past it; with a
rolling window of W frames and S sink frames, slots 0..S-1 keep the first S frames forever and the other W-S
slots form a ring, so memory is constant once the window is full.

Two position policies decide the RoPE index of a cached key:
- "absolute": keys are rotated at their absolute frame index before they are stored (as the released models were
  trained and sampled). Frame indices must stay below the 1024-entry RoPE table.
- "window": keys are stored before rotation and rotated at every call at window-relative positions (sinks at
  0..S-1, the oldest recent frame right after them), so positions never leave the table and a stream can go on
  for any length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fp8 import dequantize, is_fp8
from .fp8_storage import quantize_rows
from .rope import apply_rope, rope_table

POLICIES = ("absolute", "window")


def resolve_policy(policy: str, window: int | None) -> str:
    """"auto" -> "window" when there is an attention window, else "absolute"."""
    return policy if policy != "auto" else ("window" if window else "absolute")


def check_window(window: int | None, sink: int, chunk_frames: int | None = None) -> None:
    """Raise a readable error for a window that cannot work."""
    if window is None:
        if sink:
            raise ValueError(f"sink_frames={sink} needs an attention window; set window_frames or sink_frames=0")
        return
    if window < 1:
        raise ValueError(f"window_frames must be at least 1 (got {window}); use 0/None for no window")
    if sink < 0 or sink >= window:
        raise ValueError(f"sink_frames ({sink}) must be smaller than the window ({window} frames)")
    if chunk_frames is not None and chunk_frames > window - sink:
        raise ValueError(f"an attention window of {window} frames with {sink} sink frames cannot hold a chunk of "
                         f"{chunk_frames} frames; use a window of at least {chunk_frames + sink} frames")


@dataclass
class ChunkPlan:
    """Where one chunk's frames go in the cache and which cached slots it attends to."""

    start: int
    frames: int
    tokens_per_frame: int
    runs: list  # [(first chunk frame, first slot, count)] contiguous slot runs to write
    used: int  # attend to slots [0, used) when gather is None
    gather: torch.Tensor | None  # token indices to attend to otherwise
    q_rope: tuple
    k_rope: tuple | None  # window policy: rotation of the attended keys


class KVCache:
    """Self-attention keys/values of one expert (all layers) for one stream."""

    def __init__(self, num_layers: int, window: int | None = None, sink: int = 0, policy: str = "absolute",
                 dtype: torch.dtype | None = None, rope_limit: int = 1024, capacity: int | None = None):
        if policy not in POLICIES:
            raise ValueError(f"unknown position policy {policy!r}; choose one of {POLICIES}")
        check_window(window, sink)
        self.num_layers, self.window, self.sink, self.policy = num_layers, window, sink, policy
        self.dtype, self.rope_limit = dtype, rope_limit
        self.capacity = capacity  # frames to allocate at once without a window (the stream's known length)
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        # fp8 caches only (issue 7): float32 scale per token and head, [B, heads, slots * tokens, 1]
        self.k_scale: list[torch.Tensor] = []
        self.v_scale: list[torch.Tensor] = []
        self.slot_frame: list[int] = []  # frame held by each slot, -1 when empty
        self.grid = None  # (batch, heads, head_dim, h, w, device)

    # ----------------------------------------------------------------- bookkeeping
    @property
    def frames(self) -> list[int]:
        """Cached frame indices, ascending."""
        return sorted(f for f in self.slot_frame if f >= 0)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v + self.k_scale + self.v_scale)

    def clear(self) -> None:
        """Forget every cached frame (buffers are kept for reuse)."""
        self.slot_frame = [-1] * len(self.slot_frame)

    def _slot(self, f: int) -> int:
        if self.window is None or f < self.sink:
            return f
        return self.sink + (f - self.sink) % (self.window - self.sink)

    def _visible(self, g: int, start: int, frames: int) -> bool:
        if self.window is None or g < self.sink:
            return True
        return g >= start + frames - (self.window - self.sink)

    def _allocate(self, slots: int, batch, heads, head_dim, tpf, device, dtype) -> None:
        old = len(self.slot_frame)
        shape = (batch, heads, slots * tpf, head_dim)
        bufs = [(self.k, shape, dtype), (self.v, shape, dtype)]
        if is_fp8(dtype):  # fp8 cache: one scale per token row (see causal/fp8_storage.py)
            bufs += [(self.k_scale, shape[:3] + (1,), torch.float32), (self.v_scale, shape[:3] + (1,), torch.float32)]
        for i in range(self.num_layers):
            for buf, buf_shape, buf_dtype in bufs:
                new = torch.zeros(buf_shape, dtype=buf_dtype, device=device)
                if old:
                    new[:, :, : old * tpf] = buf[i]
                    buf[i] = new
                else:
                    buf.append(new)
        self.slot_frame += [-1] * (slots - old)

    # ----------------------------------------------------------------- planning
    def plan(self, start: int, frames: int, batch: int, heads: int, head_dim: int, h: int, w: int,
             device, dtype) -> ChunkPlan:
        """Assign slots for frames [start, start + frames), evict what no query can see again, build RoPE."""
        check_window(self.window, self.sink, frames)
        grid = (batch, heads, head_dim, h, w, torch.device(device))
        if self.grid is None:
            self.grid = grid
        elif self.grid != grid:
            raise ValueError(f"this stream's cache was built for batch/heads/grid {self.grid[:5]}, got {grid[:5]}; "
                             f"start a new stream for another resolution or model")
        tpf = h * w
        last_frame = start + frames - 1
        if self.policy == "absolute" and last_frame >= self.rope_limit:
            raise ValueError(f"frame {last_frame} is beyond the RoPE table of {self.rope_limit} frames; use the "
                             f"'window' position policy with an attention window for longer streams")
        need = (last_frame + 1) if self.window is None else self.window
        if need > len(self.slot_frame):
            if self.window is not None:
                target = need
            elif self.capacity and need <= self.capacity:
                target = self.capacity  # sized once for a stream of known length
            else:
                target = max(need, 2 * len(self.slot_frame))  # unknown length: grow geometrically
            self._allocate(target, batch, heads, head_dim, tpf, device, self.dtype or dtype)
        for i, g in enumerate(self.slot_frame):  # drop frames at or after start and frames out of the window
            if g >= start or (g >= 0 and not self._visible(g, start, frames)):
                self.slot_frame[i] = -1
        runs = []
        for j in range(frames):
            s = self._slot(start + j)
            self.slot_frame[s] = start + j
            if runs and runs[-1][1] + runs[-1][2] == s:
                runs[-1][2] += 1
            else:
                runs.append([j, s, 1])
        occupied = [i for i, g in enumerate(self.slot_frame) if g >= 0]
        if occupied == list(range(len(occupied))):
            used, gather = len(occupied), None
        else:
            used = len(occupied)
            idx = torch.tensor(occupied, device=device)[:, None] * tpf + torch.arange(tpf, device=device)
            gather = idx.flatten()
        offset = 0
        if self.policy == "window" and self.window is not None:
            offset = max(0, start + frames - (self.window - self.sink) - self.sink)
        pos = lambda g: g if g < self.sink else g - offset  # noqa: E731
        q_rope = rope_table([pos(start + j) for j in range(frames)], h, w, head_dim, self.rope_limit, device=device)
        k_rope = None
        if self.policy == "window":
            k_rope = rope_table([pos(self.slot_frame[i]) for i in occupied], h, w, head_dim, self.rope_limit,
                                device=device)
        return ChunkPlan(start, frames, tpf, [tuple(r) for r in runs], used, gather, q_rope, k_rope)

    # ----------------------------------------------------------------- attention
    def attend(self, layer: int, plan: ChunkPlan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store this chunk's k/v for `layer` and attend q [B, H, L, D] to every visible cached frame."""
        q = apply_rope(q, *plan.q_rope)
        if self.policy == "absolute":
            k = apply_rope(k, *plan.q_rope)
        tpf = plan.tokens_per_frame
        bufs, rows = [self.k[layer], self.v[layer]], [k, v]
        if self.k_scale:  # fp8 cache: store e4m3fn rows and their scales, read back in the compute dtype
            (kq, ks), (vq, vs) = quantize_rows(k), quantize_rows(v)
            bufs, rows = bufs + [self.k_scale[layer], self.v_scale[layer]], [kq, vq, ks, vs]
        for j, s, n in plan.runs:
            for buf, row in zip(bufs, rows):
                buf[:, :, s * tpf:(s + n) * tpf] = row[:, :, j * tpf:(j + n) * tpf]
        if plan.gather is None:
            read = [b[:, :, : plan.used * tpf] for b in bufs]
        else:
            read = [b.index_select(2, plan.gather) for b in bufs]
        keys, values = read[:2] if not self.k_scale else (dequantize(read[0], read[2], q.dtype),
                                                          dequantize(read[1], read[3], q.dtype))
        if self.policy == "window":
            keys = apply_rope(keys, *plan.k_rope)
        return F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype))
