"""Per-expert self-attention KV cache, organised by latent frame.

Every layer holds one key and one value buffer [B, heads, slots * tokens_per_frame, head_dim]. A frame owns a slot;
running a chunk again writes into the same slots. Without a window the cache is sized once for the stream's
known length (`capacity`) and grows by doubling past it; with a
rolling window of W frames and S sink frames, slots 0..S-1 keep the first S frames forever and the other W-S
slots form a ring, so memory is constant once the window is full.

Two position policies decide the RoPE index of a cached key:
- "absolute": keys are rotated at their absolute frame index before they are stored (as the released models were
  trained and sampled). Frame indices must stay below the 1024-entry RoPE table.
- "window": window-relative positions: the sinks sit right before the oldest recent frame and every other frame
  keeps its place, so the distance between any query and key stays within the window and a stream can go on for
  any length. Attention only depends on position differences, so recent keys are stored rotated at their frame
  index (angles in float64, beyond the trained table is fine) and only the S sink frames are re-rotated, from an
  unrotated copy, when the window moves on.

Under grad (the exit step of a training rollout) the cache stores detached rows, and the chunk attends to a copy of
the cached frames in which its own rows are the live keys/values: gradients reach this chunk's projections, never
the cache. The copy is kept on the chunk's plan, so activation checkpointing recomputes the same attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fp8 import dequantize, is_fp8
from .fp8_storage import quantize_rows
from .rope import apply_rope, rope_table

POLICIES = ("absolute", "window")
CACHE_DTYPES = {"auto": None, "fp8_e4m3fn": torch.float8_e4m3fn}  # user choices: None = the compute dtype


def resolve_policy(policy: str, window: int | None) -> str:
    """"auto" -> "window" when there is an attention window, else "absolute"."""
    return policy if policy != "auto" else ("window" if window else "absolute")


WINDOW_NAMES = ("window_frames", "sink_frames", "frames_per_chunk")  # the node's words; the CLI passes its flags


def check_window(window: int | None, sink: int, chunk_frames: int | None = None, names=WINDOW_NAMES) -> None:
    """Raise a readable error for a window that cannot work; `names` are the user's words for the three values."""
    w, s, c = names
    if sink < 0:
        raise ValueError(f"{s} {sink} cannot be used: sink frames are 0 or more (e.g. 3 with a window of 12)")
    if window is None:
        if sink:
            raise ValueError(f"{s} {sink} needs an attention window; set {w} (e.g. 12) or {s} 0")
        return
    if window < 1:
        raise ValueError(f"{w} {window} cannot be used: give a window of at least 1 frame, or 0 for no window")
    if sink >= window:
        raise ValueError(f"{s} {sink} must be smaller than {w} {window}; e.g. {w} 12 with {s} 3")
    if chunk_frames is not None and chunk_frames > window - sink:
        raise ValueError(f"{w} {window} with {s} {sink} cannot hold a chunk of {chunk_frames} frames ({c}); "
                         f"use {w} {chunk_frames + sink} or more")


