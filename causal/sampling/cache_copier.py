"""Moves a stream's KV caches between the compute device and host memory (under swap/blocks offload the idle
expert's cache waits on the host; causal/sampling/stream.py decides when, this file how).

On CUDA both directions run on one side stream, so they overlap the compute stream (as the weights do,
causal/memory/weight_slot.py):
- every move first makes the side stream wait for the compute work queued so far (for a copy out: the forward
  that wrote the cache; a copy in is issued before the forward it should overlap, so it does not wait for it).
- copy in: the device buffers are allocated on the side stream and filled from the host copy; an event is
  recorded, and `ready` makes the compute stream wait for it before the cache is used and marks the buffers as
  used by the compute stream (record_stream), so freeing them later cannot recycle memory compute still reads.
- copy out: into pinned host buffers; the device buffers are marked as used by the side stream, so dropping
  them cannot hand their memory out before the copy has read them. A later copy in reads the host buffers on the
  same side stream, after the copy out.
Elsewhere (CPU) every copy is a plain synchronous copy and `ready` does nothing: same results, bit for bit.
"""
from __future__ import annotations

import torch

from ..model.kv_cache import KVCache

HOST = torch.device("cpu")  # where parked caches wait


class CacheCopier:
    """Parks KV caches in host memory and brings them back; on CUDA on a side stream, elsewhere synchronously."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def move(self, cache: KVCache, to_host: bool) -> KVCache:
        """`cache` copied to host memory (parked) or back onto the compute device; its copy may still be in
        flight (call `ready` before the compute stream uses a cache brought back)."""
        if self.stream is None:
            return cache.copy_to(HOST if to_host else self.device, parked=to_host)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the work that wrote or freed memory
        copy = self._copy_out if to_host else self._copy_in
        with torch.cuda.stream(self.stream):
            moved = cache.copy_to(HOST if to_host else self.device, parked=to_host, copy=copy)
        moved.event = torch.cuda.Event()
        moved.event.record(self.stream)
        return moved

    def _copy_out(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for t in tensors:
            host = torch.empty(t.shape, dtype=t.dtype, device=HOST, pin_memory=True)
            host.copy_(t, non_blocking=True)
            t.record_stream(self.stream)
            out.append(host)
        return out

    def _copy_in(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t.to(self.device, non_blocking=True) for t in tensors]

    def room(self, nbytes: int) -> bool:
        """Whether a second cache of `nbytes` fits on the device beside the running one (with as much again to
        spare for the forward), so it can be copied in early; always on the CPU, where copies are synchronous."""
        if self.stream is None:
            return True
        free, _ = torch.cuda.mem_get_info(self.device)
        return free >= 2 * nbytes

    def ready(self, cache: KVCache) -> None:
        """Make the compute stream wait until `cache` has landed, before it is used."""
        if cache.event is None:
            return
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(cache.event)
        for t in cache.buffers():
            t.record_stream(compute)
        cache.event = None
