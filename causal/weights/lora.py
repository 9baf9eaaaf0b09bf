"""LoRAs on loaded experts without touching their weights: side deltas that hooks add, removable exactly.

    lora = read_lora("style.safetensors")                 # causal/weights/lora_keys.py
    active = activate(experts, [(lora, 1.0, 0.8)])        # (file, strength high, strength low); stackable
    ...                                                   # sample as usual
    activate(experts, [])                                 # base model again, bit for bit

Why hooks and not a merge: a merge needs a second copy of every changed weight to be undone exactly (bf16 and fp8
weights cannot be un-merged by subtraction), and fp8 weights would be re-quantised. Here the weights are never
written, so the base model is restored exactly, fp8 experts and every offload mode work unchanged, and memory
grows only by the LoRA factors (moved to the compute device on first use).
- A Linear (nn.Linear or FP8Linear) with a low-rank patch adds s * (x @ down^T) @ up^T to its output; a full
  `diff` on its weight adds s * x @ diff^T, a `diff_b` adds s * diff_b.
- Any other parameter (norm weights, modulation, the patch-embedding conv) gets a small merged tensor for the
  length of its module's call only: the module's pre-hook points it at base + s * delta, the post-hook back at
  the base tensor it found (whatever the offload policy had placed there). Apply after any offload policy: its
  block hooks must run before these.
Strength 0 installs nothing, so a LoRA at strength 0 is the base model bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.fp8 import FP8Linear
from ..sampling.settings import check_finite
from .checkpoint_files import WeightsError
from .lora_keys import LoraFile, Patch, Resolved, resolve

__all__ = ["LoraFile", "LoraHooks", "activate", "apply_patches", "patches_for"]


def _params(model: nn.Module) -> dict[str, tuple]:
    """{name: shape} of every parameter and buffer of the model, FP8Linear weights included."""
    return {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items() if not k.endswith("scale_weight")}


def patches_for(lora: LoraFile, model: nn.Module) -> Resolved:
    cfg = getattr(model, "config", None)
    what = f"this model ({cfg.describe()})" if cfg is not None else "this model"
    return resolve(lora, _params(model), what)


class _OnDevice:
    """A tensor moved (and cast) once per device and dtype, on first use."""

    def __init__(self, t: torch.Tensor):
        self.t, self.cache = t, {}

    def get(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self.cache:
            self.cache[key] = self.t.to(device=like.device, dtype=like.dtype)
        return self.cache[key]


@dataclass
class _LinearDelta:
    lowrank: list = field(default_factory=list)  # (strength * scale, down, up)
    full: list = field(default_factory=list)  # (strength, diff)
    bias: list = field(default_factory=list)  # (strength, diff_b)

    def __call__(self, module, args, out):
        x = args[0].to(out.dtype)
        for s, down, up in self.lowrank:
            out = out + F.linear(F.linear(x, down.get(x)), up.get(x)) * s
        for s, diff in self.full:
            out = out + F.linear(x, diff.get(x)) * s
        for s, b in self.bias:
            out = out + b.get(out) * s
        return out


class _ParamOverride:
    """base + sum of s * delta for the parameters of one module, for the duration of its forward."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.deltas: dict[str, list] = {}  # name -> [(strength, float32 delta)]
        self.saved: dict[str, torch.Tensor] = {}

    def _get(self, name):
        m = self.module
        return m._parameters[name] if name in m._parameters else m._buffers[name]

    def _set(self, name, t):
        m = self.module
        if name in m._parameters:
            m._parameters[name] = t if isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)
        else:
            m._buffers[name] = t

    def pre(self, module, args):
        for name, items in self.deltas.items():
            base = self._get(name)
            merged = base.detach().float()
            for s, d in items:
                merged = merged + d.get(merged) * s
            self.saved[name] = base
            self._set(name, merged.to(base.dtype))

    def post(self, module, args, out):
        for name, base in self.saved.items():
            self._set(name, base)
        self.saved.clear()
        return out


class LoraHooks:
    """The hooks of a set of patches on one model; `remove()` takes every one off."""

    def __init__(self):
        self.handles = []
        self.layers = 0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, FP8Linear))


