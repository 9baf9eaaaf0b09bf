"""Our DiT forward against diffusers' WanTransformer3DModel on the same weights, timed interleaved in one process.

    python bench/bench_forward_vs_diffusers.py                 # CPU, 1 thread, fp32 and bf16; prints JSON

Both models are built from one config and one state dict (ours, renamed to diffusers' keys), then each dtype
runs `--iters` rounds; in every round both models do one forward on the same inputs (a 3-latent-frame chunk with
its text, bidirectional attention as in diffusers), the order alternating between rounds, so slow phases of a
shared machine hit both alike. Reported: median ms per forward of each; `ratio` (ours / diffusers, below 1 is
faster): the median over rounds of the two side-by-side times' ratio, the figure least moved by other jobs on the
machine; also the ratio of the medians and of the best times; and the largest difference of the outputs (fp32:
the parity bound is 1e-4).
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from causalwan.bench.timing import timed
from causalwan.causal.model.config import WanConfig
from causalwan.causal.model.transformer import CausalWanModel
from causalwan.causal.training.export import diffusers_config
from causalwan.causal.weights import keymap

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def twins(cfg: WanConfig, seed: int = 0):
    import diffusers

    torch.manual_seed(seed)
    ours = CausalWanModel(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for p in ours.parameters():  # weights large enough that every layer shapes the output
            p.normal_(0, 0.05)
    ref = diffusers.WanTransformer3DModel.from_config(diffusers_config(cfg)).eval().requires_grad_(False)
    ref.load_state_dict({keymap.to_diffusers(k): v for k, v in ours.state_dict().items()}, strict=True)
    return ours, ref


def compare(ours, ref, dtype: torch.dtype, x, t, ctx, iters: int) -> dict:
    ours, ref = ours.to(dtype), ref.to(dtype)
    x, ctx = x.to(dtype), ctx.to(dtype)
    run_ours = lambda: ours(x, t, ctx)  # noqa: E731
    run_ref = lambda: ref(x, t, ctx, return_dict=False)[0]  # noqa: E731
    with torch.no_grad():
        a, b = run_ours(), run_ref()  # warm-up, and the outputs compared
        times = {"ours": [], "diffusers": []}
        for i in range(iters):
            pair = [("ours", run_ours), ("diffusers", run_ref)]
            for name, fn in (pair if i % 2 == 0 else pair[::-1]):
                times[name].append(timed(fn)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    paired = [o / r for o, r in zip(times["ours"], times["diffusers"])]  # the two runs of one round, side by side
    return {"ours_ms": round(med["ours"], 2), "diffusers_ms": round(med["diffusers"], 2),
            "ratio": round(statistics.median(paired), 4), "ratio_of_medians": round(med["ours"] / med["diffusers"], 4),
            "ratio_of_best": round(best["ours"] / best["diffusers"], 4),
            "max_abs_diff": (a.float() - b.float()).abs().max().item(), "output_abs_mean": a.float().abs().mean().item()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--latent", type=int, nargs=3, default=(3, 16, 24), help="latent frames height width")
    ap.add_argument("--text-tokens", type=int, default=64)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="fp32,bf16")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = WanConfig(dim=a.dim, num_heads=a.heads, ffn_dim=a.ffn, num_layers=a.layers, text_dim=a.dim,
                    text_len=a.text_tokens, freq_dim=256)
    ours, ref = twins(cfg)
    g = torch.Generator().manual_seed(1)
    f, h, w = a.latent
    x = torch.randn(1, cfg.in_dim, f, h, w, generator=g)
    ctx = torch.randn(1, a.text_tokens, cfg.text_dim, generator=g)
    t = torch.tensor([700.0])
    result = {"bench": "forward_vs_diffusers", "torch": torch.__version__, "threads": a.threads,
              "config": {"dim": a.dim, "heads": a.heads, "ffn": a.ffn, "layers": a.layers, "latent": [f, h, w],
                         "tokens": f * (h // 2) * (w // 2), "text_tokens": a.text_tokens},
              "dtypes": {}}
    for name in a.dtypes.split(","):
        result["dtypes"][name] = compare(ours, ref, DTYPES[name], x, t, ctx, a.iters)
    import diffusers

    result["diffusers"] = diffusers.__version__
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
