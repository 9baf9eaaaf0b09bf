"""Block-causal attention masks: the whole-clip (training-time) equivalent of the chunk-wise KV cache."""
from __future__ import annotations

import torch


def chunk_starts(chunk_sizes) -> list[int]:
    starts, s = [], 0
    for n in chunk_sizes:
        if n < 1:
            raise ValueError(f"chunk sizes must be positive, got {list(chunk_sizes)}")
        starts.append(s)
        s += n
    return starts


def block_causal_mask(chunk_sizes, window: int | None = None, sink: int = 0) -> torch.Tensor:
    """Frame-level mask [F, F], True where query frame i may attend to key frame j.

    A query sees its whole chunk and every earlier frame; with a window of W frames and S sinks, an earlier frame
    j is kept only if j < S or j >= (end of the query's chunk) - (W - S), as the rolling cache keeps it.
    """
    total = sum(chunk_sizes)
    mask = torch.zeros(total, total, dtype=torch.bool)
    for start, n in zip(chunk_starts(chunk_sizes), chunk_sizes):
        end = start + n
        keys = torch.arange(end)
        ok = torch.ones(end, dtype=torch.bool)
        if window is not None:
            ok = (keys < sink) | (keys >= end - (window - sink)) | (keys >= start)
        mask[start:end, :end] = ok
    return mask


def token_mask(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Expand a frame-level mask to tokens (frame-major token order)."""
    return frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
