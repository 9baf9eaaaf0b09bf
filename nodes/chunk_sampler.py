"""CausalWan Chunk Sampler: streams a video chunk by chunk from a start (image or noise) under a prompt timeline."""
from __future__ import annotations

import dataclasses

import torch

from ..causal.memory.host_room import check_host_room
from ..causal.memory.oom import explain_oom
from ..causal.model.kv_cache import check_window
from ..causal.sampling import settings
from ..causal.sampling.defaults import MODEL as FROM_MODEL, resolve_options
from ..causal.sampling.schedule import parse_steps
from ..causal.model.kv_cache import CACHE_DTYPES
from ..causal.sampling.stream import Stream, StreamOptions, frames_after
from . import comfy_adapter as adapter
from . import node_memory
from .chunk_runner import run_chunks
from .decode import join_frames
from .conditioning import as_prompt_list, to_schedule
from .latents import to_comfy_latent
from .values import CATEGORY, MODEL, PROMPTS_OR_CONDITIONING, START, STREAM, VAE, DecodedFrames, StreamState

MAX_CHUNKS = 1000


def stream_options(steps: str, shift: float, frames_per_chunk: int, window_frames: int,
                   sink_frames: int, kv_cache: str = "auto") -> StreamOptions:
    """Widget values -> StreamOptions (empty steps: the model's own list; shift 0: the checkpoint's; frames per
    chunk 0, window -1, sink -1: the model's release's, see causal/sampling/defaults.py), checked by the same
    rules as the command line's flags."""
    if kv_cache not in CACHE_DTYPES:
        raise ValueError(f"unknown kv_cache {kv_cache!r}; choose one of {', '.join(CACHE_DTYPES)}")
    chunk_frames = settings.check_int(frames_per_chunk, "frames_per_chunk", 0, hint="0 for the model's own, 3 for "
                                                                                     "the released models")
    window = settings.check_int(window_frames, "window_frames", -1, hint="-1 for the model's own, 0 for no window")
    sink = settings.check_int(sink_frames, "sink_frames", -1, hint="-1 for the model's own, e.g. 3 with a window")
    return StreamOptions(cache_dtype=CACHE_DTYPES[kv_cache], chunk_frames=chunk_frames or FROM_MODEL,
                         steps=tuple(parse_steps(steps)) if steps and steps.strip() else None,
                         shift=settings.check_shift(shift, "shift", zero_means="the checkpoint's shift"),
                         window=FROM_MODEL if window < 0 else (window or None),
                         sink=FROM_MODEL if sink < 0 else sink)


