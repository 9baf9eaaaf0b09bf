"""DMD (Self-Forcing) training from a config file: the command-line face of causal/training.

    python -m causalwan.train --config train.json                 # one process
    accelerate launch --num_processes 8 -m causalwan.train --config train.json   # several GPUs
    python -m causalwan.train --config train.json --set steps=10 --set output=out/try.safetensors

The config keys are the fields of causal/training/config.py TrainConfig (JSON, TOML or YAML). The models, the
prompts file (through the umT5 text encoder) and the optional start images (through the VAE) are read here; the
trainer itself takes ready tensors and modules. The trained generator is written to `output` in a format the
pack's loader reads, and resumable checkpoints to `checkpoint_dir` (default <output>.ckpt).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .causal.sampling.experts import ExpertPair
from .causal.training.conditioning import PromptSet, read_prompts
from .causal.training.config import ConfigError, TrainConfig, load_config
from .causal.training.export import check_free
from .causal.training.trainer import DMDTrainer, make_accelerator, trainable_copy

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_pair(path: str) -> ExpertPair:
    from .causal.weights.loader import load_experts
    p = Path(path)
    return load_experts(folder=p, dtype=torch.float32) if p.is_dir() else load_experts(low=p, dtype=torch.float32)


def encode_start_images(folder, vae, width: int, height: int) -> list[torch.Tensor]:
    """Every image of `folder`, fitted to width x height and encoded by `vae` (WanVAE): start latents for
    image-to-video training (shared by this command and the CausalWan Train (DMD) node)."""
    from .cli_checks import read_image
    folder = Path(folder)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ConfigError(f"start images '{folder}' is not a folder of images ({', '.join(IMAGE_SUFFIXES)})")
    return [vae.encode_images(read_image(str(f), width, height)).cpu() for f in files]


def start_latents(cfg: TrainConfig) -> list[torch.Tensor] | None:
    if not cfg.start_images:
        return None
    if not cfg.vae:
        raise ConfigError("start_images needs `vae` (the Wan VAE that encodes them)")
    from .vae.weights import load_vae
    return encode_start_images(cfg.start_images, load_vae(cfg.vae), cfg.latent_width * 8, cfg.latent_height * 8)


def prompt_set(cfg: TrainConfig) -> PromptSet:
    prompts = read_prompts(cfg.prompts_file) if cfg.prompts_file else None
    if prompts is None:
        raise ConfigError("set `prompts_file` (UTF-8 text, one prompt per line)")
    if not cfg.text_encoder:
        raise ConfigError("set `text_encoder` (umT5 file or folder) to encode the prompts file")
    from .causal.weights.text_encoder import load_text_encoder
    enc = load_text_encoder(cfg.text_encoder)
    contexts = [c.float().cpu() for c in enc.encode(prompts)]
    negative = enc.encode([cfg.negative_prompt])[0].float().cpu()
    return PromptSet(contexts, negative, start_latents(cfg))


def build(cfg: TrainConfig) -> DMDTrainer:
    if not cfg.teacher:
        raise ConfigError("set `teacher` (the bidirectional model folder or file)")
    if not cfg.output:
        raise ConfigError("set `output` (where the trained generator is saved)")
    check_free(cfg.output)  # before anything is loaded or written
    acc = make_accelerator()
    prompts = prompt_set(cfg)
    teacher = load_pair(cfg.teacher)
    generator = load_pair(cfg.student) if cfg.student else trainable_copy(teacher)
    for pair in (generator, teacher):
        for m in pair.modules().values():
            m.to(acc.device)
    return DMDTrainer(cfg, generator, teacher, prompts, accelerator=acc)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m causalwan.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="JSON, TOML or YAML file of TrainConfig settings")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    a = ap.parse_args(argv)
    try:
        cfg = load_config(a.config, parse_overrides(a.set))
        trainer = build(cfg)
        trainer.acc.print(trainer.memory_plan().describe())
        if cfg.init_steps and trainer.step == 0 and trainer.init_steps_done < cfg.init_steps:
            trainer.causal_init(cfg.init_steps, callback=lambda i: trainer.acc.print(json.dumps(i)))
        trainer.train(callback=lambda i: trainer.acc.print(json.dumps(
            {k: i[k] for k in ("step", "exit_step", "expert", "dmd_loss", "critic_loss") if k in i})))
        if trainer.acc.is_main_process:
            print(f"saved {trainer.export()}")
    except (ConfigError, ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
