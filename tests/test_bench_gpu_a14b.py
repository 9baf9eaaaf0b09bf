"""The GPU benchmark's code path on CPU (--cpu-smoke), its refusal without CUDA, and its FLOP count."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from causalwan.causal.model.config import A14B
from causalwan.causal.model.kv_cache import KVCache
from tiny_models import tiny_model

PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu_a14b.py"
spec = importlib.util.spec_from_file_location("bench_gpu_a14b", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_blocks_mode_measures_the_loaders_block_count():
    from causalwan.causal.memory.offload import DEFAULT_BLOCKS

    assert bench.parse([]).resident_blocks == DEFAULT_BLOCKS == 4


def test_cpu_smoke_runs_every_mode_and_writes_json(tmp_path):
    out = tmp_path / "smoke.json"
    result = bench.main(["--cpu-smoke", "--out", str(out), "--peak-tflops", "1"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    modes = result["modes"]
    assert list(modes) == ["resident", "swap", "blocks"]
    assert modes["resident"]["slowdown_vs_resident"] == 1.0
    assert modes["resident"]["bytes_copied_per_chunk"] == 0
    assert modes["swap"]["residency"]["peak_experts"] == 1
    assert modes["blocks"]["residency"]["peak_blocks"] == 1
    # a chunk of the blocks mode streams every block of every forward: 10 forwards x 2 blocks
    assert modes["blocks"]["bytes_copied_per_chunk"] > modes["swap"]["bytes_copied_per_chunk"] > 0
    cfg = result["config"]
    assert (cfg["query_tokens"], cfg["key_tokens"]) == (3 * 6, 4 * 6)
    assert result["full_model"]["forwards_per_chunk"] == 10 and result["full_model"]["pixel_frames_per_chunk"] == 12
    assert result["mfu"] == pytest.approx(result["achieved_tflops"])  # peak 1 TFLOP/s given
    assert result["full_model"]["fps_resident"] == pytest.approx(12 / result["full_model"]["chunk_s_resident"])
    assert set(result["planned_full_model_gib"]) == {"resident", "swap", "blocks"}


def test_refuses_clearly_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as info:
        bench.main([])
    assert "needs a CUDA GPU" in str(info.value.code) and "--cpu-smoke" in str(info.value.code)


def test_peak_table():
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert bench.peak_tflops("NVIDIA H200", None) == 989.0
    assert bench.peak_tflops("NVIDIA H200 NVL", None) == 835.0
    assert bench.peak_tflops("NVIDIA H100 NVL", None) == 835.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert bench.peak_tflops("NVIDIA GeForce RTX 4090", None) == 165.0
    assert bench.peak_tflops("NVIDIA L40S", None) == 362.0
    assert bench.peak_tflops("Some GPU", None) is None and bench.peak_tflops("Some GPU", 100.0) == 100.0


def test_linear_flops_match_torch_flop_counter():
    model = tiny_model(1)
    cache = KVCache(2, window=7)
    kv = model.cross_kv(torch.randn(1, 6, 32))
    with torch.no_grad():
        model(torch.randn(1, 16, 4, 8, 12), torch.zeros(1), cross_kv=kv, cache=cache)
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.randn(1, 16, 3, 8, 12), torch.zeros(1), cross_kv=kv, cache=cache, start_frame=4)
    counted = sum(counter.get_flop_counts()["CausalWanModel.blocks.0"].values())
    flops = bench.block_flops(model.config, lq=3 * 24, lk=7 * 24, text_tokens=16)
    assert counted in (flops["linear"], flops["total"])  # torch's counter skips CPU fused attention
    assert flops["attention"] == 4 * 72 * 168 * 32 + 4 * 72 * 16 * 32


def test_a14b_block_flops():
    f = bench.block_flops(A14B, 4680, 32760, 512)
    assert f["linear"] == 2 * 4680 * (6 * 5120 * 5120 + 2 * 5120 * 13824)
    assert f["total"] == pytest.approx(5.99e12, rel=0.002)  # ~6 TFLOP per block per chunk forward
