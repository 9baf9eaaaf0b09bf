"""Tiny model files in a ComfyUI-like models folder for the node tests.

    models/diffusion_models/tiny_high.safetensors, tiny_low.safetensors   two experts (ComfyUI single files; the
                                                                          high one under model.diffusion_model.)
    models/diffusion_models/tiny_dense.safetensors                        a dense causal model
    models/diffusion_models/tiny_wide_low.safetensors                     an expert of another width
    models/diffusion_models/not_a_model.safetensors                       a VAE put in the wrong folder
    models/diffusion_models/TinyCausalWan-Diffusers/                      the same pair + VAE as a diffusers folder
    models/diffusion_models/tinyworld/                                    a link to the bundled tiny world
    models/vae/tiny_vae.safetensors                                       a Wan2.1-layout VAE (base_dim 8)
Experts use head dim 128 (dim 128, 1 head) so that the loader infers the head count as for the released models.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from causalwan.causal.weights import keymap
from causalwan.vae.key_map import original_to_diffusers
from causalwan.vae.random_init import random_vae
from tiny_models import tiny_model

EXPERT = dict(dim=128, num_heads=1, ffn_dim=64)
FOLDER = "TinyCausalWan-Diffusers/"
TINY_WORLD = Path(__file__).resolve().parents[1] / "assets" / "tinyworld"
TEXT_DIM = 32


def expert_state(seed, **kw):
    return {k: v.contiguous() for k, v in tiny_model(seed, **{**EXPERT, **kw}).state_dict().items()}


def write_models(root: Path) -> Path:
    dm, vae_dir = root / "diffusion_models", root / "vae"
    for d in (dm, vae_dir, root / "text_encoders"):
        d.mkdir(parents=True, exist_ok=True)
    high, low = expert_state(2), expert_state(1)
    save_file({"model.diffusion_model." + k: v for k, v in high.items()}, str(dm / "tiny_high.safetensors"))
    save_file(low, str(dm / "tiny_low.safetensors"))
    save_file(expert_state(3), str(dm / "tiny_dense.safetensors"))
    save_file(expert_state(4, dim=256, num_heads=2), str(dm / "tiny_wide_low.safetensors"))
    vae_sd = {k: v.contiguous() for k, v in random_vae(base_dim=8, seed=0).state_dict().items()}
    save_file(vae_sd, str(vae_dir / "tiny_vae.safetensors"))
    save_file(vae_sd, str(dm / "not_a_model.safetensors"))

    write_release_folder(dm / FOLDER.rstrip("/"), high, low, vae_sd)
    (dm / "tinyworld").symlink_to(TINY_WORLD, target_is_directory=True)  # the bundled tiny world, as ComfyUI lists it
    return root


def write_release_folder(folder: Path, high: dict, low: dict, vae_sd: dict) -> None:
    """A diffusers release folder like CausalWan2.2-I2V-A14B's: transformer/ (high noise), transformer_2/ (low
    noise), vae/, scheduler/ (shift 5) and model_index.json (boundary_ratio 0.875), from original-named dicts."""
    for sub, sd in (("transformer", high), ("transformer_2", low)):
        (folder / sub).mkdir(parents=True)
        save_file({keymap.to_diffusers(k): v for k, v in sd.items()},
                  str(folder / sub / "diffusion_pytorch_model.safetensors"))
    (folder / "vae").mkdir()
    save_file({original_to_diffusers(k): v for k, v in vae_sd.items()},
              str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"shift": 5.0}))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.875,
        "transformer": ["diffusers", "WanTransformer3DModel"], "transformer_2": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"]}))


def conditioning(seed=0, tokens=7, length=512, dim=TEXT_DIM):
    """A CONDITIONING like ComfyUI's wan text encoder gives: `tokens` real rows, zero rows up to `length`."""
    t = torch.zeros(1, length, dim)
    t[:, :tokens] = torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed))
    return [[t, {"pooled_output": None}]]
