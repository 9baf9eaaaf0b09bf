"""A long windowed stream: time and memory per chunk over many chunks (default 100). Prints JSON.

With an attention window the KV caches are allocated once and never grow, and the clean-frame history is
trimmed to the window, so memory must be flat once the window has filled.
"""
from __future__ import annotations

import argparse
import gc
import json
import time

import psutil
import torch

from causalwan.causal.model.config import WanConfig
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.model.transformer import CausalWanModel
from causalwan.causal.sampling.stream import Stream, StreamOptions


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument("--sink", type=int, default=3)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--latent", type=int, nargs=2, default=(8, 12))
    ap.add_argument("--policy", default="window", choices=["window", "absolute"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = WanConfig(dim=a.dim, ffn_dim=4 * a.dim, num_heads=max(1, a.dim // 32), num_layers=a.layers, text_dim=64,
                    text_len=32, freq_dim=64)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    pair = ExpertPair(low=CausalWanModel(cfg).to(a.device, dtype).eval(),
                      high=CausalWanModel(cfg).to(a.device, dtype).eval(), boundary=875.0)
    s = Stream(pair, seed=0, options=StreamOptions(window=a.window, sink=a.sink, rope_policy=a.policy))
    s.set_prompt(torch.randn(1, 20, 64, device=a.device))
    s.prime(torch.randn(1, 16, 1, *a.latent, device=a.device))
    proc = psutil.Process()
    rows = []
    for k in range(a.chunks):
        t0 = time.perf_counter()
        s.next_chunk()
        if a.device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        gc.collect()
        row = {"chunk": k, "ms": round(dt * 1000, 2), "cache_bytes": s.cache_bytes(),
               "history_frames": sum(c.shape[2] for _, c in s.history), "rss_mb": round(proc.memory_info().rss / 2**20, 1)}
        if a.device == "cuda":
            row["cuda_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        rows.append(row)
    fill = next(i for i, r in enumerate(rows) if r["cache_bytes"] == rows[-1]["cache_bytes"])
    after = rows[max(fill, 10):]
    out = {
        "bench": "long_windowed_stream", "device": a.device, "chunks": a.chunks, "window": a.window, "sink": a.sink,
        "policy": a.policy, "frames_generated": s.next_frame,
        "cache_bytes_first_last": [rows[0]["cache_bytes"], rows[-1]["cache_bytes"]],
        "window_filled_at_chunk": fill,
        "rss_mb_after_fill_min_max": [min(r["rss_mb"] for r in after), max(r["rss_mb"] for r in after)],
        "ms_per_chunk_first10_last10": [round(sum(r["ms"] for r in rows[:10]) / 10, 2),
                                        round(sum(r["ms"] for r in rows[-10:]) / 10, 2)],
        "per_chunk": rows,
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
