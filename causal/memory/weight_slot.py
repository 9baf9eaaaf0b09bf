"""The weights of one part of a model (a transformer block, or everything outside the blocks) that move together.

A slot keeps a master copy of every parameter and buffer on the storage device (on CUDA machines views into the
expert's pinned host arena, causal/memory/host_arena.py) and points the module at either the masters ("home") or at copies on the compute device ("loaded").
Weights are read-only at inference, so an eviction only points the module back at its masters; nothing is copied
back. On CUDA a load allocates on the compute stream, copies on a side stream (so it overlaps the blocks that are
running) and records an event that the compute stream waits for before the weights are used (`wait`). On CPU, or
any device equal to the storage device, a load makes a plain copy so the same code path runs (and tests can tell
a loaded tensor from its master), or nothing at all when `copy_same_device` is off.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .host_arena import HostArena, arena_bytes


class Copier:
    """Copies masters onto the compute device; on CUDA on a side stream, elsewhere synchronously."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def copy(self, masters: list[torch.Tensor]) -> tuple[list[torch.Tensor], object]:
        if self.stream is None:
            return [m.to(self.device, copy=True) for m in masters], None
        compute = torch.cuda.current_stream(self.device)
        # allocate on the compute stream so freed copies are recycled in its order; the side stream first waits
        # for the compute work queued so far, which may still read the memory these tensors reuse
        dsts = [torch.empty_like(m, device=self.device) for m in masters]
        self.stream.wait_stream(compute)
        with torch.cuda.stream(self.stream):
            for d, m in zip(dsts, masters):
                d.copy_(m, non_blocking=True)
        event = torch.cuda.Event()
        event.record(self.stream)
        return dsts, event


def _tensors(module: nn.Module, skip: str | None) -> list[tuple[nn.Module, str, bool]]:
    """(owner, name, is_parameter) of every parameter and buffer under `module`, leaving out the child `skip`."""
    out = []
    for path, mod in module.named_modules():
        if skip is not None and (path == skip or path.startswith(skip + ".")):
            continue
        out += [(mod, n, True) for n, p in mod._parameters.items() if p is not None]
        out += [(mod, n, False) for n, b in mod._buffers.items() if b is not None]
    return out


def arena_size(module: nn.Module) -> int:
    """Bytes of a host arena that takes the masters of every WeightSlot over `module`."""
    return sum(arena_bytes(WeightSlot._get(owner, name)) for owner, name, _ in _tensors(module, None))


class WeightSlot:
    """One movable set of weights: `module`'s parameters and buffers, except those under the child `skip`."""

    def __init__(self, module: nn.Module, storage: torch.device, arena: HostArena | None = None,
                 skip: str | None = None):
        """arena: where the masters go when `storage` is the CPU (one pinned arena per expert on CUDA machines);
        None keeps them where they are (moved to `storage` if need be)."""
        self.entries = _tensors(module, skip)
        self.masters = []
        for owner, name, _ in self.entries:
            t = self._get(owner, name).detach()
            self.masters.append(arena.take(t) if arena is not None and storage.type == "cpu" else t.to(storage))
        self.nbytes = sum(m.numel() * m.element_size() for m in self.masters)
        self.loaded = False
        self._event = None
        self._device = None  # compute device of the copy in flight
        self._point(self.masters)

    @staticmethod
    def _get(owner: nn.Module, name: str) -> torch.Tensor:
        return owner._parameters[name] if name in owner._parameters else owner._buffers[name]

    def _point(self, tensors: list[torch.Tensor]) -> None:
        for (owner, name, is_param), t in zip(self.entries, tensors):
            if is_param:
                p = owner._parameters[name]
                if torch._has_compatible_shallow_copy_type(p, t):  # cpu <-> cuda: keep the Parameter object
                    p.data = t
                else:  # e.g. to "meta" on release: a new Parameter, as nn.Module.to does
                    owner._parameters[name] = nn.Parameter(t, requires_grad=p.requires_grad)
            else:
                owner._buffers[name] = t

    def load(self, copier: Copier, copy_same_device: bool = True) -> int:
        """Start putting the weights on the compute device; returns the bytes copied (0 if already loaded)."""
        if self.loaded:
            return 0
        self.loaded = True
        same = all(m.device == copier.device for m in self.masters)
        if same and not copy_same_device:
            return 0
        copies, self._event = copier.copy(self.masters)
        self._device = copier.device
        self._point(copies)
        return self.nbytes

    def wait(self) -> None:
        """Make the current (compute) stream wait until the copy has landed."""
        if self._event is not None:
            torch.cuda.current_stream(self._device).wait_event(self._event)
            self._event = None

    def evict(self) -> None:
        """Point the module back at its masters; the compute-device copies are freed."""
        if not self.loaded:
            return
        self.wait()  # a copy still in flight must land before its memory can be handed out again
        self._point(self.masters)
        self.loaded = False

    def restore(self, device: torch.device) -> None:
        """Leave offloading: put the masters themselves on `device` (used when a policy is removed)."""
        self.evict()
        self.masters = [m.to(device) for m in self.masters]
        self._point(self.masters)
