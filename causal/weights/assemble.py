"""Build a CausalWanModel from a TensorSource without ever holding the weights twice.

The model is created on the meta device (no memory), checked against the checkpoint's names and shapes before any
tensor data is read, and then filled tensor by tensor: read (memory-mapped), convert to its dtype, move to the
device, assign. Linear layers whose file weight is fp8 become FP8Linear layers that keep it fp8; with
`quantize_fp8` the big Linear weights inside the blocks are quantised on load (per-tensor scale).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .checkpoint_files import TensorSource, WeightsError, first
from ..model.config import WanConfig
from ..model.fp8 import AUX_SUFFIXES, MARKER, SCALE_SUFFIXES, FP8Linear, dequantize, is_fp8, normalize_scale, quant_format
from ..model.transformer import CausalWanModel

log = logging.getLogger("causalwan")
LARGE_FILE_BYTES = 1 << 30  # sources at least this big report their loading progress (every 10%)

# Linear layers that stay in the compute dtype even when the file stores them in fp8: the model reads its output
# dtype from head.head.
KEEP_DENSE = ("head.head",)


@dataclass
class Plan:
    """How each weight of the model is filled from the source."""

    fp8_layers: dict = field(default_factory=dict)  # module path -> (fp8 dtype, scale key or None, quantise on load)
    scales: dict = field(default_factory=dict)  # module path -> scale key, for fp8 tensors that get dequantised
    aux: set = field(default_factory=set)  # source keys read past (scales, markers, input scales)


def meta_model(cfg: WanConfig) -> CausalWanModel:
    with torch.device("meta"):
        return CausalWanModel(cfg)


def plan(model: nn.Module, src: TensorSource, quantize_fp8: torch.dtype | None) -> Plan:
    """Decide per Linear whether it is fp8 (from the file, or by request), and which keys are scales."""
    p = Plan()
    if MARKER in src:
        p.aux.add(MARKER)
    for path, mod in model.named_modules():
        wkey = f"{path}.weight"
        if wkey not in src:
            continue
        scale_key = next((f"{path}.{s}" for s in SCALE_SUFFIXES if f"{path}.{s}" in src), None)
        p.aux.update(k for k in (f"{path}.{s}" for s in SCALE_SUFFIXES + AUX_SUFFIXES) if k in src)
        fp8 = src.dtypes[wkey]
        if f"{path}.comfy_quant" in src:
            try:
                fp8 = quant_format(src.get(f"{path}.comfy_quant"), f"'{src.path}' layer {path}")
            except ValueError as e:
                raise WeightsError(str(e)) from e
            if src.dtypes[wkey] != fp8:
                raise WeightsError(f"'{src.path}': {wkey} is {src.dtypes[wkey]} but its comfy_quant says {fp8}")
        linear = isinstance(mod, nn.Linear) and path not in KEEP_DENSE
        if is_fp8(fp8) and linear:
            p.fp8_layers[path] = (fp8, scale_key, False)
        elif is_fp8(fp8) or scale_key is not None:
            p.scales[path] = scale_key  # an fp8 conv / norm / head: dequantised to the compute dtype
        elif quantize_fp8 is not None and linear and path.startswith("blocks."):
            p.fp8_layers[path] = (quantize_fp8, None, True)
    return p


def swap_fp8_layers(model: nn.Module, p: Plan, compute_dtype: torch.dtype) -> None:
    for path, (fp8, _, _) in p.fp8_layers.items():
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, name)
        setattr(parent, name, FP8Linear(old.in_features, old.out_features, old.bias is not None, fp8, compute_dtype,
                                        device=torch.device("meta")))


def key_problems(expected: dict, src: TensorSource, found: set, optional=()) -> list[str]:
    """Missing, unexpected and wrongly shaped keys of a file against a model's {key: shape}, each as
    'N what (first: ...)'; keys in `optional` may be absent."""
    missing = sorted(k for k in expected if k not in found and k not in optional)
    unexpected = sorted(found - set(expected))
    wrong = [f"{k} {list(src.shapes[k])} (expected {list(s)})" for k, s in expected.items()
             if k in found and src.shapes[k] != s]
    return [f"{len(v)} {what} (first: {first(v)})" for what, v in
            (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)) if v]


def check(model: nn.Module, src: TensorSource, p: Plan, cfg: WanConfig) -> None:
    """Raise naming the file, expected vs found, and the first offending keys, before any data is read."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = set(src.keys()) - p.aux
    problems = key_problems(expected, src, found, optional={f"{path}.scale_weight" for path in p.fp8_layers})
    if problems:
        raise WeightsError(f"'{src.path}' does not match a Wan transformer with {cfg.describe()} "
                           f"({len(expected)} tensors expected, {len(found)} found): " + "; ".join(problems))