@dataclass
class ChunkPlan:
    """Where one chunk's frames go in the cache and which cached slots it attends to."""

    start: int
    frames: int
    tokens_per_frame: int
    runs: list  # [(first chunk frame, first slot, count)] contiguous slot runs to write
    used: int  # attend to slots [0, used) when gather is None
    gather: torch.Tensor | None  # token indices to attend to otherwise
    q_rope: torch.Tensor  # rotation of this chunk's queries and keys
    offset: int = 0  # window policy: the sinks sit at positions offset .. offset + S - 1
    sink_rope: torch.Tensor | None = None  # window policy: rotation of the sink frames at that offset
    live: list | None = None  # position of each of this chunk's frames among the attended frames
    held: dict | None = None  # under grad: layer -> (keys, values) read from the cache, reused by recomputation
    live_rows: torch.Tensor | None = None  # under grad: this chunk's token rows among the attended, for every layer


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
        self.sink_raw: list[torch.Tensor] = []  # window policy: unrotated keys of the sink frames, per layer
        self.sink_offset: list[int] = [0] * num_layers  # window policy: offset the stored sink keys are rotated at
        self.grid = None  # (batch, heads, head_dim, h, w, device)
        self.parked = False  # a copy waiting in host memory (causal/sampling/stream.py)
        self.event = None  # a CUDA copy of the buffers still in flight (causal/sampling/cache_copier.py)
        self.layer_done = None  # called with a layer's index once a forward is done with that layer's buffers

    # ----------------------------------------------------------------- bookkeeping
    @property
    def frames(self) -> list[int]:
        """Cached frame indices, ascending."""
        return sorted(f for f in self.slot_frame if f >= 0)

    BUFFERS = ("k", "v", "k_scale", "v_scale", "sink_raw")  # lists of one tensor per layer (those in use)

    def buffers(self) -> list[torch.Tensor]:
        return self.k + self.v + self.k_scale + self.v_scale + self.sink_raw

    def layer_buffers(self, layer: int) -> dict[str, torch.Tensor]:
        """The buffers of one layer, by list name."""
        return {n: getattr(self, n)[layer] for n in self.BUFFERS if len(getattr(self, n)) > layer}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def copy_to(self, device, parked: bool = False, share: bool = False, copy=None) -> "KVCache":
        """A copy of this cache (buffers and bookkeeping) with its buffers on `device`; `parked`: the copy waits in
        host memory and is not written until it is copied back; `share`: the copy uses these very buffers (safe for
        a parked cache, which is never written in place); `copy`: a function that copies a list of buffers instead
        (causal/sampling/cache_copier.py, on a side CUDA stream). The copy keeps the compute device it was planned
        for."""
        other = KVCache(self.num_layers, self.window, self.sink, self.policy, self.dtype, self.rope_limit,
                        self.capacity)
        names = self.BUFFERS
        if share:
            copies = self.buffers()
        elif copy is not None:
            copies = copy(self.buffers())
        else:
            copies = [t.to(device, copy=True) for t in self.buffers()]
        for name in names:
            n = len(getattr(self, name))
            setattr(other, name, copies[:n])
            copies = copies[n:]
        other.slot_frame, other.sink_offset, other.grid = list(self.slot_frame), list(self.sink_offset), self.grid
        other.parked = parked
        return other

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
        if is_fp8(dtype):  # fp8 cache: one scale per token row (see causal/model/fp8_storage.py)
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
        used, gather = len(occupied), None
        if occupied != list(range(used)):  # not a prefix of the slots: gather the held frames' tokens
            idx = torch.tensor(occupied, device=device)[:, None] * tpf + torch.arange(tpf, device=device)
            gather = idx.flatten()
        live = [occupied.index(self._slot(start + j)) for j in range(frames)]  # this chunk among the attended
        if self.policy == "absolute" or self.window is None:
            q_rope = rope_table(range(start, start + frames), h, w, head_dim, self.rope_limit, device=device)
            return ChunkPlan(start, frames, tpf, [tuple(r) for r in runs], used, gather, q_rope, live=live)
        offset = max(0, start + frames - (self.window - self.sink) - self.sink)
        pos = [g + offset if g < self.sink else g for g in range(start, start + frames)]
        q_rope = rope_table(pos, h, w, head_dim, None, device=device)
        sink_rope = rope_table(range(offset, offset + self.sink), h, w, head_dim, None, device=device) \
            if self.sink else None
        return ChunkPlan(start, frames, tpf, [tuple(r) for r in runs], used, gather, q_rope, offset, sink_rope, live)

    # ----------------------------------------------------------------- attention
    def attend(self, layer: int, plan: ChunkPlan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               owned: bool = False) -> torch.Tensor:
        """Store this chunk's k/v for `layer` and attend q [B, H, L, D] to every visible cached frame; then tell
        `layer_done` (if set) that this forward is done with the layer's buffers. owned: q and k are read nowhere
        else afterwards, so without autograd they are rotated in place."""
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            out = self._attend_live(layer, plan, q, k, v)
        else:
            self._store(layer, plan, k, v, owned)
            keys, values = self._read(layer, plan, q.dtype)
            out = F.scaled_dot_product_attention(apply_rope(q, plan.q_rope, owned), keys, values)
            del keys, values
        if self.layer_done is not None:
            self.layer_done(layer)
        return out

    def _store(self, layer: int, plan: ChunkPlan, k: torch.Tensor, v: torch.Tensor, owned: bool = False) -> None:
        tpf = plan.tokens_per_frame
        if plan.sink_rope is not None:
            self._keep_sink_keys(layer, plan, k)  # copies the unrotated rows it keeps
        k = apply_rope(k, plan.q_rope, owned)
        for j, s, n in plan.runs:
            self._write(layer, s * tpf, k[:, :, j * tpf:(j + n) * tpf], v[:, :, j * tpf:(j + n) * tpf])
        if plan.sink_rope is not None and self.sink_offset[layer] != plan.offset:
            self._move_sinks(layer, plan)

    def _read(self, layer: int, plan: ChunkPlan, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of every frame the chunk attends to, in slot order."""
        tpf = plan.tokens_per_frame
        bufs = [self.k[layer], self.v[layer]] + ([self.k_scale[layer], self.v_scale[layer]] if self.k_scale else [])
        if plan.gather is None:
            read = [b[:, :, : plan.used * tpf] for b in bufs]
        else:
            read = [b.index_select(2, plan.gather) for b in bufs]
        keys, values = read[:2] if not self.k_scale else (dequantize(read[0], read[2], dtype),
                                                          dequantize(read[1], read[3], dtype))
        return keys.to(dtype), values.to(dtype)

    def _attend_live(self, layer: int, plan: ChunkPlan, q, k, v) -> torch.Tensor:
        """attend() under grad: the cache gets detached rows; the attention sees the live rows of this chunk."""
        if self.k_scale or (self.dtype is not None and is_fp8(self.dtype)):
            raise ValueError("an fp8 KV cache cannot be trained through; use a bf16 or fp32 cache for training")
        if plan.held is None:
            plan.held = {}
        if plan.live_rows is None:  # once per chunk: every layer (and recomputation) reuses it
            tpf = plan.tokens_per_frame
            plan.live_rows = (torch.tensor(plan.live, device=k.device)[:, None] * tpf
                              + torch.arange(tpf, device=k.device)).flatten()
        rows = plan.live_rows
        if layer not in plan.held:  # first pass (a checkpoint recomputation finds the copy and writes nothing)
            with torch.no_grad():
                self._store(layer, plan, k.detach(), v.detach())
                plan.held[layer] = tuple(t.clone() for t in self._read(layer, plan, q.dtype))
        keys, values = plan.held[layer]
        keys = keys.index_copy(2, rows, apply_rope(k, plan.q_rope).to(keys.dtype))
        values = values.index_copy(2, rows, v.to(values.dtype))
        return F.scaled_dot_product_attention(apply_rope(q, plan.q_rope), keys, values)

    def _write(self, layer: int, at: int, k: torch.Tensor, v: torch.Tensor | None) -> None:
        """Store k (already rotated) and v rows at token index `at`; v None leaves the values as they are.
        fp8 caches store e4m3fn rows and their scales."""
        n = k.shape[2]
        pairs = [(self.k, self.k_scale, k)] + ([(self.v, self.v_scale, v)] if v is not None else [])
        for buf, scale, rows in pairs:
            if self.k_scale:
                rows, s = quantize_rows(rows)
                scale[layer][:, :, at:at + n] = s
            buf[layer][:, :, at:at + n] = rows

    def _keep_sink_keys(self, layer: int, plan: ChunkPlan, k: torch.Tensor) -> None:
        """Window policy: keep the unrotated keys of the sink frames of this chunk."""
        tpf = plan.tokens_per_frame
        for j in range(plan.frames):
            f = plan.start + j
            if f < self.sink:
                if len(self.sink_raw) <= layer:
                    self.sink_raw.append(k.new_zeros(k.shape[0], k.shape[1], self.sink * tpf, k.shape[3]))
                self.sink_raw[layer][:, :, f * tpf:(f + 1) * tpf] = k[:, :, j * tpf:(j + 1) * tpf]

    def _move_sinks(self, layer: int, plan: ChunkPlan) -> None:
        """Window policy: re-rotate the held sink frames to sit right before the window (slots 0..S-1)."""
        tpf, held = plan.tokens_per_frame, [f for f in range(self.sink) if self.slot_frame[f] == f]
        if held and len(self.sink_raw) > layer:
            n = (held[-1] + 1) * tpf
            raw = self.sink_raw[layer][:, :, :n]
            self._write(layer, 0, apply_rope(raw, plan.sink_rope[:n]), None)
        self.sink_offset[layer] = plan.offset
