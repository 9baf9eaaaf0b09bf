"""Predicted peak memory of a stream on the compute device, and the offload mode that fits.

    plan = plan_memory(A14B, 480, 832, window=21, experts=2, mode="swap", cache_dtype=torch.float8_e4m3fn)
    plan.total, plan.describe()
    choose_mode(free_bytes, A14B, 480, 832, window=21)    # the least offloading mode that fits, as a plan

Four parts, in bytes:
- weights: what the mode keeps on the compute device. "resident": every expert whole; "swap": the blocks of one
  expert plus the non-block weights (embeddings, time projection, head) of all; "blocks": N blocks plus the
  non-block weights of all. fp8 weights: block Linear weights at 1 byte plus a float32 scale each.
- kv_cache: on the device, every expert's cache in resident mode, one in swap/blocks (a switch of expert hands the
  device buffers over layer by layer, causal/sampling/cache_copier.py, so never two); per expert, layers x (k, v)
  x batch x slots x tokens/frame x dim at the cache dtype (plus a float32 scale per token and head for fp8). Slots: the window, or without one the stream's length (streams are sized
  once through StreamOptions.max_frames; an unsized cache doubles: 1, 4, 8, 16, 32 slots for 1 + 3k frames).
- host (not on the device): in swap and blocks modes the idle expert's KV cache (only the running expert's is on
  the device), and the KV cache a continued stream's upstream parks in host memory for a re-queue
  (causal/sampling/stream.py, `fork`), for `parked_frames` frames.
- cross_cache: text keys/values for every layer (one per expert, or one shared).
- activations: the live temporaries of one block forward over a chunk (residual stream in float32, projections,
  RoPE in float32, FFN hidden), from a model of the forward checked against measured tensor bytes in the tests
  (measured <= predicted <= 1.5 x measured on small configs: 1.3-1.49 x on the tests' tiny ones, where the
  fixed 64 KiB for small tensors weighs most). Attention is assumed fused
  (flash / memory-efficient on CUDA, flash on CPU): no [queries x keys] matrix.
Weights and caches are exact (the tests compare them with the bytes of the real tensors). `fits` adds a
safety factor and a fixed reserve for allocator fragmentation and kernel workspaces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.config import WanConfig
from ..model.fp8 import is_fp8
from ..model.kv_cache import resolve_policy

MODES = ("resident", "swap", "blocks")  # from most to least weight memory
SAFETY = 1.10  # allocator rounding and fragmentation on top of the prediction
RESERVE = 768 * 2 ** 20  # cuBLAS / attention workspaces, RNG state, small tensors
CLIP_TOKENS = 257  # CLIP-vision tokens of the Wan2.1 I2V image branch
GIB = 2 ** 30
SMALL = 2 ** 16  # timesteps, scalars and other tensors too small to model


def block_bytes(cfg: WanConfig, weight_dtype: torch.dtype) -> int:
    """Bytes of one transformer block. fp8: Linear weights 1 byte + a float32 scale, the rest in bf16."""
    d, f = cfg.dim, cfg.ffn_dim
    square = 8 + (2 if cfg.image_branch else 0)  # q, k, v, o of self- and cross-attention (+ k_img, v_img)
    matrix = square * d * d + 2 * d * f
    other = square * d + f + d  # biases
    other += 4 * d + (d if cfg.image_branch else 0) + (2 * d if cfg.cross_attn_norm else 0) + 6 * d  # norms, mod
    if is_fp8(weight_dtype):
        return matrix + 4 * (square + 2) + other * 2
    return (matrix + other) * weight_dtype.itemsize


def base_bytes(cfg: WanConfig, weight_dtype: torch.dtype) -> int:
    """Bytes of everything outside the blocks (kept in the compute dtype, bf16 for fp8 weights)."""
    d, p = cfg.dim, math.prod(cfg.patch_size)
    n = cfg.in_dim * d * p + d  # patch_embedding
    n += cfg.text_dim * d + d + d * d + d  # text_embedding
    n += cfg.freq_dim * d + d + d * d + d  # time_embedding
    n += 6 * d * d + 6 * d  # time_projection
    n += d * cfg.out_dim * p + cfg.out_dim * p + 2 * d  # head + head.modulation
    if cfg.image_branch:
        c = cfg.clip_dim
        n += 2 * c + c * c + c + c * d + d + 2 * d
    return n * (2 if is_fp8(weight_dtype) else weight_dtype.itemsize)


def cache_slots(frames: int, chunk_frames: int, window: int | None, first: int = 1, sized: bool = True) -> int:
    """Frame slots a KV cache holds at its largest: the window; the stream's length when it was sized
    (StreamOptions.max_frames); else the doubling capacity of causal/model/kv_cache.py for a stream of `first` primed
    frames and chunks of `chunk_frames` until `frames` frames."""
    if window is not None:
        return window
    if sized:
        return frames
    cap, need = 0, first
    while True:
        if need > cap:
            cap = max(need, 2 * cap)
        if need >= frames:
            return cap
        need += chunk_frames


@dataclass(frozen=True)
class MemoryPlan:
    config: WanConfig
    height: int  # pixels
    width: int
    chunk_frames: int
    frames: int  # latent frames the stream reaches (sizes the cache when there is no window)
    window: int | None
    sink: int
    experts: int
    mode: str
    weight_dtype: torch.dtype
    cache_dtype: torch.dtype
    blocks: int  # blocks on the compute device in "blocks" mode
    batch: int
    shared_cross: bool
    rope_policy: str
    weights: int
    kv_cache: int
    cross_cache: int
    activations: int
    part_bytes: tuple | None = None  # measured (non-block, block) weight bytes that replaced the prediction
    host: int = 0  # bytes in host memory: an upstream stream's parked KV cache
    parked_frames: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.cross_cache + self.activations

    def needed(self) -> int:
        """Free device memory this plan asks for, with the safety factor and reserve."""
        return int(self.total * SAFETY) + RESERVE

    def fits(self, free_bytes: int) -> bool:
        return self.needed() <= free_bytes

    def describe(self) -> str:
        m = {"resident": "all weights resident", "swap": "one expert's blocks resident, swapped when the expert changes",
             "blocks": f"{self.blocks} blocks resident, streamed"}[self.mode]
        cache = str(self.cache_dtype).replace("torch.", "")
        win = f"window {self.window}" if self.window else f"{self.frames} frames"
        return (f"{self.mode} ({m}) at {self.height}x{self.width}, {win}: peak {self.total / GIB:.1f} GiB = weights "
                f"{self.weights / GIB:.1f} + KV cache {self.kv_cache / GIB:.1f} ({cache}) + text cache "
                f"{self.cross_cache / GIB:.2f} + activations {self.activations / GIB:.1f} GiB"
                + (f"; host memory {self.host / GIB:.1f} GiB (parked KV caches)" if self.host else ""))


def activation_bytes(cfg: WanConfig, tokens: int, frames: int, keys: int, compute: torch.dtype,
                     cache_dtype: torch.dtype, rope_policy: str, batch: int = 1, sink_tokens: int = 0) -> int:
    """Peak live temporaries of one forward: `tokens` query tokens over `frames` frames, `keys` attended keys
    (`sink_tokens`: tokens of the sink frames the window policy re-rotates when the window moves)."""
    d, f, hd, s = cfg.dim, cfg.ffn_dim, cfg.head_dim, compute.itemsize
    up = 4 if s != 4 else 0  # an extra float32 copy where the compute dtype is not float32
    low = s if s != 4 else 0  # an extra compute-dtype copy of a float32 tensor
    L, K = batch * tokens, batch * keys
    persistent = 4 * L * d + 4 * L * hd + 4 * 13 * batch * frames * d  # residual (the block input), RoPE, time
    block = (4 + low) * L * d  # the modulated input in float32 and in the compute dtype
    ffn = 4 * L * d + 2 * s * L * f + s * L * d  # the block's new residual, hidden and activation, output
    # q and k are rotated in place (the table is memoised): only a float32 copy where the compute dtype is not float32
    attn = 3 * s * L * d + up * L * d + s * L * d
    if is_fp8(cache_dtype):  # keys and values dequantised to the compute dtype
        attn += 3 * s * K * d
    if rope_policy == "window":  # the kept sink keys are re-rotated into a new tensor when the window moves on
        attn += (up + 4) * batch * sink_tokens * d
    return persistent + block + max(ffn, attn) + SMALL


def plan_memory(cfg: WanConfig, height: int, width: int, *, chunk_frames: int = 3, frames: int = 21,
                window: int | None = None, sink: int = 0, experts: int = 2, mode: str = "resident",
                weight_dtype: torch.dtype = torch.bfloat16, cache_dtype: torch.dtype | None = None, blocks: int = 4,
                batch: int = 1, shared_cross: bool = False, rope_policy: str = "auto",
                part_bytes: tuple[int, int] | None = None, parked_frames: int = 0) -> MemoryPlan:
    """Predict the peak memory of a stream. `part_bytes` = (non-block bytes, bytes of the largest block) of the
    real experts overrides the prediction from the config (e.g. for files with extra fp8 layers).
    `parked_frames`: a continued stream's upstream has this many frames, its cache parked in host memory."""
    if mode not in MODES:
        raise ValueError(f"unknown offload mode {mode!r}; choose one of {MODES}")
    if height % 16 or width % 16 or height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive multiples of 16, got {height}x{width}")
    if blocks < 1:
        raise ValueError(f"blocks mode keeps at least 1 block on the device, got {blocks}")
    blocks = min(blocks, cfg.num_layers)
    compute = torch.bfloat16 if is_fp8(weight_dtype) else weight_dtype
    cache_dtype = cache_dtype or compute
    policy = resolve_policy(rope_policy, window)
    base, blk = part_bytes or (base_bytes(cfg, weight_dtype), block_bytes(cfg, weight_dtype))
    n_blocks = {"resident": experts * cfg.num_layers, "swap": cfg.num_layers, "blocks": blocks}[mode]
    weights = experts * base + n_blocks * blk

    pt, ph, pw = cfg.patch_size
    tpf = (height // 8 // ph) * (width // 8 // pw)
    slots = cache_slots(frames, chunk_frames, window)

    def cache_bytes(slots: int) -> int:  # one expert's KV cache of `slots` frame slots
        per_row = cfg.num_heads * slots * tpf * batch  # token rows of one layer's k (or v)
        kv = 2 * cfg.num_layers * per_row * cfg.head_dim * cache_dtype.itemsize
        if is_fp8(cache_dtype):
            kv += 2 * cfg.num_layers * per_row * 4
        if policy == "window" and window and sink:  # unrotated copy of the sink keys, in the compute dtype
            kv += cfg.num_layers * cfg.num_heads * batch * sink * tpf * cfg.head_dim * compute.itemsize
        return kv

    on_device = 1 if mode in ("swap", "blocks") else experts  # swap/blocks park the idle expert's cache on the host
    kv = on_device * cache_bytes(slots)
    host = (experts - on_device) * cache_bytes(slots)
    host += experts * cache_bytes(cache_slots(parked_frames, chunk_frames, window)) if parked_frames else 0
    text_tokens = cfg.text_len + (CLIP_TOKENS if cfg.image_branch else 0)
    cross = (1 if shared_cross else experts) * 2 * cfg.num_layers * batch * text_tokens * cfg.dim * compute.itemsize
    visible = min(slots, frames)
    act = activation_bytes(cfg, chunk_frames * tpf, chunk_frames // pt, visible * tpf, compute, cache_dtype, policy,
                           batch, sink * tpf)
    return MemoryPlan(cfg, height, width, chunk_frames, frames, window, sink, experts, mode, weight_dtype,
                      cache_dtype, blocks, batch, shared_cross, policy, weights, kv, cross, act, part_bytes, host,
                      parked_frames)


def choose_mode(free_bytes: int, cfg: WanConfig, height: int, width: int, **kw) -> MemoryPlan:
    """The first of resident, swap, blocks (with kw's block count, then fewer) that fits in `free_bytes`;
    if none fits, the smallest plan (check `plan.fits(free_bytes)`)."""
    kw.pop("mode", None)
    blocks = kw.pop("blocks", 4)
    plans = [plan_memory(cfg, height, width, mode=m, blocks=blocks, **kw) for m in ("resident", "swap")]
    plans += [plan_memory(cfg, height, width, mode="blocks", blocks=n, **kw)
              for n in range(min(blocks, cfg.num_layers), 0, -1)]
    for p in plans:
        if p.fits(free_bytes):
            return p
    return plans[-1]


def smaller_resolutions(height: int, width: int, steps: int = 8):
    """Lower resolutions of about the same aspect, multiples of 16, each ~10% fewer pixels per side."""
    seen = set()
    for i in range(1, steps + 1):
        k = 0.9 ** i
        h, w = max(16, round(height * k / 16) * 16), max(16, round(width * k / 16) * 16)
        if (h, w) not in seen and (h, w) != (height, width):
            seen.add((h, w))
            yield h, w


def alternative(plan: MemoryPlan, free_bytes: int) -> MemoryPlan | None:
    """The lightest change that fits in `free_bytes`: at this resolution a lighter mode, then an fp8 KV cache;
    then the same at lower resolutions. None if even the smallest tried does not fit."""
    modes = MODES[MODES.index(plan.mode):]
    caches = [plan.cache_dtype] + ([] if is_fp8(plan.cache_dtype) else [torch.float8_e4m3fn])
    for h, w in [(plan.height, plan.width), *smaller_resolutions(plan.height, plan.width)]:
        for cache in caches:
            for m in modes:
                candidate = replace_plan(plan, mode=m, cache_dtype=cache, height=h, width=w)
                if candidate != plan and candidate.fits(free_bytes):  # never the request that just failed
                    return candidate
    return None


def replace_plan(plan: MemoryPlan, **changes) -> MemoryPlan:
    """The same request with some inputs changed, re-planned."""
    keys = ("chunk_frames", "frames", "window", "sink", "experts", "mode", "weight_dtype", "cache_dtype", "blocks",
            "batch", "shared_cross", "part_bytes", "parked_frames")
    args = {k: getattr(plan, k) for k in keys}
    args["rope_policy"] = plan.rope_policy
    args.update({k: v for k, v in changes.items() if k in keys or k == "rope_policy"})
    return plan_memory(plan.config, changes.get("height", plan.height), changes.get("width", plan.width), **args)