def fill(model: nn.Module, src: TensorSource, p: Plan, dtype: torch.dtype, device) -> None:
    """Assign every parameter and buffer from the source, one tensor at a time."""
    device = torch.device(device)
    work: dict = {}  # scratch buffer of the fp8 quantisation, reused across layers
    total, done, told = src.nbytes(), 0, 0
    for path, mod in model.named_modules():
        local = list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
        for name, _ in local:
            key = f"{path}.{name}" if path else name
            if path in p.fp8_layers and name in ("weight", "scale_weight"):
                continue
            if path in p.scales and name == "weight":  # a small fp8 tensor that is not a Linear: dequantise
                t = src.get(key, owned=True)
                scale = src.get(p.scales[path]) if p.scales[path] else None
                scale = None if scale is None else normalize_scale(scale, t.shape[0], f"'{src.path}' {key}")
                if scale is not None and t.dim() > 2:
                    scale = scale.reshape(-1, *([1] * (t.dim() - 1))) if scale.dim() else scale
                _assign(mod, name, dequantize(t, scale, dtype).to(device))
            else:
                _assign(mod, name, _read(src, key, dtype, device))
        if path in p.fp8_layers:
            _fill_fp8(mod, path, src, p.fp8_layers[path], device, work)
        if total >= LARGE_FILE_BYTES and local:
            done += sum(torch.Size(src.shapes[k]).numel() * src.dtypes[k].itemsize
                        for k in (f"{path}.{n}" if path else n for n, _ in local) if k in src)
            if done * 10 // total > told:
                told = done * 10 // total
                log.info("loading '%s': %d%% of %.1f GiB", src.path, min(100, told * 10), total / (1 << 30))
    left = [k for k, v in list(model.named_parameters()) + list(model.named_buffers()) if v.is_meta]
    if left:
        raise WeightsError(f"'{src.path}': {len(left)} tensors were not filled (first: {first(left)})")


def _read(src: TensorSource, key: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Kept as is on the CPU: the memory-mapped tensor itself (no copy). Converted or moved: read through the
    staging buffer into the final tensor, so no full-size temporary and no file pages stay resident."""
    if device.type == "cpu" and src.dtypes[key] == dtype:
        return src.get(key)
    return src.read_into(key, torch.empty(src.shapes[key], dtype=dtype, device=device))


def _fill_fp8(mod: FP8Linear, path: str, src: TensorSource, how, device: torch.device, work: dict) -> None:
    fp8, scale_key, requantize = how
    key = f"{path}.weight"
    if requantize:
        w, scale = quantize_from_chunks(src, key, fp8, device, work)
    else:
        w = _read(src, key, fp8, device)
        scale = src.get(scale_key) if scale_key else torch.ones(())
        scale = normalize_scale(scale, w.shape[0], f"'{src.path}' {path}")
    mod._buffers["weight"] = w
    mod._buffers["scale_weight"] = scale.to(device)


def quantize_from_chunks(src: TensorSource, key: str, fp8: torch.dtype, device, work: dict) -> tuple:
    """fp8.quantize (same numbers) over the file in staging-buffer pieces: one pass for the absolute maximum, one
    writing the quantised pieces into the final fp8 tensor through a reused float32 work buffer (no per-tensor
    temporaries, so the heap does not fragment over hundreds of layers)."""
    top = torch.finfo(fp8).max
    amax = torch.zeros((), dtype=torch.float32)
    for _, piece in src.chunks(key):
        if piece.numel():
            amax = torch.maximum(amax, torch.maximum(piece.max(), -piece.min()).float())
    scale = (amax / top).clamp(min=1e-12)
    out = torch.empty(src.shapes[key], dtype=fp8, device=device)
    flat = out.view(-1)
    for off, piece in src.chunks(key):
        n = piece.numel()
        if work.get("buf") is None or work["buf"].numel() < n:
            work["buf"] = torch.empty(n, dtype=torch.float32)
        buf = work["buf"][:n]
        buf.copy_(piece).div_(scale).clamp_(-top, top)
        flat[off: off + n].copy_(buf)
    return out, scale.reshape(())


def _assign(mod: nn.Module, name: str, t: torch.Tensor) -> None:
    if name in mod._parameters:
        mod._parameters[name] = nn.Parameter(t, requires_grad=False)
    else:
        mod._buffers[name] = t


def build(cfg: WanConfig, src: TensorSource, dtype: torch.dtype, device="cpu",
          quantize_fp8: torch.dtype | None = None) -> CausalWanModel:
    """The whole path: meta model -> plan fp8 layers -> check names and shapes -> fill -> eval()."""
    model = meta_model(cfg)
    p = plan(model, src, quantize_fp8)
    swap_fp8_layers(model, p, dtype)
    check(model, src, p, cfg)
    fill(model, src, p, dtype, device)
    return model.eval()
