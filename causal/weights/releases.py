"""The causal Wan releases users download, recognised from their files, with the way each is sampled by default.

Every release below stores a plain Wan DiT (original key names), so one loader reads them all; what differs is
the wrapping (a training .pt with generator_ema / generator entries and a `model.` prefix, a safetensors file
with or without the prefix, ComfyUI core's `ar_convert` output with bare keys) and how the release samples.
The sampling facts come from each release's own inference config:
- Self-Forcing (guandeh17/Self-Forcing, self_forcing_dmd.pt, --use_ema): steps 1000,750,500,250 warped by
  shift 5, 3 frames per chunk, no window.
- CausVid (tianweiy/CausVid, autoregressive_checkpoint/model.pt, entry generator): steps 1000,757,522 given to
  the model unwarped (shift 1 here), 3 frames per chunk.
- Causal Forcing (thu-ml/Causal-Forcing): chunkwise/causal_forcing.pt (3 frames per chunk) and
  framewise/causal_forcing.pt (1 frame per chunk), 4 steps at shift 5; Causal Forcing++ framewise-2step.pt
  (1000,500) and framewise-1step.pt (1000), whose first chunk is denoised with the 4-step list;
  chunkwise/longvideo.pt is sampled by Rolling Forcing's sampler in the release.
- ComfyUI core's ar_convert (Causal Forcing repackaged, e.g. causal_forcing-framewise.safetensors): bare keys;
  core's SamplerARVideo takes the frames per block from the user, the file name says frame-wise or chunk-wise.
- LongLive 1.3B (NVlabs/LongLive v1, longlive_base.pt entry generator + lora.pt entry generator_lora, peft
  rank 256 alpha 256): 4 steps at shift 5, chunk 3, attention window 12 with 3 sink frames.
- Reward Forcing (rewardforcing.pt, --use_ema): 4 steps at shift 5, chunk 3, window 9 with 3 sink frames, whose
  sink is an EMA of evicted frames in the release.
- Krea Realtime 14B (krea-realtime-video-14b.safetensors, keys under `model.`): steps 1000,937,833,625 unwarped
  (= 1000,750,500,250 at shift 5 rounded down), chunk 3; the release re-computes the KV cache of the last frames
  every chunk.
A safetensors file may also state the values in its metadata with the releases' own config names
(num_frame_per_block, denoising_step_list[_first_chunk], timestep_shift, local_attn_size, sink_size).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..sampling.defaults import CAUSALWAN_A14B, SELF_FORCING, ModelDefaults
from ..sampling.schedule import SELF_FORCING_STEPS

SF_PT = "a torch .pt whose generator_ema (or generator) entry holds the DiT under 'model.' (model.blocks.0.self_attn.q.weight, ...)"


@dataclass(frozen=True)
class Release:
    tokens: tuple  # any of these in the file name or its two parent folders (lower case) marks the release
    defaults: ModelDefaults
    layout: str  # what its files hold, for error messages
    entries: tuple | None = None  # .pt entries in the order the release's own inference reads them


def _d(name, steps=SELF_FORCING_STEPS, shift=5.0, chunk=3, window=None, sink=0, note="", first=None):
    return ModelDefaults(name, tuple(steps), shift, chunk, window, sink, note, first)


RELEASES = (  # order matters: the first release whose token appears wins
    Release(("framewise-1step", "framewise_1step"), _d("Causal Forcing++ frame-wise 1-step", (1000,), chunk=1,
                                                       first=SELF_FORCING_STEPS), SF_PT),
    Release(("framewise-2step", "framewise_2step"), _d("Causal Forcing++ frame-wise 2-step", (1000, 500), chunk=1,
                                                       first=SELF_FORCING_STEPS), SF_PT),
    Release(("framewise", "frame-wise", "frame_wise"), _d("Causal Forcing frame-wise", chunk=1),
            f"{SF_PT}, or ComfyUI's ar_convert .safetensors with bare keys (blocks.0.self_attn.q.weight, ...)"),
    Release(("longvideo",), _d("Causal Forcing long video", note="the release samples it with Rolling Forcing's "
                                                                 "rolling window, which is not reproduced"), SF_PT),
    Release(("causal_forcing", "causal-forcing", "causalforcing", "chunkwise", "chunk-wise"),
            _d("Causal Forcing chunk-wise"),
            f"{SF_PT}, or ComfyUI's ar_convert .safetensors with bare keys (blocks.0.self_attn.q.weight, ...)"),
    Release(("longlive",), _d("LongLive", window=12, sink=3),
            "longlive_base.pt whose generator entry holds the DiT under 'model.'; its lora.pt (entry generator_lora, "
            "peft lora_A/lora_B keys) goes into the CausalWan LoRA node", ("generator", "generator_ema")),
    Release(("rewardforcing", "reward_forcing", "reward-forcing"),
            _d("Reward Forcing", window=9, sink=3, note="the release's sink is an EMA of evicted frames; here the "
                                                         "sink holds the first frames"), SF_PT),
    Release(("krea",), _d("Krea Realtime 14B", (1000, 937, 833, 625), shift=1.0, note="steps given unwarped as the "
                                                                                      "release does; its per-chunk KV "
                                                                                      "re-compute is not reproduced"),
            "a .safetensors (or .pt) holding the Wan2.1-14B DiT under 'model.' (model.blocks.0.self_attn.q.weight, ...)"),
    Release(("causvid", "autoregressive_checkpoint"), _d("CausVid", (1000, 757, 522), shift=1.0,
                                                         note="steps given unwarped as the release does"),
            "a torch .pt whose generator entry holds the DiT under 'model.' (model.blocks.0.self_attn.q.weight, ...)"),
    Release(("self_forcing", "self-forcing", "selfforcing"), _d("Self-Forcing"), SF_PT),
)


def _names(path) -> str:
    p = Path(path)
    return " ".join(x.lower() for x in (p.name, p.parent.name, p.parent.parent.name))


def entries_for(path) -> tuple | None:
    """The .pt entries the release named by `path` reads, in its order (LongLive: generator, not generator_ema)."""
    r = by_name(path)
    return r.entries if r is not None else None


def by_name(path) -> Release | None:
    """The release a file or folder's name (and its two parent folders) says, if any."""
    names = _names(path)
    for r in RELEASES:
        if any(t in names for t in r.tokens):
            return r
    return None


