"""The LoRA key formats in circulation for Wan, read into one list of patches on the model's own parameters.

Formats (each may carry a prefix such as `diffusion_model.`, `model.diffusion_model.`, `transformer.`,
`base_model.model.`):
- original / ComfyUI generic: `blocks.0.self_attn.q.lora_down.weight` + `.lora_up.weight` (+ `.alpha`)
- kohya / musubi-tuner / ComfyUI: `lora_unet_blocks_0_self_attn_q.lora_down.weight` (dots as underscores;
  Wan Fun writes `lora_unet__blocks_...`) + `.lora_up.weight` + `.alpha`
- diffusers / peft: `transformer.blocks.0.attn1.to_q.lora_A.weight` + `.lora_B.weight` (diffusers layer names;
  peft also `.lora_A.default.weight`); the original names with lora_A/lora_B are read too
- full deltas: `<layer>.diff` (added to the weight, e.g. norms), `<layer>.diff_b` (to the bias) and
  `blocks.N.diff_m` (to the block's modulation), as the lightx2v distill LoRAs ship them; a non-weight parameter
  (`blocks.0.modulation.diff`) too.
Layers of the Wan2.1 I2V image branch (k_img, v_img, norm_k_img, img_emb) on a model without that branch are
skipped and counted (Wan2.1 I2V LoRAs are used on Wan2.2 and T2V models; ComfyUI skips them the same way).
A low-rank pair adds strength * (alpha / rank) * up @ down to the weight (alpha defaults to the rank: scale 1),
as ComfyUI, kohya and peft define it. Nothing here reads the model's weights: only its parameter names and shapes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from . import keymap, model_family
from .checkpoint_files import WeightsError, first, open_file

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.", "model.")
KOHYA = re.compile(r"^(lora_unet|lycoris)_+")
_SUFFIXES = {  # suffix -> role
    ".lora_down.weight": "down", ".lora_up.weight": "up",
    ".lora_A.weight": "down", ".lora_B.weight": "up",
    ".lora_A.default.weight": "down", ".lora_B.default.weight": "up",
    ".lora.down.weight": "down", ".lora.up.weight": "up",
    ".alpha": "alpha", ".diff": "diff", ".diff_b": "diff_b", ".diff_m": "diff_m",
}
_UNSUPPORTED = {".dora_scale": "DoRA", ".hada_w1_a": "LoHa", ".lokr_w1": "LoKr", ".lora_mid.weight": "LoCon (mid)",
                ".w_norm": "norm diff", ".set_weight": "set_weight"}
_OTHER_MODELS = ("lora_te", "text_encoder", "lora_te1", "lora_te2", "clip")
_IMAGE_BRANCH = re.compile(r"(^|\.)(k_img|v_img|norm_k_img)$|^img_emb\.|(^|\.)(add_k_proj|add_v_proj|norm_added_k)$|"
                           r"^condition_embedder\.image_embedder\.|(^|_)(k_img|v_img|norm_k_img)$|^img_emb_")


@dataclass
class Patch:
    """One change to one parameter of the model: `param` ("blocks.0.self_attn.q.weight").

    kind "lowrank": delta = scale * up @ down (up [out, r], down [r, in]; conv factors flattened);
    kind "diff": delta = tensor (the parameter's shape)."""

    param: str
    kind: str
    up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    scale: float = 1.0
    diff: torch.Tensor | None = None

    @property
    def module(self) -> str:
        return self.param.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.param.rpartition(".")[2]

    def dense(self, shape) -> torch.Tensor:
        """The full delta in float32 (for small parameters)."""
        if self.kind == "diff":
            return self.diff.float().reshape(shape)
        return (self.up.float().flatten(1) @ self.down.float().flatten(1)).mul_(self.scale).reshape(shape)


@dataclass
class Resolved:
    """The patches of one LoRA on one model, and the image-branch layers skipped because the model lacks them."""

    patches: list
    skipped: list


@dataclass
class LoraFile:
    """The tensors of one LoRA file (CPU, file dtype), grouped by the layer they change."""

    path: str
    groups: dict  # layer name as written (prefix removed) -> {role: tensor}
    kohya: bool

    @property
    def rank(self) -> int | None:
        ranks = {g["down"].shape[0] for g in self.groups.values() if "down" in g}
        return max(ranks) if ranks else None


def read_lora(path) -> LoraFile:
    """Read a LoRA file (.safetensors, or a weights-only .pt) and group its keys; one clear error if it is not one."""
    src = open_file(path)
    keys = src.keys()
    if model_family.looks_like_wan(keys):
        raise WeightsError(f"'{path}' is a full Wan model, not a LoRA; load it with the CausalWan Model Loader "
                           "(diffusion_models folder)")
    groups: dict[str, dict] = {}
    unsupported, unknown = [], []
    for k in keys:
        role, base = _split(k)
        if role is None:
            kind = next((v for s, v in _UNSUPPORTED.items() if k.endswith(s)), None)
            (unsupported if kind else unknown).append(f"{k} ({kind})" if kind else k)
            continue
        groups.setdefault(base, {})[role] = src.get(k, owned=True)
    if unsupported:
        raise WeightsError(f"'{path}' uses LoRA variants this loader does not apply: {first(unsupported)}; only "
                           "plain LoRA (lora_down/lora_up, lora_A/lora_B, alpha) and diff/diff_b keys are supported")
    if not groups:
        raise WeightsError(f"'{path}' is not a LoRA: none of its {len(keys)} keys ({first(sorted(keys))}) end in "
                           "lora_down/lora_up, lora_A/lora_B, alpha, diff or diff_b; it looks like "
                           f"{model_family.describe(keys)}")
    if unknown:
        raise WeightsError(f"'{path}': {len(unknown)} keys are not LoRA keys (first: {first(sorted(unknown))}); "
                           "the file mixes a LoRA with other weights")
    for base, g in groups.items():
        if ("up" in g) != ("down" in g):
            have = "up" if "up" in g else "down"
            raise WeightsError(f"'{path}': layer {base!r} has only its lora_{have} matrix; the file is incomplete")
        if "alpha" in g and "up" not in g:
            raise WeightsError(f"'{path}': layer {base!r} has an alpha but no lora_down/lora_up pair")
    kohya = any(KOHYA.match(b) for b in groups)
    return LoraFile(str(path), {_strip(b): g for b, g in groups.items()}, kohya)


def _split(key: str) -> tuple[str | None, str]:
    for suffix, role in _SUFFIXES.items():
        if key.endswith(suffix):
            return role, key[: -len(suffix)]
    return None, key


def _strip(base: str) -> str:
    base = model_family.strip_wrappers(base)
    m = KOHYA.match(base)
    if m:
        return base[m.end():]
    for p in PREFIXES:
        if base.startswith(p):
            return base[len(p):]
    return base


def _underscored(names) -> dict[str, str]:
    """kohya name (dots as underscores) -> module name, for original and diffusers spellings."""
    out = {}
    for n in names:
        out[n.replace(".", "_")] = n
        out[keymap.to_diffusers(n + ".")[:-1].replace(".", "_")] = n
    return out


def _module_name(base: str, params: dict, kohya_map: dict, kohya: bool) -> str | None:
    """The model's module that a LoRA layer name means (original or diffusers naming), or None."""
    for cand in (base, keymap.to_original(base + ".")[:-1]):
        if any(f"{cand}.{p}" in params for p in ("weight", "bias", "modulation")) or cand in params:
            return cand
    if kohya or "." not in base:
        return kohya_map.get(base)
    return None


def resolve(lora: LoraFile, params: dict[str, tuple], describe: str = "this model") -> Resolved:
    """Patches of `lora` on a model whose parameters are {name: shape} (original Wan names); every layer of the
    file must exist in the model with fitting shapes (image-branch layers on a model without one are skipped),
    else one WeightsError naming the first misfits."""
    kohya_map = _underscored({k.rpartition(".")[0] for k in params} | set(params))
    has_image_branch = any(".k_img." in k or k.startswith("img_emb.") for k in params)
    patches, missing, wrong, other, skipped = [], [], [], [], []
    for base, g in lora.groups.items():
        if base.startswith(_OTHER_MODELS):
            other.append(base)
            continue
        mod = _module_name(base, params, kohya_map, lora.kohya)
        if mod is None:
            (skipped if _IMAGE_BRANCH.search(base) and not has_image_branch else missing).append(base)
            continue
        if mod in params:  # a bare parameter (e.g. blocks.0.modulation): only diffs apply to it
            targets = {"diff": mod}
        else:
            targets = {"diff": f"{mod}.weight", "diff_b": f"{mod}.bias", "up": f"{mod}.weight",
                       "diff_m": f"{mod}.modulation" if mod else "modulation"}
        for role in ("diff", "diff_b", "diff_m"):
            if role in g:
                p = targets.get(role)
                if p not in params:
                    missing.append(f"{base}.{role}")
                elif g[role].numel() != math.prod(params[p]):
                    wrong.append(f"{base}.{role} {list(g[role].shape)} (the model's {p} is {list(params[p])})")
                else:
                    patches.append(Patch(p, "diff", diff=g[role]))
        if "up" in g:
            p = targets.get("up")
            if p not in params:
                missing.append(base)
                continue
            up, down, shape = g["up"], g["down"], params[p]
            rank = down.shape[0]
            fits = (up.shape[0] == shape[0] and up.flatten(1).shape[1] == rank
                    and down.flatten(1).shape[1] == math.prod(shape[1:]))
            if not fits:
                wrong.append(f"{base} up {list(up.shape)} down {list(down.shape)} (the model's {p} is {list(shape)})")
                continue
            alpha = float(g["alpha"]) if "alpha" in g else float(rank)
            patches.append(Patch(p, "lowrank", up=up, down=down, scale=alpha / rank))
    if other:
        raise WeightsError(f"'{lora.path}' also changes a text encoder ({first(other)}); this pack applies LoRAs to "
                           "the video transformer only. Use a LoRA without text-encoder layers")
    if missing or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} layers that {describe} does not have (first: {first(missing)})")
        if wrong:
            problems.append(f"{len(wrong)} layers of another size (first: {first(wrong, 3)})")
        raise WeightsError(f"the LoRA '{lora.path}' does not fit {describe}: " + "; ".join(problems) +
                           ". It was made for another model (e.g. Wan 1.3B vs 14B, Wan2.2 5B, or another "
                           "architecture); pick a LoRA for this model")
    return Resolved(patches, skipped)
