"""Moves a stream's KV caches between the compute device and host memory (under swap/blocks offload the idle
expert's cache waits on the host; causal/sampling/stream.py decides when, this file how).

A switch of expert (A's last call before B's) is a hand-over, layer by layer, during A's call: once A's forward is
done with layer i (KVCache.layer_done), A's layer i is copied out to host memory and B's parked layer i is copied
into the very device buffers A's layer leaves (same shapes and dtypes: both experts' caches of one stream). So B's
cache arrives while A computes, and the device never holds more than one cache: no layer is allocated on the
device for it. Where B's buffers do not fit A's (B's cache not allocated yet, or smaller: a window-less cache that
grows), A's layers are only copied out and freed, and B is copied in at its own call.

On CUDA both directions run on one side stream, so they overlap the compute stream (as the weights do,
causal/memory/weight_slot.py):
- every move first makes the side stream wait for the compute work queued so far (a copy out: the forward that
  wrote the cache; a layer of a hand-over: the work of A's forward up to that layer).
- copy in: the device buffers are allocated on the compute stream (so memory freed by compute is recycled in its
  order, as the weights' copier does) and filled on the side stream from the host copy; an event is recorded,
  and `ready` makes the compute stream wait for it before the cache is used. A hand-over fills A's buffers in
  place: the side stream copies A's layer out before it copies B's layer in, and the compute stream no longer
  reads that layer in A's forward.
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
        moved = cache.copy_to(HOST if to_host else self.device, parked=to_host,
                              copy=lambda ts: [self._to_host(t) if to_host else self._to_device(t) for t in ts])
        moved.event = self._event()
        return moved

    def handover(self, out: KVCache, into: KVCache) -> "Handover":
        """Start a switch: `out` (the cache of the expert about to run its last call) leaves the device layer by
        layer during that call, and `into` (parked) takes its buffers; `finish` it after the call."""
        return Handover(self, out, into)

    def _to_host(self, t: torch.Tensor) -> torch.Tensor:
        """A host copy of device tensor t (on CUDA pinned, on the side stream, which has waited for compute)."""
        if self.stream is None:
            return t.to(HOST, copy=True)
        host = torch.empty(t.shape, dtype=t.dtype, device=HOST, pin_memory=True)
        with torch.cuda.stream(self.stream):
            host.copy_(t, non_blocking=True)
        t.record_stream(self.stream)  # freeing t waits for this read
        return host

    def _to_device(self, host: torch.Tensor, into: torch.Tensor | None = None) -> torch.Tensor:
        """Host tensor `host` on the device: written into `into` (a buffer the compute stream is done with) or a
        new buffer allocated on the compute stream; on CUDA filled on the side stream."""
        d = torch.empty_like(host, device=self.device) if into is None else into
        if self.stream is None:
            return d.copy_(host)
        with torch.cuda.stream(self.stream):
            d.copy_(host, non_blocking=True)
        d.record_stream(self.stream)
        return d

    def _event(self):
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def ready(self, cache: KVCache) -> None:
        """Make the compute stream wait until `cache` has landed, before it is used."""
        if cache.event is None:
            return
        torch.cuda.current_stream(self.device).wait_event(cache.event)  # the buffers were allocated on it
        cache.event = None


class Handover:
    """One switch of expert: `out` leaves the device layer by layer as its forward is done with each layer, and
    `into` (parked) is copied into the buffers `out` leaves, when they fit (decided once `out`'s forward has
    planned its chunk, so any growth of `out`'s cache is seen)."""

    def __init__(self, copier: CacheCopier, out: KVCache, into: KVCache):
        self.copier, self.out, self.into = copier, out, into
        self.done: set[int] = set()
        self.reuse: bool | None = None  # whether `into` comes in now, into `out`'s buffers
        out.layer_done = self.layer

    def _fits(self) -> bool:
        """Every buffer of `into` has a buffer of `out` of the same name, shape and dtype in its layer."""
        if not self.into.parked or not self.into.k:
            return False
        for i in range(self.out.num_layers):
            leaving = self.out.layer_buffers(i)
            for name, t in self.into.layer_buffers(i).items():
                d = leaving.get(name)
                if d is None or d.shape != t.shape or d.dtype != t.dtype:
                    return False
        return True

    def layer(self, i: int) -> None:
        """`out`'s forward is done with layer i: out's layer to the host, into's layer into its buffers."""
        if i in self.done:
            return
        if self.reuse is None:
            self.reuse = self._fits()
        self.done.add(i)
        if self.copier.stream is not None:  # the side stream first waits for the forward's work on this layer
            self.copier.stream.wait_stream(torch.cuda.current_stream(self.copier.device))
        leaving = self.out.layer_buffers(i)
        for name, d in leaving.items():
            getattr(self.out, name)[i] = self.copier._to_host(d)
        if self.reuse:
            for name, host in self.into.layer_buffers(i).items():
                getattr(self.into, name)[i] = self.copier._to_device(host, into=leaving[name])

    def finish(self) -> None:
        """After `out`'s call (also one that failed part-way): hand over the layers left; `out` is parked, and
        `into` is on the device if it came in (its copy may still be in flight: `CacheCopier.ready`)."""
        for i in range(self.out.num_layers):
            self.layer(i)
        self.out.layer_done = None
        self.out.parked = True
        if self.reuse:
            self.into.parked = False
            if self.copier.stream is not None:
                self.into.event = self.copier._event()
