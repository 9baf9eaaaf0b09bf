"""The feature cache that lets the Wan VAE run a video in pieces.

Every causal conv of the VAE looks back CACHE_T = 2 frames. When a video is processed in chunks, each
conv keeps the last two frames of its input here, so the next chunk continues exactly where the previous
one stopped. One FeatureCache belongs to one stream (and, when tiling, to one spatial tile of it).
"""

import torch

CACHE_T = 2


class FeatureCache:
    """Per-stream memory of the VAE: the last CACHE_T input frames of every causal conv, plus flags."""

    def __init__(self):
        self._store = {}

    def swap(self, key, x: torch.Tensor, keep: int = CACHE_T):
        """Return the frames stored under `key` and store the last `keep` frames of (stored, x) instead."""
        past = self._store.get(key)
        tail = x[:, :, -keep:]
        if tail.shape[2] < keep and past is not None:
            tail = torch.cat([past[:, :, tail.shape[2] - keep:].to(tail), tail], dim=2)
        self._store[key] = tail.clone()
        return past

    def get(self, key, default=None):
        """Return what is stored under `key` (a tensor or a flag)."""
        return self._store.get(key, default)

    def set(self, key, value):
        """Store `value` (a tensor or a flag) under `key`."""
        self._store[key] = value

    def clear(self):
        """Forget everything: the next call starts a new video."""
        self._store.clear()

    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return sum(v.numel() * v.element_size() for v in self._store.values() if isinstance(v, torch.Tensor))

    def __len__(self):
        return len(self._store)
