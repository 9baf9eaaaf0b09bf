"""Host memory for the KV caches that wait there: a continued stream's upstream parks a copy of its caches in
host memory for a re-queue (Stream.fork), and swap/blocks park the idle expert's cache there. At A14B size that is
tens of GiB on top of the weights' masters, so it is checked against the memory the system has available before
anything is copied, and refused with the planner's lighter options instead of exhausting the host.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..model.fp8 import is_fp8
from .memory_plan import GIB, MemoryPlan, replace_plan

MEMINFO = Path("/proc/meminfo")


def host_available() -> int | None:
    """Bytes of host memory available to new allocations without swapping (Linux MemAvailable; psutil
    elsewhere), or None when the system does not say."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def check_host_room(plan: MemoryPlan, already: int = 0, available: int | None = None) -> None:
    """Raise MemoryError when the host bytes `plan` needs, less the `already` held there, exceed what is
    available (default: host_available(); no check when unknown)."""
    available = host_available() if available is None else available
    need = plan.host - already
    if available is None or need <= available:
        return
    options = "a shorter attention window (window_frames)"
    if not is_fp8(plan.cache_dtype):
        lighter = replace_plan(plan, cache_dtype=torch.float8_e4m3fn).host - already
        options = f"kv_cache fp8_e4m3fn in the sampler (needs {lighter / GIB:.1f} GiB), or " + options
    raise MemoryError(f"the KV caches that wait in host memory need {need / GIB:.1f} GiB more, but only "
                      f"{available / GIB:.1f} GiB of host memory is available; use {options}, fewer chunks, or "
                      f"close other programs")
