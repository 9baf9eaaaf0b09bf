"""The forward benchmark against diffusers runs on a tiny config, both models agree, and it reports what it says."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_forward_vs_diffusers.py"
spec = importlib.util.spec_from_file_location("bench_forward_vs_diffusers", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_tiny_run_reports_both_dtypes_and_parity():
    r = bench.main(["--dim", "64", "--heads", "2", "--ffn", "96", "--layers", "1", "--latent", "2", "4", "6",
                    "--text-tokens", "8", "--iters", "2"])
    assert set(r["dtypes"]) == {"fp32", "bf16"} and r["threads"] == 1 and r["config"]["tokens"] == 12
    fp32 = r["dtypes"]["fp32"]
    assert fp32["max_abs_diff"] <= 1e-4 and fp32["output_abs_mean"] > 0.1
    assert fp32["ours_ms"] > 0 and fp32["diffusers_ms"] > 0 and fp32["ratio"] > 0
    assert r["dtypes"]["bf16"]["max_abs_diff"] < 0.1 * r["dtypes"]["bf16"]["output_abs_mean"]