_META = {"num_frame_per_block": "chunk_frames", "local_attn_size": "window", "sink_size": "sink",
         "timestep_shift": "shift", "denoising_step_list": "steps", "denoising_step_list_first_chunk": "first_steps"}


def _from_metadata(defaults: ModelDefaults, metadata: dict) -> ModelDefaults:
    """Values a safetensors file states in its metadata (the releases' config names) override the defaults."""
    new = {}
    for key, field in _META.items():
        raw = (metadata or {}).get(key)
        if raw is None:
            continue
        try:
            val = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            val = [float(v) for v in re.split(r"[,\s]+", raw.strip("[] ")) if v]
        if field in ("steps", "first_steps"):
            new[field] = tuple(float(v) for v in val if float(v) > 0)
        elif field == "window":
            new[field] = int(val) if int(val) > 0 else None
        else:
            new[field] = float(val) if field == "shift" else int(val)
    if not new:
        return defaults
    return dataclasses.replace(defaults, name=f"{defaults.name} (values from the file's metadata)", **new)


def recognise(path, metadata: dict | None, pair: bool) -> ModelDefaults:
    """How the model loaded from `path` is sampled by default (see the module docstring)."""
    if pair:
        return CAUSALWAN_A14B
    r = by_name(path)
    base = r.defaults if r is not None else SELF_FORCING
    d = _from_metadata(base, metadata or {})
    entry = (metadata or {}).get("entry")
    if entry:
        d = dataclasses.replace(d, name=f"{d.name}, weights from the '{entry}' entry")
    return d
