"""Recognise what a checkpoint holds: a Wan DiT (original or diffusers names, maybe under a prefix) or something else.

Wrong files are the most common loading mistake (a VAE or text encoder picked in the model list, a LoRA, an image
model), so a file that is not a Wan DiT gets an error that says what it looks like instead of a list of missing
keys.
"""
from __future__ import annotations

import re

from . import keymap

ANCHOR = "patch_embedding.weight"  # present in every Wan DiT, same name in original and diffusers naming
# Fragments that wrappers insert into key names (FSDP, activation checkpointing, torch.compile).
WRAPPER_FRAGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
# A checkpoint that bundles several models keeps the DiT under this prefix (ComfyUI / ldm layout).
BUNDLE_PREFIX = "model.diffusion_model."

# (pattern over all keys, description); first match wins. Checked only when no Wan DiT anchor is present.
_FAMILIES = [
    (r"(^|\.)(lora_[AB]|lora_down|lora_up)\.|\.alpha$", "a LoRA (low-rank adapter), not a full model; load the "
                                                          "base model and apply the LoRA separately"),
    (r"(^|\.)patch_embedding\.proj\.weight$|(^|\.)condition_embedder\.time_modulation\.",
     "a Wan transformer in FastVideo's internal naming (a training checkpoint); export it in diffusers format "
     "(FastVideo saves diffusers names) and load that"),
    (r"(^|\.)input_blocks\.\d+\.|(^|\.)down_blocks\.\d+\.resnets\.\d+\..*time_emb_proj",
     "a Stable Diffusion style UNet (input_blocks / down_blocks with time embeddings)"),
    (r"(^|\.)double_blocks\.\d+\.img_attn", "a Flux transformer"),
    (r"(^|\.)joint_blocks\.\d+\.", "a Stable Diffusion 3 (MMDiT) transformer"),
    (r"^(encoder|decoder)\.(conv1|conv_in|downsamples|upsamples|down_blocks|up_blocks|middle|mid_block)",
     "a VAE (encoder/decoder convolutions); load it with the VAE loader"),
    (r"(^|\.)first_stage_model\.", "a VAE (first_stage_model); load it with the VAE loader"),
    (r"^(encoder\.block\.\d+\.layer\.|shared\.weight)|^blocks\.\d+\.ffn\.gate\.0\.|^token_embedding\.",
     "a T5/umT5 text encoder; load it as the text encoder"),
    (r"(^|\.)(visual\.transformer|vision_model\.|text_model\.)", "a CLIP model; it is not a video transformer"),
]


def strip_wrappers(key: str) -> str:
    for frag in WRAPPER_FRAGMENTS:
        key = key.replace(frag, "")
    return key


def find_prefix(keys) -> str | None:
    """The prefix in front of the Wan DiT keys (e.g. 'model.diffusion_model.'), '' for none, None if no DiT."""
    hits = sorted({k[: -len(ANCHOR)] for k in keys if k.endswith(ANCHOR)}, key=len)
    return hits[0] if hits else None


def naming(keys) -> str:
    """'diffusers' or 'original' naming of (prefix-free) Wan DiT keys."""
    return "diffusers" if keymap.is_diffusers(keys) else "original"


def describe(keys) -> str:
    """What a non-Wan state dict looks like, for error messages."""
    keys = list(keys)
    for pattern, what in _FAMILIES:
        rx = re.compile(pattern)
        if any(rx.search(k) for k in keys):
            return what
    return "an unknown model"


def looks_like_wan(keys) -> bool:
    return find_prefix(keys) is not None
