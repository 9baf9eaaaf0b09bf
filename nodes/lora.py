"""CausalWan LoRA: one LoRA file from models/loras on a CAUSALWAN_MODEL, with a strength per expert.

The output is the input model plus this LoRA in its list (chain nodes to stack LoRAs); the weights are shared and
never changed: the sampler puts exactly its model's LoRAs in force when it runs (causal/weights/lora.py), so a
bypassed or re-queued LoRA node leaves nothing behind.
"""
from __future__ import annotations

from . import comfy_adapter as adapter
from .values import CATEGORY, MODEL, LoadedModel


class CausalWanLoRA:
    DESCRIPTION = ("Applies a LoRA (style, motion, distill, LongLive's) to a causal Wan model, with its own strength "
                   "for the high-noise and the low-noise expert. Chain several to stack them. Reads ComfyUI/kohya "
                   "(lora_unet_...), diffusers/peft (lora_A/lora_B) and original (lora_down/lora_up + alpha) files.")
    CATEGORY = CATEGORY
    FILE_INPUTS = ("lora_name",)  # filled from the loras folders
    FUNCTION = "apply"
    RETURN_TYPES = (MODEL, "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The model with this LoRA added, for CausalWan Chunk Sampler or another CausalWan LoRA.",
                       "Which LoRAs are on, at which strengths, and how many layers each expert gets.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "Model from CausalWan Model Loader (or another CausalWan LoRA)."}),
            "lora_name": (adapter.model_files("loras") or ["none"], {"tooltip": (
                "LoRA file from models/loras. Wan2.2 A14B LoRAs often come as a HIGH and a LOW file: chain two "
                "nodes, the HIGH file with strength_low 0 and the LOW file with strength_high 0.")}),
            "strength_high": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05, "tooltip": (
                "Strength on the high-noise expert (early, noisy steps). Ignored for a dense model. 0: off.")}),
            "strength_low": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05, "tooltip": (
                "Strength on the low-noise expert, or on the one expert of a dense model (Self-Forcing, "
                "CausVid, LongLive). 0: off.")}),
        }}

    def apply(self, model: LoadedModel, lora_name, strength_high=1.0, strength_low=1.0):
        from ..causal.weights.lora import LoraUse, check_strength, describe, patches_for
        from ..causal.weights.lora_keys import read_lora

        if not isinstance(model, LoadedModel):
            raise ValueError("the model input must come from CausalWan Model Loader or another CausalWan LoRA")
        model.check()
        if lora_name == "none":
            raise ValueError("no LoRA file chosen: put LoRA files in ComfyUI/models/loras and refresh the page")
        lora = read_lora(adapter.get_full_path("loras", lora_name))
        use = LoraUse(lora, check_strength(strength_high, "strength_high"), check_strength(strength_low, "strength_low"))
        layers, skipped = {}, {}
        for name, expert in model.experts.modules().items():  # fails here, at this node, if the LoRA does not fit
            found = patches_for(lora, expert)
            layers[name] = len(found.patches) if use.strength(name) != 0 else 0
            skipped[name] = len(found.skipped)
        return (model.with_lora(use), describe([use], layers, skipped))
