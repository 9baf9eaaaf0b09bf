"""A throw-away ComfyUI home for the real-server and real-browser tests: tiny random models in the formats users
have (two experts as ComfyUI single files, a Self-Forcing-style .pt, a diffusers release folder, a Wan2.1 VAE),
the workflows' start image, a test-only text-conditioning node standing in for CLIPLoader + CLIPTextEncode (see
test_comfyui_server.py), and `prepare`, which turns a shipped workflow into an API prompt on those files."""
from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from causalwan.vae.random_init import random_vae
from node_models import write_release_folder
from shipped_workflows import FOLDER as WORKFLOW_FOLDER, all_workflows
from tiny_models import tiny_model
from workflow_format import ui_to_api

SIZE = 32  # pixels per side of every test video (latent 4x4)
TEXT_DIM = 4096  # umT5-XXL width, what ComfyUI's Wan CONDITIONING carries
EXPERT = dict(dim=128, num_heads=1, ffn_dim=64, text_dim=TEXT_DIM)  # head dim 128, as the loader infers it
FOLDER = "TinyCausalWan-Diffusers/"
STUB_NODE = "CausalWanTestTextConditioning"
STUB_FOLDER = "causalwan_test_conditioning"
REAL_UMT5 = os.environ.get("COMFYUI_REAL_UMT5") == "1"

# shipped file widget value -> the tiny file standing in for it
TINY_FILES = {
    "causalwan2.2_i2v_a14b_high_noise_bf16.safetensors": "tiny_high.safetensors",
    "causalwan2.2_i2v_a14b_low_noise_bf16.safetensors": "tiny_low.safetensors",
    "self_forcing_dmd.pt": "tiny_self_forcing_dmd.pt",
    "CausalWan2.2-I2V-A14B-Diffusers/": FOLDER,
    "wan_2.1_vae.safetensors": "tiny_vae.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "tiny_umt5.safetensors",
    "none": "none",
}

# The test-only node: CONDITIONING like ComfyUI 0.3.64's Wan text encoder returns (umT5 with attention mask and
# zeroed padding: [1, max(512, tokens), 4096], real rows first), seeded by the text so prompts differ.
STUB_SOURCE = f'''"""Test-only stand-in for CLIPLoader(type wan) + CLIPTextEncode, written by causalwan's
tests/comfy_home.py into a temporary custom_nodes folder. Not part of the pack."""
import hashlib

import torch


class {STUB_NODE}:
    CATEGORY = "testing"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"text": ("STRING", {{"multiline": True}})}}}}

    def encode(self, text):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        tokens = min(len(text.split()) + 1, 512)  # words + the end token
        cond = torch.zeros(1, 512, {TEXT_DIM})
        cond[:, :tokens] = 0.5 * torch.randn(1, tokens, {TEXT_DIM}, generator=torch.Generator().manual_seed(seed))
        return ([[cond, {{"pooled_output": None}}]],)


NODE_CLASS_MAPPINGS = {{"{STUB_NODE}": {STUB_NODE}}}
'''


# ------------------------------------------------------------------------------------------------ tiny files
def expert_state(seed: int, **kw) -> dict:
    return {k: v.contiguous() for k, v in tiny_model(seed, **{**EXPERT, **kw}).state_dict().items()}


def write_tiny_models(models: Path) -> None:
    """Tiny random models in the formats users have, in a ComfyUI models folder."""
    dm, vae_dir = models / "diffusion_models", models / "vae"
    high, low = expert_state(2), expert_state(1)
    # ComfyUI single files, as ComfyUI saves diffusion models (original Wan names under model.diffusion_model.)
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16) for k, v in high.items()},
              str(dm / "tiny_high.safetensors"))
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16) for k, v in low.items()},
              str(dm / "tiny_low.safetensors"))
    # a Self-Forcing training checkpoint: {"generator_ema": {"model.<original name>": tensor}, ...}
    dense = expert_state(3)
    torch.save({"generator_ema": {"model." + k: v for k, v in dense.items()}, "step": 600},
               str(dm / "tiny_self_forcing_dmd.pt"))
    vae_sd = {k: v.contiguous() for k, v in random_vae(base_dim=8, seed=0).state_dict().items()}
    save_file(vae_sd, str(vae_dir / "tiny_vae.safetensors"))
    write_release_folder(dm / FOLDER.rstrip("/"), high, low, vae_sd)  # the same pair and VAE as a diffusers folder


