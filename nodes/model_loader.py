"""CausalWan Model Loader: two expert files, a diffusers folder, or one dense causal checkpoint -> CAUSALWAN_MODEL."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..causal.memory.oom import explain_oom, is_oom
from . import comfy_adapter as adapter
from . import node_memory
from ..causal.sampling.defaults import model_defaults
from .node_text import with_text
from .values import CATEGORY, MODEL, LoadedModel

log = logging.getLogger("causalwan")

NONE = "none"
DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}
OFFLOAD_MODES = ("auto", "resident", "swap", "blocks")
BIG_LOAD_BYTES = 4 << 30  # above this, ComfyUI is asked to unload all its models first


def _bytes_on_disk(path: str) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".bin", ".pth"))


REFERENCE_SIZE = (480, 832, 21)  # height, width, latent frames (81 video frames) of the memory-plan line


def _describe_plan(model: LoadedModel) -> str:
    """One line: what was loaded, and the predicted peak memory of a reference stream (causal/memory/memory_plan.py)."""
    experts = model.experts.modules()
    first = next(iter(experts.values()))
    params = sum(p.numel() for p in first.parameters())
    kind = "expert pair (high/low noise)" if model.is_pair else "dense model"
    head = (f"{kind}: {len(experts)} x {params / 1e9:.2f}B params, {str(first.dtype).replace('torch.', '')}, "
            f"offload {model.offload}{' (auto)' if getattr(model.policy, 'plan', None) else ''}, compute on "
            f"{model.device}")
    head = f"{model_defaults(model.experts).describe(model.experts.shift)}\n{head}"  # the release and its sampling
    try:
        h, w, frames = REFERENCE_SIZE
        plan = model.memory_plan(h, w, frames=frames)
        return f"{head}; {plan.describe()}"
    except Exception as e:  # a plan is advice: never fail a load because of it
        log.warning("CausalWan: no memory plan: %s", e)
        return head


class CausalWanModelLoader:
    DESCRIPTION = ("Loads a causal (chunk-autoregressive) Wan model: the two experts of CausalWan2.2-I2V-A14B "
                   "(high-noise and low-noise files, or a diffusers folder), or one dense causal checkpoint "
                   "(Self-Forcing / CausVid 1.3B) given as the low-noise file alone.")
    CATEGORY = CATEGORY
    FILE_INPUTS = ("high_noise_model", "low_noise_model", "diffusers_folder")  # filled from the model folders
    FUNCTION = "execute"
    RETURN_TYPES = (MODEL, "STRING")
    RETURN_NAMES = ("model", "memory_plan")
    OUTPUT_TOOLTIPS = ("The loaded model for CausalWan Chunk Sampler.",
                       "The release recognised from the files with the steps, shift, frames per chunk and window it is "
                       "sampled with by default (the sampler's 'model' settings), then the weights, where they live "
                       "and the offload mode.")

    @classmethod
    def INPUT_TYPES(cls):
        files = [NONE] + adapter.model_files("diffusion_models")
        folders = [NONE] + adapter.diffusers_folders("diffusion_models")
        return {"required": {
            "high_noise_model": (files, {"default": NONE, "tooltip": (
                "High-noise expert file from models/diffusion_models (used for t >= boundary). 'none' for a "
                "diffusers folder or a dense model.")}),
            "low_noise_model": (files, {"default": NONE, "tooltip": (
                "Low-noise expert file from models/diffusion_models. A dense causal checkpoint (Self-Forcing, "
                "CausVid) goes here alone, with high_noise_model 'none'.")}),
            "diffusers_folder": (folders, {"default": NONE, "tooltip": (
                "Or a diffusers folder under models/diffusion_models (transformer/, transformer_2/, "
                "model_index.json); leave both files at 'none' then.")}),
            "weight_dtype": (list(DTYPES), {"default": "auto", "tooltip": (
                "Dtype the weights are kept in. auto: as stored, except fp32 files compute in bf16 on a GPU (fp16 "
                "where the GPU has no bf16); fp8 files stay fp8. "
                "fp8_e4m3fn halves the memory of the blocks; compute stays in bf16.")}),
            "boundary": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 999.0, "step": 1.0, "tooltip": (
                "Timestep where sampling hands over from the high- to the low-noise expert. -1: from the "
                "checkpoint (model_index.json boundary_ratio; 875 for CausalWan2.2-I2V-A14B).")}),
            "offload": (list(OFFLOAD_MODES), {"default": "auto", "tooltip": (
                "resident: all weights on the GPU. swap: one expert on the GPU at a time. blocks: stream the "
                "blocks of the running expert. auto: the least offloading that fits free memory.")}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def execute(self, **inputs):
        """ComfyUI's entry: load(), and the memory plan shown as text on the node."""
        model, plan = self.load(**inputs)
        return with_text((model, plan), plan)

    def load(self, high_noise_model, low_noise_model, diffusers_folder, weight_dtype="auto", boundary=-1.0,
             offload="auto", unique_id=None):
        from ..causal.memory.offload import apply_offload
        from ..causal.weights.loader import auto_float_dtype, load_experts, prepare_experts

        if weight_dtype not in DTYPES:
            raise ValueError(f"unknown weight dtype {weight_dtype!r}; choose one of {', '.join(DTYPES)}")
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload mode {offload!r}; choose one of {', '.join(OFFLOAD_MODES)}")
        high = None if high_noise_model == NONE else adapter.get_full_path("diffusion_models", high_noise_model)
        low = None if low_noise_model == NONE else adapter.get_full_path("diffusion_models", low_noise_model)
        folder = None if diffusers_folder == NONE else adapter.get_full_path("diffusion_models", diffusers_folder)
        if folder is not None and (high or low):
            raise ValueError("choose either a diffusers folder or model files, not both: set high_noise_model and "
                             "low_noise_model to 'none' to load the folder")
        if folder is None and low is None:
            raise ValueError("no model chosen: pick the low-noise file (and the high-noise file for an expert "
                             "pair), or a diffusers folder" if high is None else
                             "the low-noise expert is missing: an expert pair needs both files (for a dense model "
                             "put its file in low_noise_model and set high_noise_model to 'none')")
        if high is not None and high == low:
            raise ValueError("high_noise_model and low_noise_model are the same file; pick the two experts")

        node_memory.release_previous("model", unique_id)  # never hold two loads of this node at once
        device = adapter.torch_device()
        paths = [p for p in (high, low, folder) if p]
        size = sum(map(_bytes_on_disk, paths))
        adapter.make_room(size, device, unload_all=size > BIG_LOAD_BYTES)
        load_device = device if offload == "resident" else torch.device("cpu")
        try:
            prepared = prepare_experts(high, low, folder)  # the headers, read once for the plan and the load
            plan = _load_plan(prepared, weight_dtype, offload)
            with explain_oom(plan, device=device):  # out of memory: the planner's advice (mode, fp8, size)
                experts = load_experts(prepared=prepared, dtype=DTYPES[weight_dtype],
                                       device=load_device, boundary=None if boundary < 0 else float(boundary),
                                       float_dtype=auto_float_dtype(device))
                policy = apply_offload(experts, offload, device)  # "auto" plans on free GPU memory; CPU: resident
        except (KeyError, RuntimeError) as e:  # shape/key mismatches deep in loading: say which files
            if is_oom(e):
                raise
            raise ValueError(f"could not load {', '.join(map(_name, paths))} as a causal Wan model: {e}") from e
        model = LoadedModel(experts, device, ", ".join(map(_name, paths)), "", policy.mode, policy=policy)
        model.plan = _describe_plan(model)
        log.info("CausalWan: loaded %s; %s", model.source, model.plan)
        node_memory.remember("model", unique_id, model)
        return (model, model.plan)


def _load_plan(prepared, weight_dtype: str, offload: str):
    """The planner's prediction for the reference stream in the chosen mode, from the file headers alone."""
    from ..causal.memory.memory_plan import MODES, plan_memory

    cfg, n = prepared.config, prepared.count
    h, w, frames = REFERENCE_SIZE
    return plan_memory(cfg, h, w, frames=frames, experts=n, mode=offload if offload in MODES else "resident",
                       weight_dtype=DTYPES[weight_dtype] or torch.bfloat16, shared_cross=n == 2)


def _name(path: str) -> str:
    return Path(path).name or str(path)
