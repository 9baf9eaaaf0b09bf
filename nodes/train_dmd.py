"""CausalWan Train (DMD): Self-Forcing DMD training of a loaded causal model against a loaded bidirectional
teacher, from ComfyUI. A thin adapter over causal/training (DMDTrainer): sockets -> TrainConfig, PromptSet and
trainable copies of the two models; progress per step with the loss curves as the preview; Cancel stops at the next
step after a complete checkpoint (queue again with the same save name to resume); the trained generator is saved
into diffusion_models (never over an existing file) and output as a CAUSALWAN_MODEL.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from . import comfy_adapter as adapter
from .loss_curve import loss_curve_image
from .values import CATEGORY, MODEL, LoadedModel, LoadedVAE

def save_path(save_name: str, is_pair: bool) -> Path:
    """Where the trained model goes: a folder (pair) or a .safetensors file (dense) in diffusion_models."""
    name = save_name.strip()
    if not name or not re.fullmatch(r"[\w .-]+", name) or name.startswith("."):
        raise ValueError(f"save name {save_name!r} cannot be used: give a plain file name such as "
                         "'CausalWan-mine' (letters, digits, spaces, '-', '_', '.')")
    folders = adapter.folder_paths("diffusion_models")
    if not folders:
        raise ValueError("no diffusion_models folder is configured to save the trained model into")
    if not is_pair and not name.endswith(".safetensors"):
        name += ".safetensors"
    return Path(folders[0]) / name


def prompt_set(conditioning, negative, prompts_file: str, text_encoder: str, negative_prompt: str, starts):
    from ..causal.training.conditioning import PromptSet, encode_prompt_set, read_prompts

    if prompts_file.strip():
        if conditioning is not None:
            raise ValueError("give the prompts either as a conditioning input or as a prompts file, not both")
        if text_encoder == "none":
            raise ValueError("a prompts file needs a text encoder: choose one in text_encoder")
        from .text_encode import load_encoder
        texts = read_prompts(prompts_file.strip())
        return encode_prompt_set(load_encoder(text_encoder, "cpu"), texts, negative_prompt, starts)
    if not conditioning:
        raise ValueError("no prompts: connect a CONDITIONING (several entries = several prompts) or give a "
                         "prompts file and a text encoder")
    contexts = [c[0][i] for c in conditioning for i in range(c[0].shape[0])]
    neg = negative[0][0][0] if negative else torch.zeros(1, contexts[0].shape[-1])
    return PromptSet([c.float().cpu() for c in contexts], neg.float().cpu(), starts)


def start_latents(folder: str, vae, width: int, height: int):
    if not folder.strip():
        return None
    if vae is None:
        raise ValueError("start images need a VAE: connect CausalWan VAE Loader to vae")
    from ..train import encode_start_images
    return encode_start_images(folder.strip(), vae.vae if isinstance(vae, LoadedVAE) else vae, width, height)


class CausalWanTrainDMD:
    DESCRIPTION = ("Trains the connected causal model by Self-Forcing DMD against a bidirectional teacher (both from "
                   "CausalWan Model Loader): the model generates videos chunk by chunk as the sampler does, a frozen "
                   "teacher with guidance scores them, a critic learns the model's own videos. Saves the result into "
                   "diffusion_models and outputs it for a sampler. Needs a lot of GPU memory: the planner's estimate "
                   "is printed first.")
    CATEGORY = CATEGORY
    FUNCTION = "train"
    RETURN_TYPES = (MODEL, "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = ("The trained causal model (EMA weights once the EMA has started), ready for the sampler.",
                       "Where it was saved, the steps run, the last losses and the memory estimate.")

    @classmethod
    def INPUT_TYPES(cls):
        from .text_encode import encoder_choices
        return {"required": {
            "model": (MODEL, {"tooltip": "The causal student to train (CausalWan Model Loader; bf16 or fp32 "
                                         "weights, not fp8). It is copied: the loaded model is not changed."}),
            "teacher": (MODEL, {"tooltip": "The bidirectional teacher (a Wan2.1 / Wan2.2 text-to-video model through "
                                           "CausalWan Model Loader); it gives the real score and starts the critic."}),
            "save_name": ("STRING", {"default": "CausalWan-trained", "tooltip": (
                "Name in models/diffusion_models: a folder for an expert pair, a .safetensors file for a dense "
                "model. An existing name is refused (nothing is overwritten); the same name again after Cancel "
                "resumes from the last checkpoint.")}),
            "steps": ("INT", {"default": 1000, "min": 1, "max": 1000000, "tooltip": (
                "Training iterations; the model is updated every 'critic_steps_per_update' of them.")}),
            "lr_generator": ("FLOAT", {"default": 2e-6, "min": 0.0, "max": 1.0, "step": 1e-7, "round": False,
                                       "tooltip": "Learning rate of the model (AdamW, betas 0 / 0.999)."}),
            "lr_critic": ("FLOAT", {"default": 4e-7, "min": 0.0, "max": 1.0, "step": 1e-8, "round": False,
                                    "tooltip": "Learning rate of the critic (fake score)."}),
            "guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1, "tooltip": (
                "Teacher guidance: cond + guidance x (cond - negative).")}),
            "critic_steps_per_update": ("INT", {"default": 5, "min": 1, "max": 100, "tooltip": (
                "Critic updates per model update (5 in Self-Forcing).")}),
            "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16, "tooltip": "Video width in pixels."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16,
                               "tooltip": "Video height in pixels."}),
            "latent_frames": ("INT", {"default": 21, "min": 1, "max": 1024, "tooltip": (
                "Length of the training videos in latent frames (21 = 81 video frames); memory grows with it.")}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Seed of every random draw."}),
            "activation_checkpointing": ("BOOLEAN", {"default": True, "tooltip": (
                "Recompute each transformer block in the backward pass instead of keeping its activations: "
                "much less memory, about a third more compute.")}),
        }, "optional": {
            "conditioning": ("CONDITIONING", {"tooltip": "Prompts (each entry of the CONDITIONING is one prompt)."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt for the teacher's guidance (default: empty)."}),
            "prompts_file": ("STRING", {"default": "", "tooltip": (
                "Or a UTF-8 text file with one prompt per line, encoded with text_encoder.")}),
            "text_encoder": (["none"] + encoder_choices(), {"default": "none", "tooltip": (
                "umT5 for the prompts file (models/text_encoders or a diffusers folder).")}),
            "negative_prompt": ("STRING", {"default": "", "multiline": True,
                                           "tooltip": "Negative prompt text for the prompts file."}),
            "start_images_folder": ("STRING", {"default": "", "tooltip": (
                "Optional folder of start images: image-to-video training (each video starts from one of them).")}),
            "vae": ("CAUSALWAN_VAE", {"tooltip": "The VAE that encodes the start images."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def train(self, model, teacher, save_name, steps, lr_generator, lr_critic, guidance, critic_steps_per_update,
              width, height, latent_frames, seed, activation_checkpointing=True, conditioning=None, negative=None,
              prompts_file="", text_encoder="none", negative_prompt="", start_images_folder="", vae=None,
              unique_id=None):
        from ..causal.training.config import TrainConfig
        from ..causal.training.export import check_free
        from ..causal.training.trainer import DMDTrainer, fresh_pair

        model.check()
        teacher.check()
        if width % 16 or height % 16:
            raise ValueError(f"width and height must be multiples of 16, got {width}x{height}")
        out = check_free(save_path(save_name, model.is_pair))  # before anything is loaded or written
        device = adapter.torch_device()
        cfg = TrainConfig(steps=steps, lr_generator=lr_generator, lr_critic=lr_critic, guidance=guidance,
                          gen_update_every=critic_steps_per_update, latent_frames=latent_frames,
                          latent_height=height // 8, latent_width=width // 8, seed=seed,
                          activation_checkpointing=activation_checkpointing, output=str(out),
                          checkpoint_dir=str(adapter.output_directory() / "causalwan_training" / out.name),
                          checkpoint_every=max(1, min(100, steps // 10)),
                          mixed_precision="bf16" if device.type == "cuda" else "no")
        prompts = prompt_set(conditioning, negative, prompts_file, text_encoder, negative_prompt,
                             start_latents(start_images_folder, vae, width, height))
        adapter.make_room(0, device, unload_all=True)
        trainer = DMDTrainer(cfg, fresh_pair(model.experts, device), fresh_pair(teacher.experts, device), prompts)
        estimate = trainer.memory_plan().describe()
        print(f"CausalWan Train (DMD): {estimate}")

        def report(info):
            adapter.progress(info["step"] + 1, steps, loss_curve_image(trainer.history), unique_id)

        trainer.train(callback=report, stop=adapter.interrupt_requested)
        adapter.throw_if_interrupted()  # Cancel: the checkpoint of the last step is complete; nothing exported
        path = trainer.export()
        experts, weights = trainer.generator, trainer.generator_weights()
        for n, m in experts.modules().items():
            m.load_state_dict(weights[n])
            m.requires_grad_(False).eval()
        last = trainer.history[-1] if trainer.history else {}
        text = (f"saved {path} after {trainer.step} steps; last losses: "
                + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step") + f"\n{estimate}")
        return (LoadedModel(experts, device, str(path), text, "resident"), text)
