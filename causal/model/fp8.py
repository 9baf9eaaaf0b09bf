"""FP8 weights: a Linear layer that keeps its weight in float8 and dequantises it per call.

File conventions read here (as ComfyUI reads them):
- plain fp8: the weight tensor itself is float8_e4m3fn / float8_e5m2, no scale (scale 1).
- "scaled fp8" (legacy, e.g. Comfy-Org's `*_fp8_scaled.safetensors` Wan files): a marker tensor `scaled_fp8`
  (under the same prefix as the weights; its dtype names the fp8 format, float32 meaning e4m3fn) and, beside each
  fp8 weight, `<layer>.scale_weight` (float32, usually a scalar; optional `<layer>.scale_input`). Real weight =
  fp8 weight * scale_weight. Source: ComfyUI comfy/model_detection.py (`scaled_fp8` key popped in
  model_config_from_unet) and comfy/ops.py (`scaled_fp8_ops`: Linear with `scale_weight`/`scale_input`).
- "comfy_quant" (newer ComfyUI mixed-precision files): `<layer>.weight_scale` plus `<layer>.comfy_quant`, a uint8
  tensor holding JSON such as {"format": "float8_e4m3fn"}; optional `<layer>.input_scale`. Source: ComfyUI
  comfy/ops.py `mixed_precision_ops` (`_load_scale_param(..., "weight_scale")`, `comfy_quant`).
"""
from __future__ import annotations

import json

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_NAMES = {"fp8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fn": torch.float8_e4m3fn,
             "fp8_e5m2": torch.float8_e5m2, "float8_e5m2": torch.float8_e5m2}
SCALE_SUFFIXES = ("scale_weight", "weight_scale")  # the per-weight scale, legacy and comfy_quant spelling
AUX_SUFFIXES = ("scale_input", "input_scale", "comfy_quant")  # read past (input scales are unused without fp8 matmul)
MARKER = "scaled_fp8"


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def normalize_scale(scale: torch.Tensor, out_features: int, where: str) -> torch.Tensor:
    """A scale as float32, either a scalar or one value per output row ([out, 1])."""
    scale = scale.detach().to(torch.float32)
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.numel() == out_features:
        return scale.reshape(out_features, 1)
    raise ValueError(f"{where}: scale of shape {list(scale.shape)} fits neither one scale per tensor nor one per "
                     f"output row ({out_features})")


def quantize(weight: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor quantisation: (fp8 weight, float32 scalar scale) with weight ~= fp8 * scale."""
    top = torch.finfo(dtype).max
    w = weight.detach()
    amax = torch.maximum(w.max(), -w.min()).float()  # no |w| temporary
    scale = (amax / top).clamp(min=1e-12)
    w32 = w.float() if w.dtype != torch.float32 else w.clone()
    return w32.div_(scale).clamp_(-top, top).to(dtype), scale.reshape(())


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """weight * scale in `dtype` (the scale broadcasts); one temporary, scaled in place."""
    w = weight.to(dtype)
    if scale is None:
        return w
    return w.mul_(scale.to(dtype)) if w is not weight else w * scale.to(dtype)


def quant_format(raw: torch.Tensor, where: str) -> torch.dtype:
    """The fp8 dtype a `comfy_quant` JSON tensor names."""
    try:
        conf = json.loads(bytes(raw.to(torch.uint8).flatten().tolist()).decode("utf-8"))
    except Exception as e:
        raise ValueError(f"{where}: unreadable comfy_quant entry ({e})") from e
    fmt = conf.get("format")
    if fmt not in FP8_NAMES:
        raise ValueError(f"{where}: quantisation format {fmt!r} is not supported (only float8_e4m3fn and "
                         "float8_e5m2); use a bf16/fp16 or fp8 file")
    return FP8_NAMES[fmt]


class FP8Linear(nn.Module):
    """y = x @ (weight_fp8 * scale_weight).T + bias, computed in `compute_dtype`.

    The fp8 weight and its scale are buffers (not trainable parameters), named as in ComfyUI's scaled fp8 files,
    so `state_dict()` writes a file ComfyUI can read. `compute_dtype` is the attribute the Wan block reads to pick
    its activation dtype (same protocol as causal/model/fp8_storage.py). Casting the module (`.to(torch.float16)`)
    changes the bias and compute_dtype; the weight stays fp8 and the scale float32.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, fp8_dtype=torch.float8_e4m3fn,
                 compute_dtype=torch.bfloat16, device=None):
        super().__init__()
        if not is_fp8(fp8_dtype):
            raise ValueError(f"fp8_dtype must be one of {FP8_DTYPES}, got {fp8_dtype}")
        self.in_features, self.out_features, self.compute_dtype = in_features, out_features, compute_dtype
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=fp8_dtype, device=device))
        self.register_buffer("scale_weight", torch.ones((), dtype=torch.float32, device=device))
        self.bias = (nn.Parameter(torch.empty(out_features, dtype=compute_dtype, device=device), requires_grad=False)
                     if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self.compute_dtype
        w = dequantize(self.weight, self.scale_weight, dt)
        return F.linear(x.to(dt), w, None if self.bias is None else self.bias.to(dt))

    def _apply(self, fn, recurse=True):
        fp8 = self.weight.dtype
        super()._apply(fn, recurse)
        if self.weight.dtype != fp8:  # a cast of the whole model: keep the weight fp8, follow with the compute
            self.weight = self.weight.to(fp8)
        if self.scale_weight.dtype != torch.float32:
            self.scale_weight = self.scale_weight.to(torch.float32)
        self.compute_dtype = fn(torch.zeros((), dtype=self.compute_dtype)).dtype
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight={self.weight.dtype}, compute={self.compute_dtype}")
