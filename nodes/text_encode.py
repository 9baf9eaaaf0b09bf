"""CausalWan Text Encode: the pack's own umT5 path (transformers) from models/text_encoders or a diffusers folder.

ComfyUI's CLIPLoader (type wan) + CLIPTextEncode is the usual way; this node reads the text encoders that the
ComfyUI loader does not (the original Wan .pth with google/umt5-xxl/, a diffusers folder's text_encoder/ +
tokenizer/) and gives the same kind of CONDITIONING. The last loaded encoder is kept (on the CPU between runs).
"""
from __future__ import annotations

import torch

from . import comfy_adapter as adapter
from .values import CATEGORY

DEVICES = ("default", "cpu")
_cache: dict = {}  # (path, device option) -> TextEncoder, at most one entry


def encoder_choices() -> list[str]:
    return (adapter.model_files("text_encoders") + adapter.diffusers_folders("text_encoders")
            + adapter.diffusers_folders("diffusion_models", containing="text_encoder"))


def _path(name: str) -> str:
    if name.endswith("/"):
        for kind in ("text_encoders", "diffusion_models"):
            try:
                return adapter.get_full_path(kind, name)
            except FileNotFoundError:
                pass
    return adapter.get_full_path("text_encoders", name)


def load_encoder(name: str, device: str = "default"):
    from ..causal.weights.text_encoder import TextEncoder

    key = (name, device)
    if key not in _cache:
        _cache.clear()
        compute = adapter.torch_device() if device == "default" else torch.device("cpu")
        dtype = torch.bfloat16 if compute.type == "cuda" else torch.float32
        _cache[key] = TextEncoder.load(_path(name), dtype=dtype, device="cpu")
    return _cache[key]


class CausalWanTextEncode:
    DESCRIPTION = ("Encodes a prompt with umT5 (the Wan text encoder) read by this pack: a ComfyUI umT5 file, the "
                   "original Wan models_t5_umt5-xxl-enc-bf16.pth (with google/umt5-xxl/ beside it) or a diffusers "
                   "folder. Gives a CONDITIONING like CLIPTextEncode with a 'wan' CLIPLoader.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    FILE_INPUTS = ("text_encoder",)  # filled from the model folders
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The prompt's umT5 embedding [1, tokens, 4096], for the CausalWan sampler or Prompt Switch.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (encoder_choices(), {"tooltip": (
                "umT5 weights from models/text_encoders (a file, or a folder ending in '/'), or a diffusers "
                "folder with text_encoder/ and tokenizer/.")}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The prompt."}),
            "device": (list(DEVICES), {"default": "default", "tooltip": (
                "default: encode on the GPU (the encoder returns to the CPU afterwards); cpu: encode on the CPU.")}),
        }}

    def encode(self, text_encoder, text, device="default"):
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        enc = load_encoder(text_encoder, device)
        target = adapter.torch_device() if device == "default" else torch.device("cpu")
        try:
            if target.type != "cpu":
                adapter.make_room(sum(p.numel() * p.element_size() for p in enc.model.parameters()), target)
                enc.model.to(target)
            (emb,) = enc.encode([text])
        finally:
            enc.model.to("cpu")
            adapter.soft_empty_cache()
        return ([[emb.unsqueeze(0).float().cpu(), {"pooled_output": None}]],)