def apply_patches(model: nn.Module, patched: list[tuple[float, list[Patch]]]) -> LoraHooks:
    """Hook `model` so its output is that of base + sum of strength * patches; list of (strength, patches)."""
    hooks = LoraHooks()
    linear: dict[str, _LinearDelta] = {}
    other: dict[str, _ParamOverride] = {}
    for strength, patches in patched:
        if strength == 0:
            continue
        for p in patches:
            mod = model.get_submodule(p.module)
            if _is_linear(mod) and p.name in ("weight", "bias"):
                d = linear.setdefault(p.module, _LinearDelta())
                if p.kind == "lowrank":
                    d.lowrank.append((strength * p.scale, _OnDevice(p.down.flatten(1)), _OnDevice(p.up.flatten(1))))
                elif p.name == "weight":
                    d.full.append((strength, _OnDevice(p.diff.reshape(mod.out_features, mod.in_features))))
                else:
                    d.bias.append((strength, _OnDevice(p.diff.reshape(-1))))
            else:
                o = other.setdefault(p.module, _ParamOverride(mod))
                shape = tuple(o._get(p.name).shape)
                o.deltas.setdefault(p.name, []).append((strength, _OnDevice(p.dense(shape))))
    for path, d in linear.items():
        hooks.handles.append(model.get_submodule(path).register_forward_hook(d))
    for path, o in other.items():
        hooks.handles.append(o.module.register_forward_pre_hook(o.pre))
        # prepended: the base tensor is back before an offload policy's post-hook evicts the block
        hooks.handles.append(o.module.register_forward_hook(o.post, prepend=True))
    hooks.layers = sum(len(patches) for strength, patches in patched if strength != 0)
    return hooks


# ----------------------------------------------------------------------------------------------- expert pairs
@dataclass(frozen=True)
class LoraUse:
    """One LoRA file with a strength per expert (`low` is the one expert of a dense model)."""

    lora: LoraFile
    high: float = 1.0
    low: float = 1.0

    def strength(self, expert: str) -> float:
        return self.high if expert == "high" else self.low

    def key(self) -> tuple:
        return (id(self.lora), self.high, self.low)


def activate(experts, uses) -> str:
    """Make exactly `uses` (a list of LoraUse or (LoraFile, high, low)) the LoRAs in force on `experts`,
    taking off whatever was on before; returns a one-line summary. Unchanged sets cost nothing."""
    uses = [u if isinstance(u, LoraUse) else LoraUse(*u) for u in uses]
    key = tuple(u.key() for u in uses)
    state = getattr(experts, "_lora_state", None)
    if state is not None and state[0] == key:
        return state[2]
    patched, skipped = {}, {}
    for name, model in experts.modules().items():  # resolve everything before anything changes
        found = [(u.strength(name), patches_for(u.lora, model)) for u in uses if u.strength(name) != 0]
        patched[name] = [(s, r.patches) for s, r in found]
        skipped[name] = sum(len(r.skipped) for _, r in found)
    if state is not None:
        for h in state[1].values():
            h.remove()
    hooks = {name: apply_patches(experts.modules()[name], pl) for name, pl in patched.items()}
    summary = describe(uses, {n: h.layers for n, h in hooks.items()}, skipped)
    experts._lora_state = (key, hooks, summary, uses)  # holding `uses` keeps the ids in `key` from being reused
    return summary


def describe(uses, layers: dict, skipped: dict | None = None) -> str:
    """'LoRA a.safetensors (high 1, low 0.8, rank 32) + ...; patched high: 400 tensors, low: 400 tensors'."""
    if not uses:
        return "no LoRA"
    parts = []
    for u in uses:
        s = ", ".join(f"{n} {u.strength(n):g}" for n in layers)
        rank = u.lora.rank
        parts.append(f"{u.lora.path.replace(chr(92), '/').rsplit('/', 1)[-1]} ({s}{f', rank {rank}' if rank else ''})")
    counts = ", ".join(f"{n}: {k} tensors" for n, k in layers.items())
    text = f"LoRA {' + '.join(parts)}; patched {counts}"
    left = max((skipped or {}).values(), default=0)
    if left:
        text += (f"; {left} image-branch layers skipped (made for Wan2.1 I2V; this model has no CLIP image "
                 "branch)")
    return text


def check_strength(value, what: str) -> float:
    """A LoRA strength: a finite number in -100..100 (the number rule shared with the sampler's settings)."""
    v = check_finite(value, f"{what}: strength")
    if abs(v) > 100:
        raise WeightsError(f"{what}: strength {v} is outside -100..100")
    return v
