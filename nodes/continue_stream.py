"""CausalWan Continue: more chunks after a finished stream, optionally under new prompts.

The upstream stream is forked, never advanced, so ComfyUI's cached sampler output stays valid: queueing again
with other prompts or chunk counts here reuses the prefix without recomputing it. The fork takes over the
upstream's KV caches on the device; the upstream keeps a copy in host memory for such a re-queue.
"""
from __future__ import annotations

import dataclasses

import torch

from ..causal.memory.host_room import check_host_room
from ..causal.memory.oom import explain_oom
from ..causal.sampling import settings
from . import comfy_adapter as adapter
from . import node_memory
from .chunk_runner import run_chunks
from .conditioning import as_prompt_list, to_schedule
from .latents import to_comfy_latent
from .values import CATEGORY, PROMPTS_OR_CONDITIONING, STREAM, VAE, StreamState

PREVIEW_WARMUP_FRAMES = 3


class CausalWanContinue:
    DESCRIPTION = ("Continues a stream from CausalWan Chunk Sampler (or another Continue) for more chunks, "
                   "optionally with new prompts. The upstream stream is kept (its caches wait in host memory), so "
                   "changing this node re-runs only this node.")
    CATEGORY = CATEGORY
    FUNCTION = "go_on"
    RETURN_TYPES = ("LATENT", STREAM)
    RETURN_NAMES = ("latent", "stream")
    OUTPUT_TOOLTIPS = ("The whole latent video so far: the upstream frames followed by the new chunks.",
                       "The stream after the new chunks, for another Continue.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "stream": (STREAM, {"tooltip": "Stream output of CausalWan Chunk Sampler or Continue."}),
            "num_chunks": ("INT", {"default": 4, "min": 1, "max": 1000, "tooltip": "Chunks to add."}),
        }, "optional": {
            "prompts": (PROMPTS_OR_CONDITIONING, {"tooltip": (
                "New prompt (CONDITIONING) or timeline (CausalWan Prompt Switch, chunks counted from 0 = the "
                "first chunk of this node), switched in with the timeline's mode. Unconnected: keep the "
                "stream's prompt.")}),
            "vae": (VAE, {"tooltip": "Optional CausalWan VAE for a live preview of each new chunk."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def go_on(self, stream: StreamState, num_chunks, prompts=None, vae=None, unique_id=None):
        if not isinstance(stream, StreamState):
            raise ValueError("the stream input must come from CausalWan Chunk Sampler or CausalWan Continue")
        stream.check()
        settings.check_chunks(num_chunks, "num_chunks")
        node_memory.release_previous("stream", unique_id)
        src, extra = stream.stream, num_chunks * stream.stream.options.chunk_frames
        h, w = src.latent_hw
        plan = stream.model.memory_plan(h * 8, w * 8, chunk_frames=src.options.chunk_frames,
                                        frames=src.next_frame + extra, window=src.options.window,
                                        sink=src.options.sink, cache_dtype=src.options.cache_dtype)
        # the upstream's parked copy is exactly its caches as they are (counted from them, not predicted)
        plan = dataclasses.replace(plan, host=plan.host + src.cache_bytes(), parked_frames=src.next_frame)
        # the fork takes over the upstream's caches (or, on a re-queue, gets its parked copy back): on the device
        # the caches only grow to the new length; the upstream keeps its copy in host memory (plan.host). Only
        # what is not on the device yet is asked for.
        # the upstream's parked caches are in host memory already; the rest of plan.host is new there
        check_host_room(plan, already=src.cache_bytes() - src.device_cache_bytes())
        adapter.make_room(max(0, plan.kv_cache - src.device_cache_bytes()), stream.model.device)
        schedule, slots = None, None
        if prompts is not None:
            prompts = as_prompt_list(prompts)
            slots = [e.slot for e in prompts.entries]
            schedule = to_schedule(prompts, stream.model.config.text_len, stream.latent.shape[0], num_chunks)
        warmup = stream.latent[:, :, -PREVIEW_WARMUP_FRAMES:] if vae is not None else None
        # the fork lives only in frames inside the block: explain_oom drops their traceback, so an out-of-memory
        # error that ComfyUI keeps does not keep the fork's caches on the device
        with explain_oom(plan, device=stream.model.device):  # out of memory: the planner's advice
            fork, chunks = self._run(src, extra, num_chunks, schedule, vae, unique_id, warmup, slots)
        latent = torch.cat([stream.latent] + [c.cpu() for c in chunks], dim=2)
        pieces = stream.pieces + [c.shape[2] for c in chunks]
        state = StreamState(fork, stream.model, latent, pieces)
        node_memory.remember("stream", unique_id, state)
        return (to_comfy_latent(latent, pieces), state)

    @staticmethod
    def _run(src, extra, num_chunks, schedule, vae, unique_id, warmup, slots):
        fork = src.fork()
        fork.reserve(extra)
        chunks, _ = run_chunks(fork, num_chunks, schedule, vae=vae, node_id=unique_id, warmup=warmup, slots=slots,
                               show_warmup=False)
        return fork, chunks
