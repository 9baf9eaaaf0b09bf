"""Activation checkpointing of transformer blocks: under grad a block keeps only its input and recomputes the
rest in the backward pass (torch.utils.checkpoint, non-reentrant). A KV-cached block recomputes from the cache
copy kept on the chunk's plan (causal/model/kv_cache.py), so the recomputation equals the first pass."""
from __future__ import annotations

import types

import torch

import torch.nn as nn
import torch.utils.checkpoint as cp


def _checkpointed(block_forward):
    def forward(self, *args):
        if torch.is_grad_enabled():
            return cp.checkpoint(block_forward, *args, use_reentrant=False)
        return block_forward(*args)
    return forward


def checkpoint_blocks(model: nn.Module) -> int:
    """Checkpoint every block of a Wan model in place; returns how many blocks."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        return 0
    for blk in blocks:
        if not getattr(blk, "_checkpointed", False):
            blk.forward = types.MethodType(_checkpointed(blk.forward), blk)
            blk._checkpointed = True
    return len(blocks)
