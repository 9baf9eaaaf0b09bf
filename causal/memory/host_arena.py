"""One block of host memory per expert that holds the master copies of all its weights, pinned as a whole.

Pinning every weight on its own goes through PyTorch's pinned-memory cache, which rounds each request up to a
power of two (an A14B expert then takes about 1.5x its size in pinned memory, and the cache keeps it after
release). An arena is one plain allocation of exactly the weights' bytes (each tensor at a 64-byte aligned
offset), filled tensor by tensor (each original can be freed as soon as it is copied), then page-locked in one
call (cudaHostRegister) so copies to the GPU run asynchronously, and unlocked again on `release`; the memory
itself goes back to the system when the last view of it is dropped.

    arena = HostArena(sum(arena_bytes(t) for t in tensors))
    masters = [arena.take(t) for t in tensors]   # views into the arena, equal to the tensors
    arena.pin()                                  # page-locked; release() undoes it
"""
from __future__ import annotations

import weakref

import torch

ALIGN = 64


def arena_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor takes in an arena (its size rounded up to the alignment)."""
    n = t.numel() * t.element_size()
    return -(-n // ALIGN) * ALIGN


def _register(ptr: int, nbytes: int) -> None:
    err = torch.cuda.cudart().cudaHostRegister(ptr, nbytes, 0)
    if int(err) != 0:
        raise RuntimeError(f"could not pin {nbytes / 2 ** 30:.1f} GiB of host memory for the weights (CUDA error "
                           f"{int(err)}); free host memory, or load with offload 'resident'")


def _unregister(ptr: int) -> None:
    torch.cuda.cudart().cudaHostUnregister(ptr)


class HostArena:
    """`nbytes` of host memory handed out as aligned views."""

    def __init__(self, nbytes: int):
        self.buffer = torch.empty(nbytes, dtype=torch.uint8)
        self.nbytes, self.used = nbytes, 0
        self._unpin = None  # set while pinned: unregisters the buffer on release() or when the arena is dropped

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """A view into the arena holding a copy of `t` (same dtype, shape and values, contiguous)."""
        n = arena_bytes(t)
        if self.used + n > self.nbytes:
            raise ValueError(f"host arena of {self.nbytes} bytes is full ({self.used} used, {n} more asked for)")
        raw = self.buffer[self.used:self.used + t.numel() * t.element_size()]
        view = raw.view(t.dtype).view(t.shape)
        view.copy_(t.detach())
        self.used += n
        return view

    @property
    def pinned(self) -> bool:
        return self._unpin is not None and self._unpin.alive

    def pin(self) -> None:
        if not self.pinned and self.nbytes:
            _register(self.buffer.data_ptr(), self.nbytes)
            # an arena dropped without release() (a failed load, an exit) still unpins its memory
            self._unpin = weakref.finalize(self, _unregister, self.buffer.data_ptr())

    def release(self) -> None:
        """Unpin (the views stay valid as ordinary host memory until they are dropped)."""
        if self.pinned:
            self._unpin()
