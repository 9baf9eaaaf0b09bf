"""Speed and memory of CausalWan2.2-I2V-A14B-sized layers on one CUDA GPU, per offload mode; prints JSON.

    python bench/bench_gpu_a14b.py                      # a few real-width blocks per expert, bf16, 480x832
    python bench/bench_gpu_a14b.py --cpu-smoke --out /tmp/x.json     # tiny CPU run of the same code path

Two experts of `--layers` blocks each at the real A14B width (dim 5120, 40 heads, ffn 13824), random bf16 weights,
stream a 480x832 video (1560 tokens per latent frame) through the real Stream loop: chunks of 3 latent frames,
8 denoising steps + 2 context passes per chunk, against a full KV cache of `--window` frames (21: 32760 keys).
Each offload mode (resident, swap, blocks) gets fresh experts; timings are taken once the window is full.

Reported: per-block forward time (CUDA events around each block), model FLOP utilisation against the GPU's dense
bf16 peak, time per chunk and frames per second extrapolated to 40 layers, peak memory per mode (measured, and
the planner's prediction for the same run and for the full 40-layer model), and each mode's slowdown against
resident. FLOPs count matrix products only: a linear layer 2*M*N*K, attention 4*Lq*Lk*head_dim per head
(QK^T and PV); the cross-attention keys/values of the text are cached, so per call only its q and o projections
and its attention run. Results go to bench/results/<gpu-name>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from causalwan.causal.model.config import WanConfig
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.model.fp8_storage import store_blocks_fp8
from causalwan.causal.memory.memory_plan import GIB, plan_memory
from causalwan.causal.model.transformer import CausalWanModel
from causalwan.causal.memory.offload import DEFAULT_BLOCKS, apply_offload
from causalwan.causal.sampling.stream import Stream, StreamOptions

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity); first match on the device name wins, so the NVL and PCIe
# cards (lower clocks and power) come before the SXM parts whose names they contain
GPU_PEAK_TFLOPS = [("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),
                   ("A100", 312.0), ("RTX 4090", 165.0), ("L40S", 362.0)]
FULL_LAYERS = 40
STEPS, CONTEXT_PASSES = 8, 2  # CausalWan2.2-I2V-A14B: 8 denoising steps, then the clean chunk into both caches
MODES = ("resident", "swap", "blocks")


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((p for key, p in GPU_PEAK_TFLOPS if key.lower() in name.lower()), None)


def block_flops(cfg: WanConfig, lq: int, lk: int, text_tokens: int) -> dict:
    """Matrix-product FLOPs of one block forward over lq query tokens attending to lk cached keys."""
    d, f = cfg.dim, cfg.ffn_dim
    linear = 2 * lq * d * d * 4 + 2 * lq * d * d * 2 + 2 * lq * d * f * 2  # self qkvo, cross q/o, FFN
    attention = 4 * lq * lk * d + 4 * lq * text_tokens * d  # heads x head_dim = dim
    return {"linear": linear, "attention": attention, "total": linear + attention}


class BlockTimer:
    """Times every block forward: CUDA events on GPUs (compute only, after any wait for a copy), else wall."""

    def __init__(self, experts: ExpertPair, cuda: bool):
        self.cuda, self.pending, self.times_ms, self.on = cuda, [], [], False
        self.handles = []
        for model in experts.modules().values():
            for blk in model.blocks:  # registered after the offload hooks: starts once the weights are there
                self.handles.append(blk.register_forward_pre_hook(self._start))
                self.handles.append(blk.register_forward_hook(self._stop))

    def _now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _start(self, module, args):
        if self.on:
            self.pending.append([self._now(), None])

    def _stop(self, module, args, out):
        if self.on:
            self.pending[-1][1] = self._now()

    def collect(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        for a, b in self.pending:
            self.times_ms.append(a.elapsed_time(b) if self.cuda else (b - a) * 1e3)
        self.pending = []


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def make_pair(cfg: WanConfig, dtype: torch.dtype, device: torch.device, fp8: bool, seed: int = 0) -> ExpertPair:
    models = []
    for i in range(2):
        torch.manual_seed(seed + i)
        with torch.device(device):  # initialise where it will run (fast on a GPU), then cast
            m = CausalWanModel(cfg)
        m = m.to(dtype).eval().requires_grad_(False)
        if fp8:
            store_blocks_fp8(m, dtype)
        models.append(m)
    return ExpertPair(low=models[1], high=models[0], boundary=875.0, share_cross_cache=True)


def run_mode(mode: str, a, cfg: WanConfig, device: torch.device, dtype: torch.dtype) -> dict:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    experts = make_pair(cfg, dtype, device, a.weight_dtype == "fp8")
    load_to = device if mode == "resident" else torch.device("cpu")
    for m in experts.modules().values():
        m.to(load_to)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    policy = apply_offload(experts, mode, device, blocks=a.resident_blocks, prefetch=a.prefetch)
    timer = BlockTimer(experts, cuda)
    cache_dtype = torch.float8_e4m3fn if a.cache_dtype == "fp8" else dtype
    opts = StreamOptions(chunk_frames=a.chunk_frames, window=a.window, rope_policy=a.rope_policy,
                         cache_dtype=cache_dtype)
    stream = Stream(experts, seed=0, options=opts, device=device)
    g = torch.Generator().manual_seed(1)
    stream.set_prompt(torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(device, dtype))
    lh, lw = a.height // 8, a.width // 8
    stream.prime(torch.randn(1, cfg.in_dim, 1, lh, lw, generator=g).to(device))
    fill = math.ceil((a.window - 1) / a.chunk_frames)  # chunks until every later chunk sees a full window
    for _ in range(fill):
        stream.next_chunk()
    sync(cuda)
    chunk_s, copied = [], policy.log.bytes_copied
    timer.on = True
    for _ in range(a.iters):
        sync(cuda)
        t0 = time.perf_counter()
        stream.next_chunk()
        sync(cuda)
        chunk_s.append(time.perf_counter() - t0)
    timer.collect()
    copied = (policy.log.bytes_copied - copied) / a.iters
    plan = plan_memory(cfg, a.height, a.width, chunk_frames=a.chunk_frames, frames=a.window, window=a.window,
                       experts=2, mode=mode, weight_dtype=torch.float8_e4m3fn if a.weight_dtype == "fp8" else dtype,
                       cache_dtype=cache_dtype, blocks=a.resident_blocks, shared_cross=True,
                       rope_policy=a.rope_policy)
    out = {
        "chunk_s": statistics.median(chunk_s),
        "block_ms_median": statistics.median(timer.times_ms),
        "block_ms_sum_per_chunk": sum(timer.times_ms) / a.iters,
        "peak_gib": torch.cuda.max_memory_allocated(device) / GIB if cuda else None,
        "planned_gib": plan.total / GIB,
        "bytes_copied_per_chunk": copied,
        "copy_gb_per_s": copied / 1e9 / statistics.median(chunk_s),
        "residency": policy.log.summary(),
    }
    policy.remove()
    del experts, stream, policy
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny config on the CPU (tests the code path only)")
    p.add_argument("--layers", type=int, default=6, help="blocks per expert in the benchmark (full model: 40)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--chunk-frames", type=int, default=3)
    p.add_argument("--window", type=int, default=21, help="latent frames in the KV cache (full window)")
    p.add_argument("--rope-policy", default="absolute", choices=("absolute", "window"))
    p.add_argument("--resident-blocks", type=int, default=DEFAULT_BLOCKS,
                   help="blocks on the GPU in 'blocks' mode (default: the model loader's)")
    p.add_argument("--prefetch", type=int, default=2, help="blocks copied ahead in 'swap' mode")
    p.add_argument("--weight-dtype", default="bf16", choices=("bf16", "fp8"))
    p.add_argument("--cache-dtype", default="bf16", choices=("bf16", "fp8"))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--iters", type=int, default=3, help="timed chunks per mode")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU dense bf16 peak if not in the table")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/<gpu-name>.json)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    if a.cpu_smoke:
        device, dtype, name = torch.device("cpu"), torch.float32, "cpu-smoke"
        cfg = WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, text_len=16, freq_dim=32)
        a.height, a.width, a.window, a.iters, a.resident_blocks = 32, 48, 4, 1, 1
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_gpu_a14b: this benchmark needs a CUDA GPU and none is available; "
                     "use --cpu-smoke for a tiny CPU run of the same code path")
        device, dtype = torch.device("cuda", torch.cuda.current_device()), torch.bfloat16
        name = torch.cuda.get_device_name(device)
        cfg = WanConfig(num_layers=a.layers)  # A14B width
    tpf = (a.height // 16) * (a.width // 16)
    lq, lk = a.chunk_frames * tpf, a.window * tpf
    flops = block_flops(cfg, lq, lk, cfg.text_len)
    peak = peak_tflops(name, a.peak_tflops)
    modes = {m: run_mode(m, a, cfg, device, dtype) for m in a.modes.split(",")}
    base = modes.get("resident") or next(iter(modes.values()))
    block_s = base["block_ms_median"] / 1e3
    forwards = STEPS + CONTEXT_PASSES
    overhead = max(0.0, base["chunk_s"] - base["block_ms_sum_per_chunk"] / 1e3) / forwards  # per forward
    chunk_full = forwards * (FULL_LAYERS * block_s + overhead)
    pixel_frames = 4 * a.chunk_frames
    for m in modes.values():
        m["slowdown_vs_resident"] = m["chunk_s"] / base["chunk_s"]
        m["chunk_s_40_layers"] = chunk_full * m["slowdown_vs_resident"]
        m["fps_40_layers"] = pixel_frames / m["chunk_s_40_layers"]
    full_plans = {}
    for m in MODES:
        plan = plan_memory(WanConfig(**{**cfg.to_dict(), "num_layers": FULL_LAYERS}), a.height, a.width,
                           chunk_frames=a.chunk_frames, frames=a.window, window=a.window, experts=2, mode=m,
                           weight_dtype=torch.float8_e4m3fn if a.weight_dtype == "fp8" else dtype,
                           cache_dtype=torch.float8_e4m3fn if a.cache_dtype == "fp8" else dtype,
                           blocks=a.resident_blocks, shared_cross=True, rope_policy=a.rope_policy)
        full_plans[m] = {"gib": plan.total / GIB, "line": plan.describe()}
    result = {
        "gpu": name, "torch": torch.__version__, "peak_tflops": peak,
        "config": {"dim": cfg.dim, "heads": cfg.num_heads, "ffn": cfg.ffn_dim, "bench_layers": cfg.num_layers,
                   "height": a.height, "width": a.width, "tokens_per_frame": tpf, "chunk_frames": a.chunk_frames,
                   "window_frames": a.window, "query_tokens": lq, "key_tokens": lk, "rope_policy": a.rope_policy,
                   "weights": "fp8" if a.weight_dtype == "fp8" else str(dtype).replace("torch.", ""),
                   "kv_cache": "fp8" if a.cache_dtype == "fp8" else str(dtype).replace("torch.", ""),
                   "resident_blocks": a.resident_blocks},
        "flops_per_block": flops,
        "per_block_forward_ms": base["block_ms_median"],
        "mfu": (flops["total"] / block_s / (peak * 1e12)) if peak else None,
        "achieved_tflops": flops["total"] / block_s / 1e12,
        "full_model": {"layers": FULL_LAYERS, "forwards_per_chunk": forwards, "pixel_frames_per_chunk": pixel_frames,
                       "chunk_s_resident": chunk_full, "fps_resident": pixel_frames / chunk_full,
                       "non_block_overhead_ms_per_forward": overhead * 1e3,
                       "note": "40-layer figures = measured per-block time x 40 + measured per-forward overhead; "
                               "offload modes scaled by their slowdown measured on the benchmark layers"},
        "modes": modes,
        "planned_full_model_gib": full_plans,
    }
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / (re.sub(r"[^A-Za-z0-9]+", "-", name) + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
