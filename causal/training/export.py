"""The trained generator in a format the pack's own loader reads (causal/weights/loader.py).

- an expert pair: a diffusers-style folder: model_index.json (boundary_ratio), scheduler/scheduler_config.json
  (shift), transformer/ (high noise) and transformer_2/ (low noise), each a config.json and
  diffusion_pytorch_model.safetensors under diffusers key names;
- a dense model: one .safetensors file under original Wan key names, its config in the file's metadata.
Written atomically; an existing file or folder is never overwritten.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.config import WanConfig
from ..weights import keymap
from ..weights.loader import CONFIG_METADATA
from .checkpoints import atomic_file, atomic_folder


def check_free(path, exists: bool | None = None) -> Path:
    """`path`, or one clear error when it exists (`exists`: already decided, e.g. by the main process)."""
    path = Path(path)
    if path.exists() if exists is None else exists:
        raise FileExistsError(f"'{path}' already exists; choose another save name (nothing is overwritten)")
    return path


def diffusers_config(cfg: WanConfig) -> dict:
    return {"_class_name": "WanTransformer3DModel", "patch_size": list(cfg.patch_size),
            "num_attention_heads": cfg.num_heads, "attention_head_dim": cfg.head_dim, "in_channels": cfg.in_dim,
            "out_channels": cfg.out_dim, "text_dim": cfg.text_dim, "freq_dim": cfg.freq_dim, "ffn_dim": cfg.ffn_dim,
            "num_layers": cfg.num_layers, "cross_attn_norm": cfg.cross_attn_norm,
            "qk_norm": "rms_norm_across_heads", "eps": cfg.eps, "rope_max_seq_len": cfg.rope_table,
            "image_dim": cfg.clip_dim if cfg.image_branch else None, "text_len": cfg.text_len}


def original_config(cfg: WanConfig) -> dict:
    return {"_class_name": "WanModel", **{k: v for k, v in cfg.to_dict().items()
                                           if k not in ("image_branch", "clip_dim", "rope_table")}}


def _tensors(weights: dict, dtype) -> dict:
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in weights.items()}


def save_generator(path, config: WanConfig, experts: dict[str, dict], boundary: float | None = None,
                   shift: float = 5.0, dtype=torch.bfloat16) -> Path:
    """experts: {"low": state dict} (dense) or {"high": ..., "low": ...} (pair)."""
    path = check_free(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if set(experts) == {"low"}:
        meta = {CONFIG_METADATA: json.dumps(original_config(config))}
        atomic_file(path, lambda p: save_file(_tensors(experts["low"], dtype), str(p), metadata=meta))
        return path
    if set(experts) != {"high", "low"} or boundary is None:
        raise ValueError("a pair needs both experts ('high', 'low') and its boundary timestep")

    def write(folder: Path):
        index = {"_class_name": "WanCausalDMDPipeline", "_diffusers_version": "0.42.1",
                 "transformer": ["diffusers", "WanTransformer3DModel"],
                 "transformer_2": ["diffusers", "WanTransformer3DModel"],
                 "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "boundary_ratio": boundary / 1000}
        (folder / "model_index.json").write_text(json.dumps(index, indent=1))
        (folder / "scheduler").mkdir()
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"shift": shift}))
        for sub, name in (("transformer", "high"), ("transformer_2", "low")):
            (folder / sub).mkdir()
            (folder / sub / "config.json").write_text(json.dumps(diffusers_config(config), indent=1))
            sd = {keymap.to_diffusers(k): v for k, v in _tensors(experts[name], dtype).items()}
            save_file(sd, str(folder / sub / "diffusion_pytorch_model.safetensors"))

    atomic_folder(path, write)
    return path
