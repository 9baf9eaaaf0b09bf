"""The CausalWan nodes (classic ComfyUI API): ids and display names, one class per file."""
from . import comfy_adapter
from .chunk_sampler import CausalWanChunkSampler
from .continue_stream import CausalWanContinue
from .decode import CausalWanDecode
from .lora import CausalWanLoRA
from .model_loader import CausalWanModelLoader
from .prompt_switch import CausalWanPromptSwitch
from .start_image import CausalWanImageConditioner
from .text_encode import CausalWanTextEncode
from .train_dmd import CausalWanTrainDMD
from .vae_loader import CausalWanVAELoader

NODE_CLASS_MAPPINGS = {
    "CausalWanModelLoader": CausalWanModelLoader,
    "CausalWanLoRA": CausalWanLoRA,
    "CausalWanVAELoader": CausalWanVAELoader,
    "CausalWanImageConditioner": CausalWanImageConditioner,
    "CausalWanTextEncode": CausalWanTextEncode,
    "CausalWanPromptSwitch": CausalWanPromptSwitch,
    "CausalWanChunkSampler": CausalWanChunkSampler,
    "CausalWanContinue": CausalWanContinue,
    "CausalWanDecode": CausalWanDecode,
    "CausalWanTrainDMD": CausalWanTrainDMD,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CausalWanModelLoader": "CausalWan Model Loader",
    "CausalWanLoRA": "CausalWan LoRA",
    "CausalWanVAELoader": "CausalWan VAE Loader",
    "CausalWanImageConditioner": "CausalWan Start (Image or Text)",
    "CausalWanTextEncode": "CausalWan Text Encode (umT5)",
    "CausalWanPromptSwitch": "CausalWan Prompt Switch",
    "CausalWanChunkSampler": "CausalWan Chunk Sampler",
    "CausalWanContinue": "CausalWan Continue Stream",
    "CausalWanDecode": "CausalWan Decode (Streaming VAE)",
    "CausalWanTrainDMD": "CausalWan Train (DMD)",
}

comfy_adapter.offer_tiny_world_image()  # the tiny world workflow's start image, in ComfyUI's input folder

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
