"""FP8 (e4m3fn) storage of what we already hold in memory; arithmetic stays in the compute dtype (bf16 on GPUs).

- KV cache rows (`quantize_rows` / `dequantize`): one float32 scale per token and head. A plain cast is not safe:
  e4m3fn holds magnitudes from 2^-9 to 448 only, so small values (attention values are not normalised, and
  RMS-normalised keys still carry a learned gain) flush to zero or lose all mantissa, and large ones saturate.
  With a scale per row the largest element of each row maps to 448, and every element keeps a relative error of
  at most 2^-4 (3 mantissa bits) plus 2^-10 of its row scale (the subnormal spacing). The scales cost 4 bytes per
  head_dim bytes of cache (3% at head dim 128).
- Block weights (`store_blocks_fp8`): every nn.Linear inside the transformer blocks becomes causal/model/fp8.py's
  FP8Linear (e4m3fn weight, per-tensor `scale_weight`, compute in bf16), the layer the weights loader uses for
  fp8 files. That halves a 14B expert's block weights (~26.6 GiB -> ~13.4 GiB).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .fp8 import FP8Linear, quantize

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
_TINY = 2.0 ** -60  # scale of an all-zero row (zeros stay zeros)

__all__ = ["FP8", "FP8_MAX", "quantize_rows", "store_blocks_fp8"]


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (e4m3fn [..., D], float32 scale [..., 1]) with x ~= q * scale, one scale per row."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=_TINY)
    # clamp: a cast of |v| > 448 saturates on some builds and gives NaN on others
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def store_blocks_fp8(model: nn.Module, compute_dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every nn.Linear inside `model.blocks` by an FP8Linear holding its weight in e4m3fn with a per-tensor
    scale (in place; returns the model). Embeddings, norms, modulation and the head keep their dtype.
    compute_dtype defaults to the dtype the model holds now."""
    compute_dtype = compute_dtype or next(model.parameters()).dtype
    for block in model.blocks:
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                layer = FP8Linear(child.in_features, child.out_features, child.bias is not None, FP8, compute_dtype,
                                  child.weight.device)
                layer.weight, layer.scale_weight = quantize(child.weight, FP8)
                if child.bias is not None:
                    layer.bias.data = child.bias.detach().to(compute_dtype)
                setattr(parent, name, layer)
    return model
