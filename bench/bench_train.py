"""DMD training speed and memory, with and without activation checkpointing. Prints JSON.

Each variant runs in its own process (so the memory high-water marks do not mix): a tiny expert pair as generator,
critic and teacher, `--warmup` steps, then `--steps` timed steps (gen_update_every 1: every step is a full
generator + critic update). Memory: the peak above what the process held after building the models (optimizer
states, gradients, caches, activations): on CUDA from torch.cuda.max_memory_allocated, on CPU from the peak
resident set (ru_maxrss, which also counts allocator slack), beside the planner's prediction of the same parts
(causal/memory/train_memory.py).

    python bench/bench_train.py                  # CPU, dim 128, 4 layers, 7 latent frames of 16x16
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def run_variant(a) -> dict:
    import psutil

    from causalwan.causal.memory.train_memory import plan_training
    from causalwan.causal.model.config import WanConfig
    from causalwan.causal.model.transformer import CausalWanModel
    from causalwan.causal.sampling.experts import ExpertPair
    from causalwan.causal.training.conditioning import PromptSet
    from causalwan.causal.training.config import TrainConfig
    from causalwan.causal.training.trainer import DMDTrainer

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = WanConfig(dim=a.dim, ffn_dim=4 * a.dim, num_heads=max(1, a.dim // 64), num_layers=a.layers, text_dim=64,
                    text_len=32, freq_dim=64)
    dev = a.device

    def pair():
        return ExpertPair(low=CausalWanModel(cfg).to(dev), high=CausalWanModel(cfg).to(dev), boundary=875.0)

    tc = TrainConfig(latent_frames=a.frames, latent_height=a.latent, latent_width=a.latent, gen_update_every=1,
                     guidance=3.0, activation_checkpointing=a.ckpt, mixed_precision=a.mixed, seed=1)
    tr = DMDTrainer(tc, pair(), pair(), PromptSet([torch.randn(12, 64)], torch.zeros(4, 64)))
    base = torch.cuda.memory_allocated() if dev == "cuda" else psutil.Process().memory_info().rss
    for _ in range(a.warmup):
        tr.step_once()
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        tr.step_once()
    if dev == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if dev == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    plan = plan_training(cfg, a.latent * 8, a.latent * 8, frames=a.frames, experts=2, activation_checkpointing=a.ckpt,
                         compute=torch.bfloat16 if a.mixed == "bf16" else torch.float32)
    return {"activation_checkpointing": a.ckpt, "steps_per_s": round(a.steps / dt, 3),
            "s_per_step": round(dt / a.steps, 3),
            "peak_above_models_mib": round(max(0, peak - base) / 2 ** 20, 1),
            "peak_total_mib": round(peak / 2 ** 20, 1),
            "predicted_above_models_mib": round((plan.optimizer + plan.gradients + plan.kv_cache + plan.activations)
                                                / 2 ** 20, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--frames", type=int, default=7)
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mixed", default="no", choices=["no", "bf16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ckpt", action="store_true", help=argparse.SUPPRESS)  # one variant (child process)
    ap.add_argument("--variant", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.variant:
        print(json.dumps(run_variant(a)))
        return {}
    rows = []
    for ckpt in (False, True):
        cmd = [sys.executable, __file__, "--variant", *(["--ckpt"] if ckpt else []), *(argv or sys.argv[1:])]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    result = {"device": a.device, "config": {"dim": a.dim, "layers": a.layers, "latent_frames": a.frames,
                                             "latent": [a.latent, a.latent], "experts": 2, "mixed": a.mixed},
              "variants": rows}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
