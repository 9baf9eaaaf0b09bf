"""Peak memory (RSS) of loading a transformer checkpoint, against the file size and the loaded model's size.

Prints JSON. A mid-size Wan config (default dim 1024, 10 layers: ~170M parameters, ~340 MB in bf16) is written into
a temp dir as a ComfyUI-style single file (bf16, and scaled fp8), then each case is loaded in a FRESH subprocess so
the RSS is that of the load alone: baseline after imports (and torch's one-time meta-device setup), peak (VmHWM)
during load_transformer, and RSS after every weight has been touched (memory-mapped pages count once read).
Target: peak - baseline <= 1.15 x the file size when the file's dtype is kept (the weights are never held twice);
converting cases are reported against the loaded model's size (peak_over_model).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(path: str, dtype: str) -> dict:
    from causalwan.causal.model.config import TINY
    from causalwan.causal.model.transformer import CausalWanModel
    from causalwan.causal.weights.loader import load_transformer

    with torch.device("meta"):  # torch's one-time cost of the meta-device mode (it imports torch._dynamo)
        CausalWanModel(TINY)
    base = rss_kib("VmRSS")
    t0 = time.perf_counter()
    model = load_transformer(path, dtype=None if dtype == "file" else dtype)
    seconds = time.perf_counter() - t0
    peak_load = rss_kib("VmHWM")
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.reshape(-1).view(torch.uint8).max()  # fault in every memory-mapped page, without a converted copy
    model_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return {"seconds": round(seconds, 3), "baseline_mib": base / 1024, "peak_during_load_mib": peak_load / 1024,
            "rss_after_touch_mib": rss_kib("VmRSS") / 1024, "peak_mib": rss_kib("VmHWM") / 1024,
            "model_bytes": model_bytes, "model_dtype": str(model.dtype),
            "fp8_layers": model.weights_info["fp8_layers"]}


def write_checkpoint(folder: Path, dim: int, layers: int, fp8: bool) -> Path:
    from safetensors.torch import save_file

    from causalwan.causal.model.config import WanConfig
    from causalwan.causal.model.fp8 import quantize
    from causalwan.causal.model.transformer import CausalWanModel

    cfg = WanConfig(dim=dim, ffn_dim=4 * dim, num_heads=dim // 128, num_layers=layers)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CausalWanModel(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, s in shapes.items():
        t = (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16)
        if fp8 and k.startswith("blocks.") and k.endswith(".weight") and len(s) == 2:
            q, scale = quantize(t)
            sd["model.diffusion_model." + k] = q
            sd["model.diffusion_model." + k[: -len("weight")] + "scale_weight"] = scale
        else:
            sd["model.diffusion_model." + k] = t
    if fp8:
        sd["model.diffusion_model.scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    path = folder / f"wan_{dim}x{layers}_{'fp8_scaled' if fp8 else 'bf16'}.safetensors"
    save_file(sd, str(path))
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--child", nargs=2, metavar=("PATH", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)))
        return {}
    cases = [("bf16", "file"), ("bf16", "fp32"), ("bf16", "fp8_e4m3fn"), ("fp8_scaled", "file")]
    results = {"config": {"dim": a.dim, "layers": a.layers, "ffn_dim": 4 * a.dim}, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"bf16": write_checkpoint(Path(tmp), a.dim, a.layers, False),
                 "fp8_scaled": write_checkpoint(Path(tmp), a.dim, a.layers, True)}
        for kind, dtype in cases:
            path = files[kind]
            out = subprocess.run([sys.executable, __file__, "--child", str(path), dtype], capture_output=True,
                                 text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            if out.returncode:
                raise RuntimeError(f"the {kind} -> {dtype} load failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            size = path.stat().st_size
            delta = (r["peak_mib"] - r["baseline_mib"]) * 2 ** 20
            r.update({"file": kind, "load_dtype": dtype, "file_bytes": size,
                      "peak_over_file": round(delta / size, 3),
                      "peak_over_model": round(delta / r["model_bytes"], 3)})
            results["cases"].append(r)
    results["target"] = "peak_over_file <= 1.15 when the file dtype is kept"
    results["ok"] = all(c["peak_over_file"] <= 1.15 for c in results["cases"] if c["load_dtype"] == "file")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