class CausalWanChunkSampler:
    DESCRIPTION = ("Generates a video chunk after chunk with a causal Wan model: each chunk is denoised in a few "
                   "steps while attending to everything made before it (KV cache), so the video can run on "
                   "and change prompt mid-stream. Connect a VAE to see each chunk as it is made.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", STREAM)
    RETURN_NAMES = ("latent", "stream")
    OUTPUT_TOOLTIPS = ("The whole latent video (start frame included) in Wan VAE space: for CausalWan Decode "
                       "(or core VAE Decode with a Wan VAE).",
                       "The stream after its last chunk, for CausalWan Continue.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "Model from CausalWan Model Loader."}),
            "start": (START, {"tooltip": "Start image and video size from CausalWan Start."}),
            "prompts": (PROMPTS_OR_CONDITIONING, {"tooltip": (
                "A CONDITIONING (CLIPTextEncode with a 'wan' CLIPLoader) for one prompt, or a timeline from "
                "CausalWan Prompt Switch.")}),
            "num_chunks": ("INT", {"default": 7, "min": 1, "max": MAX_CHUNKS, "tooltip": (
                "Chunks to generate. With 3 latent frames per chunk each chunk adds 12 video frames; 7 chunks "
                "after a start image make 85 frames.")}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the noise of every chunk."}),
            "steps": ("STRING", {"default": "", "multiline": False, "tooltip": (
                "Denoising timesteps per chunk, e.g. '1000, 750, 500, 250'. Empty: the model's own list "
                "(8 steps for CausalWan2.2-I2V-A14B, 4 for Self-Forcing). They are warped by the shift.")}),
            "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": (
                "Scheduler shift that warps the timesteps. 0: from the checkpoint (5 when it says nothing).")}),
            "frames_per_chunk": ("INT", {"default": 0, "min": 0, "max": 21, "tooltip": (
                "Latent frames per chunk (4 video frames each). 0: the model's, as the loader's text says (3 for "
                "chunk-wise models, 1 for frame-wise Causal Forcing).")}),
            "window_frames": ("INT", {"default": -1, "min": -1, "max": 1024, "tooltip": (
                "Attention window in latent frames (rolling KV cache), for long videos in bounded memory. "
                "0: attend to everything made so far (memory grows with the video). -1: the model's (12 for "
                "LongLive, 9 for Reward Forcing, none for the others).")}),
            "sink_frames": ("INT", {"default": -1, "min": -1, "max": 1024, "tooltip": (
                "With a window: the first frames that always stay in the cache (attention sink), e.g. 3. "
                "Must be smaller than the window. -1: the model's (3 for LongLive and Reward Forcing).")}),
            "kv_cache": (list(CACHE_DTYPES), {"default": "auto", "tooltip": (
                "Number format of the attention (KV) cache. auto: the model's compute dtype (bf16). fp8_e4m3fn: "
                "about half the cache memory (one scale per token), for long videos or small GPUs.")}),
        }, "optional": {
            "vae": (VAE, {"tooltip": "Optional CausalWan VAE: each chunk is decoded for a live preview."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, steps=None):
        if isinstance(steps, str) and steps.strip():
            try:
                parse_steps(steps)
            except ValueError as e:
                return str(e)
        return True

    def sample(self, model, start, prompts, num_chunks, seed, steps="", shift=0.0, frames_per_chunk=0,
               window_frames=-1, sink_frames=-1, kv_cache="auto", vae=None, unique_id=None):
        settings.check_chunks(num_chunks, "num_chunks")  # every input checked before anything is freed or run
        settings.check_seed(seed, "seed")
        options = resolve_options(stream_options(steps, shift, frames_per_chunk, window_frames, sink_frames,
                                                 kv_cache), model.experts)
        check_window(options.window, options.sink, options.chunk_frames)
        prompts = as_prompt_list(prompts)
        schedule = to_schedule(prompts, model.config.text_len, start.batch, num_chunks, first_mode="cut")
        model.use()  # its LoRAs (CausalWan LoRA nodes) in force, any others off
        node_memory.release_previous("stream", unique_id)  # the last run's caches go before new ones are made
        start_frames = 0 if start.latent is None else start.latent.shape[2]
        total = frames_after(model.experts, start_frames, num_chunks, options.chunk_frames)  # T2V pair: frame 0 alone
        options = dataclasses.replace(options, max_frames=total)  # size a window-less KV cache once
        plan = model.memory_plan(start.latent_hw[0] * 8, start.latent_hw[1] * 8, chunk_frames=options.chunk_frames,
                                 frames=total, window=options.window, sink=options.sink,
                                 cache_dtype=options.cache_dtype)
        check_host_room(plan)  # swap/blocks: the idle expert's cache waits in host memory
        adapter.make_room(plan.kv_cache, model.device)
        with explain_oom(plan, device=model.device):  # out of memory: the planner's advice (mode, fp8 cache, size)
            return self._run(model, start, schedule, options, num_chunks, seed, vae, unique_id,
                             [e.slot for e in prompts.entries])

    def _run(self, model, start, schedule, options, num_chunks, seed, vae, unique_id, slots):
        start_frames = 0 if start.latent is None else start.latent.shape[2]
        stream = Stream(model.experts, seed=seed, options=options, latent_hw=start.latent_hw, batch=start.batch,
                        device=model.device)
        pieces, parts = [], []
        if start.latent is not None:
            stream.set_prompt(schedule.changes[0].context)
            stream.prime(start.latent)
            pieces.append(start_frames)
            parts.append(start.latent.float().cpu())
        chunks, frames = run_chunks(stream, num_chunks, schedule, vae=vae, node_id=unique_id, warmup=start.latent,
                                    slots=slots)
        parts += [c.cpu() for c in chunks]
        pieces += [c.shape[2] for c in chunks]
        latent = torch.cat(parts, dim=2)
        # the preview decoder ran over the whole video (start frame first): keep its frames for CausalWan Decode
        decoded = DecodedFrames(vae.vae, join_frames(frames, start.batch)) if frames else None
        state = StreamState(stream, model, latent, pieces, decoded)
        node_memory.remember("stream", unique_id, state)
        return (to_comfy_latent(latent, pieces, decoded), state)
