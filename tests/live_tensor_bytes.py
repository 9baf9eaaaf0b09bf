"""Peak bytes of tensors allocated by torch operators while a block of code runs (a CPU stand-in for
torch.cuda.max_memory_allocated). Every operator output whose storage is not one of the operator's inputs is a
new allocation; it counts until its storage is freed. Storages that existed before (weights, caches) never count.
"""
from __future__ import annotations

from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import torch


class LiveTensorBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live: dict = {}  # StorageWeakRef -> bytes
        self.current = 0
        self.peak = 0

    def _sweep(self):
        for ref in [r for r in self.live if r.expired()]:
            self.current -= self.live.pop(ref)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        inputs = {StorageWeakRef(t.untyped_storage()) for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if ref not in inputs and ref not in self.live:
                    self.live[ref] = t.untyped_storage().nbytes()
                    self.current += self.live[ref]
        self.peak = max(self.peak, self.current)
        return out
