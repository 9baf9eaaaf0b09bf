"""Out-of-memory errors that say what to try instead.

    with explain_oom(plan):            # plan: the MemoryPlan of what is running (causal/memory/memory_plan.py)
        stream.next_chunk()

turns torch.OutOfMemoryError (CUDA's, or any RuntimeError whose text says "out of memory", as other backends
raise) into CausalWanOutOfMemory, whose message names the mode and resolution that ran out and the lightest
change the planner finds that fits: another offload mode at the same resolution, an fp8 KV cache, or a lower
resolution. CausalWanOutOfMemory is itself a torch.OutOfMemoryError, so callers that handle OOM still do.
The original exception stays attached as context but without its traceback: that traceback holds the frames
whose tensors filled the memory, and would keep them alive as long as the error is kept (ComfyUI keeps it).
"""
from __future__ import annotations

import torch

from ..model.fp8 import is_fp8
from .memory_plan import GIB, MemoryPlan, alternative


class CausalWanOutOfMemory(torch.OutOfMemoryError):
    """Out of memory, with advice from the planner."""


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def device_budget(device=None) -> int | None:
    """Bytes a new plan could use on a CUDA device: free memory plus what PyTorch holds there (it would be
    given back first). None without CUDA."""
    if not torch.cuda.is_available():
        return None
    device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device)


def _what(plan: MemoryPlan) -> str:
    extra = ", blocks " + str(plan.blocks) if plan.mode == "blocks" else ""
    cache = ", fp8 KV cache" if plan.cache_dtype is not None and is_fp8(plan.cache_dtype) else ""
    return f"offload mode '{plan.mode}'{extra} at {plan.height}x{plan.width}{cache}"


def oom_message(plan: MemoryPlan, budget: int | None, original: str = "") -> str:
    """The text of the error: what ran out, what to try, and the original message."""
    if budget is None:  # no measure of the device: anything lighter than what just failed
        budget = plan.needed() - 1
    head = (f"CausalWan ran out of memory in {_what(plan)} (planned peak {plan.total / GIB:.1f} GiB, about "
            f"{budget / GIB:.1f} GiB usable).")
    alt = alternative(plan, budget)
    if alt is None:
        advice = (" Even the lightest mode at a much lower resolution does not fit: free memory on the device "
                  "(unload other models), use fp8 weights, or set a shorter attention window.")
    else:
        advice = f" Try {_what(alt)} (planned peak {alt.total / GIB:.1f} GiB)."
    tail = f" Original error: {original.strip().splitlines()[0]}" if original.strip() else ""
    return head + advice + tail


class explain_oom:  # noqa: N801  (used as a context manager, like contextlib's)
    """Re-raise an out-of-memory error inside the block as CausalWanOutOfMemory with the planner's advice.
    budget: usable bytes of the device (default: free + held by PyTorch on CUDA)."""

    def __init__(self, plan: MemoryPlan, budget: int | None = None, device=None):
        self.plan, self.budget, self.device = plan, budget, device

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not is_oom(exc) or isinstance(exc, CausalWanOutOfMemory):
            return False
        exc.__traceback__ = tb = None  # noqa: F841  let the tensors of the failed frames go
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        budget = self.budget if self.budget is not None else device_budget(self.device)
        raise CausalWanOutOfMemory(oom_message(self.plan, budget, str(exc))) from exc
