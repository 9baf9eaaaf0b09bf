"""CausalWan VAE Loader: the Wan2.1 VAE (encoder + streaming decoder) from models/vae or a diffusers folder."""
from __future__ import annotations

import torch

from ..vae.weights import load_vae
from . import comfy_adapter as adapter
from .values import CATEGORY, VAE, LoadedVAE

DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def vae_choices() -> list[str]:
    """VAE files from models/vae, then diffusers folders (under diffusion_models) that hold a vae/ folder."""
    return adapter.model_files("vae") + adapter.diffusers_folders("diffusion_models", containing="vae")


class CausalWanVAELoader:
    DESCRIPTION = ("Loads the Wan2.1 VAE (z_dim 16, the VAE of Wan2.1 and Wan2.2-A14B) for CausalWan: it encodes "
                   "the start image and decodes the stream chunk by chunk, keeping its cache between chunks.")
    CATEGORY = CATEGORY
    FILE_INPUTS = ("vae_name",)  # filled from the model folders
    FUNCTION = "load"
    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE for CausalWan Start, Chunk Sampler previews and CausalWan Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (vae_choices(), {"tooltip": (
                "Wan2.1 VAE file from models/vae (wan_2.1_vae.safetensors, Wan2.1_VAE.pth), or a diffusers "
                "folder (name ending in '/') whose vae/ folder is used.")}),
            "dtype": (list(DTYPES), {"default": "auto", "tooltip": (
                "Compute dtype of the VAE. auto: bf16 on a GPU, fp32 on the CPU.")}),
        }}

    def load(self, vae_name, dtype="auto"):
        if dtype not in DTYPES:
            raise ValueError(f"unknown VAE dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        kind = "diffusion_models" if vae_name.endswith("/") else "vae"
        path = adapter.get_full_path(kind, vae_name)
        device = adapter.torch_device()
        dt = DTYPES[dtype] or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        return (LoadedVAE(load_vae(path, device=device, dtype=dt)),)
