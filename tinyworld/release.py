"""The release folder, laid out as a diffusers CausalWan2.2-I2V-A14B release so the pack's real loaders read it:

    model_index.json            boundary_ratio 0.875 (transformer = high noise, transformer_2 = low noise)
    scheduler/                  scheduler_config.json (shift)
    transformer/ transformer_2/ config.json + diffusion_pytorch_model.safetensors (diffusers names)
    vae/                        config.json + diffusion_pytorch_model.safetensors (diffusers names)
    text_encoder/ tokenizer/    UMT5EncoderModel + spiece.model
    teacher.safetensors         the bidirectional teacher it was distilled from (original names, config inside)
    BUILD.md                    the command that made it and the sha256 of every file
The experts and the teacher are written by the trainer's own export (causal/training/export.py).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..causal.training.export import save_generator
from ..causal.weights.loader import CAUSALWAN_A14B_BOUNDARY
from ..vae.key_map import original_to_diffusers
from ..vae.latent_norm import LATENT_MEAN, LATENT_STD

BOUNDARY = CAUSALWAN_A14B_BOUNDARY  # boundary_ratio 0.875, as CausalWan2.2-I2V-A14B
TEACHER_FILE = "teacher.safetensors"


def save_vae(vae, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nrb = vae.cfg.num_res_blocks
    sd = {original_to_diffusers(k, nrb): v.detach().float().contiguous() for k, v in vae.state_dict().items()}
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    cfg = {"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.42.1", "base_dim": vae.cfg.base_dim,
           "z_dim": vae.cfg.z_dim, "dim_mult": list(vae.cfg.dim_mult), "num_res_blocks": nrb,
           "temperal_downsample": list(vae.cfg.temporal_downsample), "attn_scales": [], "dropout": 0.0,
           "latents_mean": list(LATENT_MEAN), "latents_std": list(LATENT_STD)}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")


def write_release(out: Path, high, low, teacher, vae, text_folder: Path, shift: float) -> None:
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    save_generator(out, high.config, {"high": high.state_dict(), "low": low.state_dict()}, BOUNDARY, shift,
                   torch.float32)
    save_generator(out / TEACHER_FILE, teacher.config, {"low": teacher.state_dict()}, dtype=torch.float32)
    save_vae(vae, out / "vae")
    shutil.copytree(text_folder / "text_encoder", out / "text_encoder")
    shutil.copytree(text_folder / "tokenizer", out / "tokenizer")
    index = json.loads((out / "model_index.json").read_text())
    index.update(vae=["diffusers", "AutoencoderKLWan"], text_encoder=["transformers", "UMT5EncoderModel"],
                 tokenizer=["transformers", "T5TokenizerFast"])
    (out / "model_index.json").write_text(json.dumps(index, indent=1) + "\n")


def sha256_table(folder: Path) -> list[tuple[str, str, int]]:
    rows = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name != "BUILD.md":
            rows.append((p.relative_to(folder).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size))
    return rows
