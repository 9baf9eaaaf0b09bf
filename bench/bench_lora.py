"""What a LoRA costs as this pack applies it (side deltas on hooks, weights untouched) against a merge.

Prints JSON. Side by side in one run on one model (every Linear in the blocks patched, as distill and style LoRAs
do): the forward time of the base model, of the hooked model, and of a copy with the LoRA merged into its weights
(the independent path: W + s * alpha/r * up @ down); the largest difference between the hooked and the merged
outputs; the bytes the hooks add (the LoRA's factors) against the bytes a merge must keep to undo itself exactly
(a copy of every changed weight); and whether the base weights are bit-identical after the LoRA is taken off.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from causalwan.bench.timing import repeated
from causalwan.causal.model.config import WanConfig
from causalwan.causal.model.transformer import CausalWanModel
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.weights.lora import activate
from causalwan.causal.weights.lora_keys import read_lora


def timed(fn, repeat: int) -> float:
    """Fastest wall time in ms over `repeat` runs after one warm-up (the least disturbed by other load)."""
    return min(repeated(fn, repeat))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--latent", type=int, nargs=2, default=(30, 52), help="latent height width (480x832: 60 104)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = WanConfig(dim=a.dim, ffn_dim=a.dim * 3, num_heads=a.dim // 128, num_layers=a.layers, text_dim=256,
                    text_len=64, freq_dim=256)
    model = CausalWanModel(cfg).eval()
    targets = [k for k, v in model.state_dict().items() if k.startswith("blocks.") and k.endswith(".weight")
               and v.dim() == 2]
    g = torch.Generator().manual_seed(1)
    lora, alpha = {}, float(a.rank)
    for k in targets:
        out_f, in_f = model.state_dict()[k].shape
        base = "lora_unet_" + k[: -len(".weight")].replace(".", "_")
        lora[f"{base}.lora_down.weight"] = torch.randn(a.rank, in_f, generator=g) / in_f ** 0.5
        lora[f"{base}.lora_up.weight"] = torch.randn(out_f, a.rank, generator=g) * 0.01
        lora[f"{base}.alpha"] = torch.tensor(alpha)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_lora.safetensors"
        save_file(lora, str(path))
        lf = read_lora(path)

    h, w = a.latent
    x = torch.randn(1, 16, a.frames, h, w, generator=g)
    ctx = torch.randn(1, 32, cfg.text_dim, generator=g)
    t = torch.full((1,), 700.0)
    with torch.no_grad():
        kv = model.cross_kv(ctx)
        call = lambda m: m(x, t, cross_kv=m.cross_kv(ctx) if m is not model else kv)  # noqa: E731

        before = {k: v.clone() for k, v in model.state_dict().items()}
        base_ms = timed(lambda: call(model), a.repeat)
        experts = ExpertPair(low=model)
        activate(experts, [(lf, 0.0, 1.0)])
        kv = model.cross_kv(ctx)
        hooked_ms = timed(lambda: call(model), a.repeat)
        hooked = call(model)
        activate(experts, [])
        kv = model.cross_kv(ctx)
        exact = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        restored = torch.equal(call(model), call(copy.deepcopy(model)))

        merged = copy.deepcopy(model)
        sd = merged.state_dict()
        for k in targets:
            base = "lora_unet_" + k[: -len(".weight")].replace(".", "_")
            sd[k] += (alpha / a.rank) * lora[f"{base}.lora_up.weight"] @ lora[f"{base}.lora_down.weight"]
        merged_ms = timed(lambda: call(merged), a.repeat)
        diff = (hooked - call(merged)).abs().max().item()

    factor_bytes = sum(v.numel() * v.element_size() for k, v in lora.items() if not k.endswith(".alpha"))
    undo_bytes = sum(model.state_dict()[k].numel() * model.state_dict()[k].element_size() for k in targets)
    out = {"bench": "lora_side_delta", "dim": a.dim, "layers": a.layers, "rank": a.rank,
           "tokens": a.frames * h * w // 4, "patched_linears": len(targets), "threads": a.threads,
           "base_ms": round(base_ms, 1), "hooked_ms": round(hooked_ms, 1), "merged_ms": round(merged_ms, 1),
           "hooked_over_merged": round(hooked_ms / merged_ms, 3),
           "max_abs_diff_hooked_vs_merged": diff, "lora_factor_bytes": factor_bytes,
           "merge_undo_copy_bytes": undo_bytes, "base_weights_bit_identical_after_removal": exact,
           "base_output_bit_identical_after_removal": restored}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