def write_tiny_umt5(path: Path) -> None:
    """A umT5 file ComfyUI's CLIPLoader(type "wan") loads: its SentencePiece model as the uint8 tensor
    "spiece_model" (as in Comfy-Org's umt5_xxl files), block 23's wi_1 weight [10240, 4096] (how ComfyUI tells
    umT5-XXL from other T5s; stored as zeros in fp8, 42 MB) and every norm and relative-attention bias (small,
    so those are defined). ComfyUI sizes the model from its own json; the other weights stay unset."""
    import sentencepiece as spm

    corpus = [line for p in all_workflows() for n in json.loads(p.read_text())["nodes"]
              if n["type"] == "CLIPTextEncode" for line in n["widgets_values"][:1]] * 8
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, vocab_size=100,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    sd = {"spiece_model": torch.tensor(list(buf.getvalue()), dtype=torch.uint8),
          "encoder.final_layer_norm.weight": torch.ones(4096, dtype=torch.float16)}
    for i in range(24):
        pre = f"encoder.block.{i}.layer."
        sd[pre + "0.layer_norm.weight"] = torch.ones(4096, dtype=torch.float16)
        sd[pre + "1.layer_norm.weight"] = torch.ones(4096, dtype=torch.float16)
        sd[pre + "0.SelfAttention.relative_attention_bias.weight"] = torch.zeros(32, 64, dtype=torch.float16)
    sd["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] = torch.zeros(10240, 4096,
                                                                           dtype=torch.float8_e4m3fn)
    save_file(sd, str(path))


def write_start_image(path: Path) -> None:
    """The LoadImage file of the workflows ("example.png"), a 56x40 gradient (cropped to 32x32 by Start)."""
    y, x = np.mgrid[0:40, 0:56]
    rgb = np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)


_seeds = itertools.count(1000)


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOW_FOLDER / name).read_text())


def prepare(name: str, info: dict, chunks: dict | None = None, real_text: bool = False, size: int = SIZE):
    """API prompt of a shipped workflow, converted against the live /object_info, with the file widgets on the
    tiny files, a small size, a fresh seed (so no run is answered from ComfyUI's cache) and `chunks`
    ({class_type: {input: value}}) applied. Returns (prompt, {class_type: [node ids]})."""
    prompt = ui_to_api(load_workflow(name), info)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        for key in ("high_noise_model", "low_noise_model", "diffusers_folder", "vae_name", "clip_name"):
            if key in inputs:
                assert inputs[key] in TINY_FILES, f"{name}: no tiny stand-in for {key}={inputs[key]!r}"
                inputs[key] = TINY_FILES[inputs[key]]
        if kind == "CausalWanImageConditioner":
            inputs.update(width=size, height=size)
        if kind in ("CausalWanChunkSampler",):
            inputs["seed"] = next(_seeds)
        inputs.update((chunks or {}).get(kind, {}))
    if not real_text:
        for nid in [k for k, v in prompt.items() if v["class_type"] == "CLIPLoader"]:
            del prompt[nid]
        for node in prompt.values():
            if node["class_type"] == "CLIPTextEncode":
                node["class_type"] = STUB_NODE
                node["inputs"] = {"text": node["inputs"]["text"]}
    ids: dict[str, list[str]] = {}
    for nid, node in prompt.items():
        ids.setdefault(node["class_type"], []).append(nid)
    return prompt, ids
