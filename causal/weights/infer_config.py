"""A WanConfig read off tensor shapes (original key names), merged with whatever config the checkpoint ships.

Shapes give every size except two:
- num_heads: the attention weights are [dim, dim] and the q/k RMSNorms span the full dim, so no tensor shows how
  dim splits into heads. Every released Wan model uses head dim 128 (1.3B: 1536 = 12 x 128, 14B: 5120 = 40 x 128),
  so heads = dim / 128 when dim is a multiple of 128; otherwise a config (config.json beside the weights, or the
  caller's) must say. A config always wins over the head-dim rule.
- text_len (512 in every release) and eps (1e-6) are not in the weights either; they come from a config or these
  defaults.
Priority, lowest first: shapes -> config.json of the checkpoint -> the caller's config.
"""
from __future__ import annotations

import math
import re

from .checkpoint_files import WeightsError
from ..model.config import WanConfig

HEAD_DIM = 128
_REQUIRED = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight", "head.head.weight",
             "blocks.0.ffn.0.weight")


def from_shapes(shapes: dict, source: str) -> dict:
    """Config fields that the tensor shapes determine (original key names, prefix removed)."""
    missing = [k for k in _REQUIRED if k not in shapes]
    if missing:
        raise WeightsError(f"'{source}' lacks the Wan DiT tensors {', '.join(missing)}; it is not a complete Wan "
                           "transformer checkpoint")
    pe = shapes["patch_embedding.weight"]  # [dim, in_dim, pt, ph, pw]
    if len(pe) != 5:
        raise WeightsError(f"'{source}': patch_embedding.weight has shape {list(pe)}, expected a 5-D Conv3d weight")
    dim, in_dim, patch = int(pe[0]), int(pe[1]), tuple(int(p) for p in pe[2:])
    layers = {int(m[1]) for k in shapes for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    if layers != set(range(len(layers))):
        gaps = sorted(set(range(max(layers) + 1)) - layers)
        raise WeightsError(f"'{source}' has blocks 0..{max(layers)} but blocks {gaps[:5]} are missing; the "
                           "checkpoint is incomplete")
    out = {
        "dim": dim, "in_dim": in_dim, "patch_size": patch, "num_layers": len(layers),
        "ffn_dim": int(shapes["blocks.0.ffn.0.weight"][0]),
        "out_dim": int(shapes["head.head.weight"][0]) // math.prod(patch),
        "text_dim": int(shapes["text_embedding.0.weight"][1]),
        "freq_dim": int(shapes["time_embedding.0.weight"][1]),
        "cross_attn_norm": "blocks.0.norm3.weight" in shapes,
        "image_branch": "img_emb.proj.1.weight" in shapes,
    }
    if out["image_branch"]:
        out["clip_dim"] = int(shapes["img_emb.proj.1.weight"][1])
    return out


def from_original_json(cfg: dict) -> dict:
    """Fields of an original Wan config.json (`_class_name: WanModel`)."""
    names = ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "text_len", "freq_dim",
             "eps", "patch_size", "cross_attn_norm")
    return {k: cfg[k] for k in names if k in cfg}


def from_diffusers_json(cfg: dict, source: str) -> dict:
    """Fields of a diffusers WanTransformer3DModel config.json (plus text_len, which this pack's trainer writes
    for models that do not take the standard 512 tokens)."""
    qk = cfg.get("qk_norm", "rms_norm_across_heads")
    if qk not in (None, "rms_norm_across_heads"):
        raise WeightsError(f"'{source}': qk_norm {qk!r} is not supported (Wan uses 'rms_norm_across_heads')")
    out = {}
    if "num_attention_heads" in cfg:
        out["num_heads"] = cfg["num_attention_heads"]
        if "attention_head_dim" in cfg:
            out["dim"] = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    for ours, theirs in (("in_dim", "in_channels"), ("out_dim", "out_channels"), ("text_dim", "text_dim"),
                         ("freq_dim", "freq_dim"), ("ffn_dim", "ffn_dim"), ("num_layers", "num_layers"),
                         ("eps", "eps"), ("patch_size", "patch_size"), ("cross_attn_norm", "cross_attn_norm"),
                         ("rope_table", "rope_max_seq_len"), ("text_len", "text_len")):
        if cfg.get(theirs) is not None:
            out[ours] = cfg[theirs]
    if cfg.get("image_dim") is not None:
        out["image_branch"], out["clip_dim"] = True, cfg["image_dim"]
    return out


def combine(shaped: dict, shipped: dict | None, given, source: str) -> WanConfig:
    """shapes < shipped config.json < caller's config (a WanConfig wins whole; a dict overrides fields)."""
    if isinstance(given, WanConfig):
        return given
    if given is not None and not isinstance(given, dict):
        raise TypeError(f"config must be a WanConfig or a dict of WanConfig fields, got {type(given).__name__}")
    fields = dict(shaped)
    for k, v in (shipped or {}).items():
        if k in shaped and _norm(shaped[k]) != _norm(v) and k not in (given or {}):
            raise WeightsError(f"'{source}': its config says {k}={v!r} but the tensors have {k}={shaped[k]!r}; "
                               "the config and the weights come from different models")
        fields[k] = v
    fields.update(given or {})
    if "num_heads" not in fields:
        dim = fields["dim"]
        if dim % HEAD_DIM:
            raise WeightsError(
                f"'{source}': cannot tell the number of attention heads: dim {dim} is not a multiple of the head "
                f"dim {HEAD_DIM} of every released Wan model, and no config.json says. Pass config={{'num_heads': N}}")
        fields["num_heads"] = dim // HEAD_DIM
    try:
        return WanConfig.from_dict(fields)
    except ValueError as e:
        raise WeightsError(f"'{source}': {e}") from e


def _norm(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v
