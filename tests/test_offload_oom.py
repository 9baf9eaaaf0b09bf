"""Out-of-memory errors become advice from the planner (simulated exceptions; no GPU needed)."""
import gc
import weakref

import pytest
import torch

from causalwan.causal.model.config import A14B
from causalwan.causal.memory.memory_plan import GIB, plan_memory
from causalwan.causal.memory.oom import CausalWanOutOfMemory, explain_oom, is_oom, oom_message

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.11 GiB\nmore text"


def test_cuda_oom_names_the_mode_and_resolution_to_try():
    plan = plan_memory(A14B, 480, 832, window=21)
    with pytest.raises(CausalWanOutOfMemory) as info:
        with explain_oom(plan, budget=80 * GIB):
            raise torch.OutOfMemoryError(CUDA_OOM)
    msg = str(info.value)
    assert msg.startswith("CausalWan ran out of memory in offload mode 'resident' at 480x832 (planned peak 104.6 GiB, "
                          "about 80.0 GiB usable). Try offload mode 'swap' at 480x832 (planned peak 53.4")
    assert msg.endswith("Original error: CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of "
                        "79.11 GiB")
    assert isinstance(info.value, torch.cuda.OutOfMemoryError)  # callers that handle OOM still do
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_runtime_error_saying_out_of_memory_is_converted_and_suggests_fp8_then_lower_resolution():
    plan = plan_memory(A14B, 480, 832, window=21, mode="blocks")
    with pytest.raises(CausalWanOutOfMemory, match="Try offload mode 'blocks', blocks 4 at 480x832, fp8 KV cache"):
        with explain_oom(plan, budget=40 * GIB):
            raise RuntimeError("HIP error: out of memory")
    msg = oom_message(plan, 16 * GIB)
    assert "Try offload mode 'blocks', blocks 4 at 384x672, fp8 KV cache" in msg  # ~10% steps, aspect kept
    lower = plan_memory(A14B, 384, 672, window=21, mode="blocks", cache_dtype=torch.float8_e4m3fn)
    assert lower.fits(16 * GIB) and f"(planned peak {lower.total / GIB:.1f} GiB)" in msg
    assert not plan_memory(A14B, 432, 752, window=21, mode="blocks", cache_dtype=torch.float8_e4m3fn).fits(16 * GIB)
    assert "Try" in oom_message(plan, 40 * GIB) and "(planned peak 30.1" not in oom_message(plan, 40 * GIB).split(
        "Try")[1]  # the request that failed is never the advice, even where the plan says it fits


def test_nothing_fits():
    plan = plan_memory(A14B, 480, 832, window=21, mode="blocks")
    msg = oom_message(plan, 4 * GIB, "out of memory")
    assert "does not fit: free memory on the device (unload other models), use fp8 weights" in msg


def test_without_a_budget_suggests_something_lighter_than_what_failed():
    plan = plan_memory(A14B, 480, 832, window=21, mode="swap")
    msg = oom_message(plan, None)
    assert "in offload mode 'swap' at 480x832" in msg and "Try offload mode 'blocks', blocks 4 at 480x832" in msg


def test_other_errors_pass_through_and_frames_are_released():
    plan = plan_memory(A14B, 480, 832, window=21)
    with pytest.raises(ValueError, match="shape mismatch"):
        with explain_oom(plan, budget=80 * GIB):
            raise ValueError("shape mismatch")
    assert is_oom(RuntimeError("CUDA error: out of memory")) and not is_oom(RuntimeError("device-side assert"))

    class Big:
        pass

    ref = []

    def forward():
        big = Big()  # stands for the activations of the failed call
        ref.append(weakref.ref(big))
        raise torch.OutOfMemoryError("CUDA out of memory")

    try:
        with explain_oom(plan, budget=80 * GIB):
            forward()
    except CausalWanOutOfMemory as e:
        kept = e  # ComfyUI keeps the error; it must not keep the failed frames
    gc.collect()
    assert kept is not None and ref[0]() is None
