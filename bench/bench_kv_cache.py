"""Per-chunk latency of one model call with the KV cache against recomputing the whole prefix every chunk.

Prints JSON. The cached call only computes the new chunk's tokens: its projections and FFN cost the same at every
chunk, and only its attention reads a growing cache (with an attention window even that is bounded, so the
windowed column is flat once the window is full). The recompute path runs a block-causal forward over every frame
so far, so its cost grows with the chunk index.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from causalwan.bench.timing import repeated
from causalwan.causal.model.config import WanConfig
from causalwan.causal.model.kv_cache import KVCache
from causalwan.causal.model.masks import block_causal_mask, token_mask
from causalwan.causal.model.transformer import CausalWanModel


def timed(fn, repeat: int) -> float:
    """Median wall time in ms over `repeat` runs after one warm-up."""
    return statistics.median(repeated(fn, repeat))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--chunk-frames", type=int, default=3)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--latent", type=int, nargs=2, default=(16, 24), help="latent height width")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--window", type=int, default=12, help="frames of the windowed cached column")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = WanConfig(dim=a.dim, ffn_dim=4 * a.dim, num_heads=a.dim // 64, num_layers=a.layers, text_dim=64,
                    text_len=32, freq_dim=64)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    model = CausalWanModel(cfg).to(a.device, dtype).eval()
    h, w = a.latent
    n = a.chunk_frames
    x = torch.randn(1, 16, a.chunks * n, h, w, device=a.device)
    ctx = torch.randn(1, 32, 64, device=a.device)
    cross = model.cross_kv(ctx)
    cache = KVCache(cfg.num_layers)
    windowed = KVCache(cfg.num_layers, window=a.window, sink=0)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    rows = []
    with torch.no_grad():
        for k in range(a.chunks):
            s = k * n
            chunk, t = x[:, :, s:s + n], torch.full((1,), 500.0, device=a.device)

            def cached():
                model(chunk, t, cross_kv=cross, cache=cache, start_frame=s)
                sync()

            def cached_window():
                model(chunk, t, cross_kv=cross, cache=windowed, start_frame=s)
                sync()

            prefix = x[:, :, : s + n]
            mask = token_mask(block_causal_mask([n] * (k + 1)), h * w // 4).to(a.device)

            def recompute():
                model(prefix, t, cross_kv=cross, attn_mask=mask)
                sync()

            rows.append({"chunk": k, "cached_ms": round(timed(cached, a.repeat), 3),
                         "cached_window_ms": round(timed(cached_window, a.repeat), 3),
                         "recompute_ms": round(timed(recompute, a.repeat), 3)})
    def quarter(key, last):  # median over the first or last quarter of the chunks: robust to a busy machine
        q = max(1, len(rows) // 4)
        vals = sorted(r[key] for r in (rows[-q:] if last else rows[:q]))
        return vals[len(vals) // 2]

    out = {
        "bench": "kv_cache_vs_recompute", "device": a.device, "dtype": str(dtype), "dim": a.dim, "layers": a.layers,
        "tokens_per_frame": h * w // 4, "chunk_frames": n, "window": a.window, "per_chunk": rows,
        "cached_ms_first_last_quarter": [quarter("cached_ms", False), quarter("cached_ms", True)],
        "recompute_ms_first_last_quarter": [quarter("recompute_ms", False), quarter("recompute_ms", True)],
        "cached_window_ms_first_last_quarter": [quarter("cached_window_ms", False), quarter("cached_window_ms", True)],
        "cached_growth": round(quarter("cached_ms", True) / quarter("cached_ms", False), 2),
        "cached_window_growth": round(quarter("cached_window_ms", True) / quarter("cached_window_ms", False), 2),
        "recompute_growth": round(quarter("recompute_ms", True) / quarter("recompute_ms", False), 2),
        "speedup_last_quarter": round(quarter("recompute_ms", True) / quarter("cached_ms", True), 2),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
