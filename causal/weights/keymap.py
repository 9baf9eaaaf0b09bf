"""Key names of the Wan transformer: original Wan (internal) <-> diffusers.

Each rule maps one original key pattern to its diffusers pattern; `{i}` is a block index. Original norm3 (the
affine cross-attention norm) is diffusers norm2; original norm1/norm2 carry no weights.
"""
from __future__ import annotations

import re

_RULES = [
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
    ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
    ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
    ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
    ("blocks.{i}.modulation", "blocks.{i}.scale_shift_table"),
    ("blocks.{i}.norm3.", "blocks.{i}.norm2."),
    ("blocks.{i}.ffn.0.", "blocks.{i}.ffn.net.0.proj."),
    ("blocks.{i}.ffn.2.", "blocks.{i}.ffn.net.2."),
    ("blocks.{i}.self_attn.q.", "blocks.{i}.attn1.to_q."),
    ("blocks.{i}.self_attn.k.", "blocks.{i}.attn1.to_k."),
    ("blocks.{i}.self_attn.v.", "blocks.{i}.attn1.to_v."),
    ("blocks.{i}.self_attn.o.", "blocks.{i}.attn1.to_out.0."),
    ("blocks.{i}.self_attn.norm_", "blocks.{i}.attn1.norm_"),
    ("blocks.{i}.cross_attn.q.", "blocks.{i}.attn2.to_q."),
    ("blocks.{i}.cross_attn.k.", "blocks.{i}.attn2.to_k."),
    ("blocks.{i}.cross_attn.v.", "blocks.{i}.attn2.to_v."),
    ("blocks.{i}.cross_attn.o.", "blocks.{i}.attn2.to_out.0."),
    ("blocks.{i}.cross_attn.k_img.", "blocks.{i}.attn2.add_k_proj."),
    ("blocks.{i}.cross_attn.v_img.", "blocks.{i}.attn2.add_v_proj."),
    ("blocks.{i}.cross_attn.norm_k_img.", "blocks.{i}.attn2.norm_added_k."),
    ("blocks.{i}.cross_attn.norm_", "blocks.{i}.attn2.norm_"),
]


def _compile(src: str, dst: str):
    pat = re.compile("^" + re.escape(src).replace(re.escape("{i}"), r"(?P<i>\d+)"))
    return pat, dst


_TO_DIFFUSERS = [_compile(a, b) for a, b in _RULES]
_TO_ORIGINAL = [_compile(b, a) for a, b in _RULES]


def _rename(key: str, rules) -> str:
    for pat, dst in rules:
        m = pat.match(key)
        if m:
            return dst.replace("{i}", m.groupdict().get("i") or "") + key[m.end():]
    return key


def to_diffusers(key: str) -> str:
    """Original Wan key -> diffusers WanTransformer3DModel key."""
    return _rename(key, _TO_DIFFUSERS)


def to_original(key: str) -> str:
    """diffusers WanTransformer3DModel key -> original Wan key."""
    return _rename(key, _TO_ORIGINAL)


def is_diffusers(keys) -> bool:
    """True when a state dict's keys use diffusers naming."""
    return any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in keys)
