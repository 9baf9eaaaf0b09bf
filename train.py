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
from .causal.training.conditioning import PromptSet, encode_prompt_set, read_prompts
from .causal.training.config import ConfigError, TrainConfig, load_config
from .causal.training.export import check_free
from .causal.training.trainer import DMDTrainer, make_accelerator, trainable_copy



def load_pair(path: str, device) -> ExpertPair:
    """The model at `path` in fp32 (the trained weights' precision), built straight on `device`."""
    from .causal.weights.loader import load_experts
    p = Path(path)
    where = {"folder": p} if p.is_dir() else {"low": p}
    return load_experts(**where, dtype=torch.float32, device=device)


def encode_start_images(folder, vae, width: int, height: int) -> list[torch.Tensor]:
    """Every image of `folder`, fitted to width x height and encoded by `vae` (WanVAE): start latents for
    image-to-video training (shared by this command and the CausalWan Train (DMD) node)."""
    from .vae.image_fit import read_images
    return [vae.encode_images(image).cpu() for image in read_images(folder, width, height)]


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
    return encode_prompt_set(load_text_encoder(cfg.text_encoder), prompts, cfg.negative_prompt, start_latents(cfg))


def build(cfg: TrainConfig) -> DMDTrainer:
    if not cfg.teacher:
        raise ConfigError("set `teacher` (the bidirectional model folder or file)")
    if not cfg.output:
        raise ConfigError("set `output` (where the trained generator is saved)")
    check_free(cfg.output)  # before anything is loaded or written
    acc = make_accelerator()
    prompts = prompt_set(cfg)
    teacher = load_pair(cfg.teacher, acc.device)
    generator = load_pair(cfg.student, acc.device) if cfg.student else trainable_copy(teacher)
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
    finally:  # this command made the process group (torchrun / accelerate launch, also when build() failed
        # after it): end it. On CPU (gloo) torch's C++ teardown may still, rarely, abort after this (see
        # tests/train_worker.py); the trained files are written by then.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
