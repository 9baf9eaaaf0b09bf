"""One way in for Wan2.1 VAE weights: original .pth, ComfyUI .safetensors, or a diffusers `vae/` folder.

Every format ends as a state dict with original Wan names; the shape of the network (base_dim, z_dim,
num_res_blocks) is read off the tensors, every key and shape is checked, and the model is built on the meta
device so the weights are held once.
"""

import json
import re
from pathlib import Path

import torch

from .key_map import diffusers_name_table, looks_like_diffusers
from .model import WanVAE, WanVAEConfig

DIFFUSERS_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
)
_PREFIXES = ("first_stage_model.", "vae.", "model.")
_SHOW = 5


class VAEWeightsError(ValueError):
    """VAE weights could not be read, or do not match a Wan2.1 VAE."""


def load_vae(path, device="cpu", dtype=torch.float32) -> WanVAE:
    """Build a WanVAE from a .pth / .safetensors file or a diffusers folder, on `device` in `dtype`, in eval mode."""
    sd = load_vae_state_dict(path)
    cfg = infer_config(sd, path)
    check_state_dict(sd, cfg, path)
    with torch.device("meta"):
        model = WanVAE(cfg)
    model.load_state_dict(sd, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_vae_state_dict(path) -> dict:
    """Read VAE weights in any supported format and return them with original Wan key names."""
    path = Path(path)
    if path.is_dir():
        sd = _read_diffusers_folder(path)
    elif path.is_file():
        sd = _strip_prefix(_read_file(path))
    else:
        raise VAEWeightsError(f"VAE weights not found: '{path}' is neither a file nor a folder")
    if looks_like_diffusers(sd):
        table = _diffusers_to_original(infer_config(sd, path, diffusers=True))
        sd = {table.get(k, k): v for k, v in sd.items()}
    return sd


def infer_config(sd: dict, source="<state dict>", diffusers: bool = False) -> WanVAEConfig:
    """Read base_dim, z_dim and num_res_blocks off the tensor shapes (original names, or diffusers names)."""
    names = ("encoder.conv_in.weight", "post_quant_conv.weight", r"decoder\.up_blocks\.0\.resnets\.(\d+)\.") \
        if diffusers else ("encoder.conv1.weight", "conv2.weight", r"encoder\.downsamples\.(\d+)\.")
    if names[0] not in sd or names[1] not in sd:
        raise VAEWeightsError(
            f"'{source}' does not look like a Wan2.1 VAE: expected keys '{names[0]}' and '{names[1]}' "
            f"(first keys in the file: {_first(sorted(sd))})"
        )
    base_dim, z_dim = sd[names[0]].shape[0], sd[names[1]].shape[0]
    if z_dim != 16:
        raise VAEWeightsError(
            f"'{source}' has z_dim {z_dim}; only the Wan2.1 VAE (z_dim 16) is supported"
            + (" (z_dim 48 is the Wan2.2 TI2V-5B VAE)" if z_dim == 48 else "")
        )
    idx = [int(m[1]) for k in sd for m in [re.match(names[2], k)] if m]
    if not idx:
        nrb = 2
    elif diffusers:
        nrb = max(idx)                              # resnets 0..num_res_blocks in each up block
    else:
        nrb = (max(idx) + 1 - 3) // 4               # 4 levels x num_res_blocks + 3 downsamplers
    return WanVAEConfig(base_dim=base_dim, z_dim=z_dim, num_res_blocks=nrb)


def check_state_dict(sd: dict, cfg: WanVAEConfig, source="<state dict>"):
    """Raise VAEWeightsError naming missing, unexpected and wrongly shaped keys, if any."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in WanVAE(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(s)})" for k, s in expected.items()
             if k in sd and sd[k].shape != s]
    problems = [f"{len(v)} {what} (first: {_first(v)})" for what, v in
                (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)) if v]
    if problems:
        raise VAEWeightsError(
            f"VAE weights '{source}' do not match a Wan2.1 VAE with base_dim={cfg.base_dim}, z_dim={cfg.z_dim}, "
            f"num_res_blocks={cfg.num_res_blocks} (original Wan names): " + "; ".join(problems)
        )


def _diffusers_to_original(cfg: WanVAEConfig) -> dict:
    with torch.device("meta"):
        keys = list(WanVAE(cfg).state_dict().keys())
    return diffusers_name_table(keys, cfg.num_res_blocks)


def _read_file(path: Path) -> dict:
    kind = "safetensors" if path.suffix == ".safetensors" else "torch pickle (.pth)"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise VAEWeightsError(
            f"could not read VAE weights '{path}' as {kind}: {type(e).__name__}: {e}. "
            "The file may be truncated (an interrupted download?) or not a weights file."
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VAEWeightsError(f"'{path}' does not hold a plain state dict of tensors (got {type(obj).__name__})")
    return obj


def _read_diffusers_folder(path: Path) -> dict:
    if not any((path / f).is_file() for f in DIFFUSERS_FILES) and (path / "vae").is_dir():
        path = path / "vae"
    index = path / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd = {}
        for shard in shards:
            sd.update(_read_file(path / shard))
        return sd
    for name in DIFFUSERS_FILES:
        if (path / name).is_file():
            return _read_file(path / name)
    raise VAEWeightsError(
        f"no VAE weights in folder '{path}': expected one of {', '.join(DIFFUSERS_FILES)} "
        "(a diffusers vae/ folder, or a pipeline folder holding one)"
    )


def _strip_prefix(sd: dict) -> dict:
    for p in _PREFIXES:
        if sd and all(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items()}
    return sd


def _first(items) -> str:
    items = list(items)
    return ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")
