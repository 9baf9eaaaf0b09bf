"""The streaming loop: an explicit state object that generates a video chunk after chunk.

    stream = Stream(experts, seed=0)           # caches per expert, cross-attention cache, RNG, next frame
    stream.set_prompt(text)                    # [B, tokens, text_dim]
    stream.prime(start_latent)                 # image-to-video: frame 0 into every expert's cache at t = 0
    for chunk in stream.chunks(7):             # each chunk [B, 16, 3, h, w] as soon as it is denoised
        ...

Per chunk: fresh noise -> few-step denoise (expert chosen by t against the boundary) -> the clean chunk is run
again at t = 0 through every expert (low first, then high) so the caches hold it -> next chunk. Everything a
later chunk needs lives in the Stream, so prompt switches, continuing a stopped stream (`fork`) and tests use
the same path.

Continuing never holds the KV caches twice on the compute device: `fork` hands this stream's cache buffers to
the new stream and keeps a copy in host memory ("parked"), copied back only if this stream is forked or run
again. Under swap/blocks offload (ExpertPair.park_idle_caches) only the running expert's cache is on the device;
the idle expert's waits in host memory. When the next model call switches expert, the two caches trade places
layer by layer during the last call of the current expert: each of its layers, once used, is copied out and the
next expert's layer copied into the same device buffers (on CUDA on a side stream, overlapping the call), so the
device holds one cache throughout (causal/sampling/cache_copier.py).

Training (Self-Forcing) uses this same loop: `next_chunk(exit_step=k)` runs steps 0..k-1 without grad, step k
with grad (when grad is enabled by the caller) and returns its x0 estimate; the context re-run stays without grad
and the KV cache never holds a graph (see KVCache.attend). `seed` may be a list, one generator per batch row, so
a sample's noise does not depend on which batch (or process) it is drawn in.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .cache_copier import HOST, CacheCopier
from .experts import ExpertPair
from ..model.kv_cache import KVCache, check_window, resolve_policy
from .prompts import PromptSchedule
from .defaults import resolve_options
from .schedule import CONTEXT_T, boundary_sigma, plan_steps, predict, renoise


@dataclass
class StreamOptions:
    """What decides a stream's output besides weights, prompt and seed."""

    chunk_frames: int | str = 3  # MODEL ("model"): the release's (causal/sampling/defaults.py)
    steps: tuple | None = None  # nominal timesteps; None: the model's own default
    first_steps: tuple | None = None  # the first chunk's steps (None: all chunks use steps; the model's when
    #                                   steps is None too)
    shift: float | None = None  # None: the model's (checkpoint scheduler) shift
    window: int | None | str = None  # attention window in latent frames (None: attend to everything; MODEL)
    sink: int | str = 0  # frames at the start never evicted from the window (MODEL: the release's)
    rope_policy: str = "auto"  # "absolute", "window", or "auto" (window when a window is set)
    cache_dtype: torch.dtype | None = None
    max_frames: int | None = None  # the stream's expected length: sizes a window-less cache once
    text_cache: bool = True  # False: every model call projects the text itself (sharded training models)


class Stream:
    """State and loop of one chunk-autoregressive generation."""

    def __init__(self, experts: ExpertPair, seed: int = 0, options: StreamOptions | None = None,
                 latent_hw: tuple[int, int] | None = None, batch: int = 1, cond_latent: torch.Tensor | None = None,
                 device=None):
        o = resolve_options(options or StreamOptions(), experts)
        if o.chunk_frames < 1:
            raise ValueError(f"frames per chunk must be at least 1, got {o.chunk_frames}")
        check_window(o.window, o.sink, o.chunk_frames)
        policy = resolve_policy(o.rope_policy, o.window)
        table = experts.config.rope_table
        if policy == "absolute" and o.max_frames is not None and o.max_frames > table:
            raise ValueError(f"a stream of {o.max_frames} latent frames goes past the {table}-frame RoPE table with "
                             f"absolute positions; set an attention window (e.g. 12 frames with 3 sink frames), "
                             f"which uses window-relative positions and runs for any length")
        self.experts, self.options = experts, o
        self.device = torch.device(device) if device is not None else experts.low.device
        self.shift = o.shift if o.shift is not None else experts.shift
        self.plan = plan_steps(o.steps, self.shift, experts.boundary)
        # the first chunk's own step list (Causal Forcing++ 1/2-step models denoise their first chunk in 4 steps)
        self.first_plan = plan_steps(o.first_steps, self.shift, experts.boundary) if o.first_steps else None
        self.sigma_b = boundary_sigma(experts.boundary, self.shift) if experts.boundary is not None else None
        n_layers = experts.config.num_layers
        self.caches = {n: KVCache(n_layers, o.window, o.sink, policy, o.cache_dtype, experts.config.rope_table,
                                  capacity=o.max_frames) for n in experts.names}
        self.copier = CacheCopier(self.device)  # parks and brings back caches (shared by forks: one side stream)
        self.cross: dict[str, list] = {}
        self.prompt: torch.Tensor | None = None
        self.clip_fea: torch.Tensor | None = None
        self.cond_latent = None if cond_latent is None else cond_latent.to(self.device)
        seeds = [int(v) for v in seed] if isinstance(seed, (list, tuple)) else [int(seed)]
        self.generators = [torch.Generator().manual_seed(v) for v in seeds]
        self.next_frame = 0
        self.chunk_index = 0
        self.history: list[tuple[int, torch.Tensor]] = []  # clean chunks still visible to some cache
        self.latent_hw, self.batch = latent_hw, batch
        self.expert_calls: list[tuple[str, float]] = []  # (expert, t) of recent model calls, for inspection
        self.grad_calls: list[tuple[str, float]] = []  # (expert, t) of the calls made with grad (training)

    # ----------------------------------------------------------------- conditioning
    def set_prompt(self, context: torch.Tensor, clip_fea: torch.Tensor | None = None, mode: str = "cut") -> None:
        """Use new text from the next chunk on. "cut": only the cross-attention cache changes; "recache": also
        re-run the cached clean frames at t = 0 so their keys/values follow the new text."""
        if mode not in ("cut", "recache"):
            raise ValueError(f"unknown prompt switch mode {mode!r}; choose 'cut' or 'recache'")
        if mode == "cut" and self.cross and context is self.prompt and clip_fea is self.clip_fea:
            return  # already in force (e.g. the schedule's chunk-0 prompt, set before priming)
        self.prompt, self.clip_fea = context, clip_fea
        self.cross = {}
        if not self.options.text_cache:  # sharded training models project their own text in their forward; a
            if self.experts.share_cross_cache:  # shared cache still gives the low expert the high expert's
                self.cross = {"low": self.experts.get("high").cross_kv(context, clip_fea)}
        elif self.experts.share_cross_cache:  # the released A14B: the high expert's cache serves both experts
            shared = self.experts.get("high").cross_kv(context, clip_fea)
            self.cross = {n: shared for n in self.experts.names}
        else:
            for n in self.experts.names:
                self.cross[n] = self.experts.get(n).cross_kv(context, clip_fea)
        if mode == "recache" and self.history:
            self.recache()

    def recache(self) -> None:
        """Clear the caches and re-run every held clean chunk at t = 0 under the current prompt."""
        for c in self.caches.values():
            c.clear()
        for i, (start, chunk) in enumerate(self.history):
            self._write_context(chunk, start, then=self.experts.names[0] if i + 1 < len(self.history) else None)

    # ----------------------------------------------------------------- model calls
    def _cond(self, start: int, frames: int):
        if self.cond_latent is None:
            return None
        if start + frames > self.cond_latent.shape[2]:
            raise ValueError(f"the conditioning latent covers {self.cond_latent.shape[2]} frames; frame "
                             f"{start + frames - 1} was asked for")
        return self.cond_latent[:, :, start:start + frames]

    def _call(self, name: str, x: torch.Tensor, t: float, start: int, grad: bool = False,
              then: str | None = None) -> torch.Tensor:
        """One model call of expert `name`; `then`: the expert of the next call, if known, so a switch of
        expert hands the device over to its cache during this call (CacheCopier.handover)."""
        if self.prompt is None:
            raise RuntimeError("set a prompt (set_prompt) before generating")
        model = self.experts.get(name)
        self.expert_calls.append((name, t))
        if len(self.expert_calls) > 1024:  # bounded, so endless streams keep constant memory
            del self.expert_calls[:512]
        self._place_caches(name)
        tt = torch.full((x.shape[0],), t, device=self.device, dtype=torch.float32)
        grad = grad and torch.is_grad_enabled()
        if grad:
            self.grad_calls.append((name, t))
        own_text = grad and not (self.experts.share_cross_cache and name == "low")  # the text path trains too
        if name in self.cross and not own_text:
            text = {"cross_kv": self.cross[name]}
        else:
            text = {"context": self.prompt, "clip_fea": self.clip_fea}
        switch = then is not None and then != name and self.experts.park_idle_caches
        handover = self.copier.handover(self.caches[name], self.caches[then]) if switch else None
        try:
            with torch.set_grad_enabled(grad):
                return model(x, tt, y=self._cond(start, x.shape[2]), cache=self.caches[name], start_frame=start,
                             **text)
        finally:
            if handover is not None:  # this expert's cache is parked now; `then`'s is on the device if it fitted
                handover.finish()

    def _write_context(self, chunk: torch.Tensor, start: int, order=None, then: str | None = None) -> None:
        """Run `chunk` at t = 0 through every expert (in `order`); `then`: the expert called after the last one
        (default: the first of the next chunk)."""
        order = order or self.experts.names
        after = order[1:] + [then or self._plan()[0].expert]
        for n, nxt in zip(order, after):
            self._call(n, chunk, CONTEXT_T, start, then=nxt)

    def _plan(self) -> list:
        """The step plan of the next chunk (without an exit step)."""
        return self.first_plan if self.chunk_index == 0 and self.first_plan else self.plan

    def _remember(self, start: int, chunk: torch.Tensor) -> None:
        self.history = [(s, c) for s, c in self.history if s != start] + [(start, chunk)]
        held = set(next(iter(self.caches.values())).frames)
        self.history = [(s, c) for s, c in self.history if held.intersection(range(s, s + c.shape[2]))]

    def _noise(self, frames: int) -> torch.Tensor:
        if self.latent_hw is None:
            raise ValueError("the stream has no latent size: prime it with a start latent or give latent_hw")
        h, w = self.latent_hw
        c = self.experts.config.out_dim
        if len(self.generators) == 1:
            n = torch.randn((self.batch, c, frames, h, w), generator=self.generators[0], dtype=torch.float32)
        elif len(self.generators) == self.batch:
            n = torch.cat([torch.randn((1, c, frames, h, w), generator=g, dtype=torch.float32)
                           for g in self.generators])
        else:
            raise ValueError(f"{len(self.generators)} seeds were given for a batch of {self.batch}; give one seed "
                             f"or one per batch row")
        if self.device.type == "cuda":  # pinned, so the copy is queued without waiting for the GPU
            return n.pin_memory().to(self.device, non_blocking=True)
        return n.to(self.device)

    # ----------------------------------------------------------------- public loop
    def prime(self, latent: torch.Tensor, start_frame: int | None = None) -> None:
        """Put clean latent frames (the encoded start image) into every expert's cache at t = 0, at
        `start_frame` (default: the next frame of the stream)."""
        if latent.dim() != 5:
            raise ValueError(f"start latent must be [batch, 16, frames, h, w], got {list(latent.shape)}")
        if self.latent_hw is not None and tuple(latent.shape[-2:]) != tuple(self.latent_hw):
            raise ValueError(f"start latent is {tuple(latent.shape[-2:])} but the stream is {self.latent_hw}")
        self.latent_hw, self.batch = tuple(latent.shape[-2:]), latent.shape[0]
        latent = latent.to(self.device, torch.float32)
        start = self.next_frame if start_frame is None else start_frame
        self._write_context(latent, start)
        self._remember(start, latent)
        self.next_frame = start + latent.shape[2]

    def next_chunk(self, frames: int | None = None, exit_step: int | None = None) -> torch.Tensor:
        """Denoise the next chunk, write it into the caches, and return its clean latent [B, C, F, h, w].

        Without a start image an expert pair makes frame 0 alone first, as the release's sampler does, so later
        chunks sit at the same frame positions as in image-to-video.

        exit_step (training): stop after that step of the plan and return its x0 estimate; that step runs with
        grad if the caller enables grad, every other call without. The result equals a stream whose step list
        ends at that step."""
        if frames is None and frame_zero_alone(self.experts, self.next_frame):
            frames = 1
        frames = frames or self.options.chunk_frames
        start = self.next_frame
        full = self._plan() if exit_step is None else self.plan
        last = len(full) - 1 if exit_step is None else exit_step
        if not 0 <= last < len(full):
            raise ValueError(f"exit step {exit_step} is outside the {len(full)}-step plan")
        plan = full[:last + 1]
        x = self._noise(frames)
        pred = x
        for i, step in enumerate(plan):
            then = plan[i + 1].expert if i + 1 < len(plan) else self.experts.names[-1]  # then the context write
            v = self._call(step.expert, x, step.t, start, grad=exit_step is not None and i == last, then=then)
            pred = predict(x, v, step, self.sigma_b)
            if i + 1 < len(plan):
                x = renoise(pred, step, plan[i + 1], self.sigma_b, self._noise(frames))
        if plan[-1].expert == "high":  # every step was above the boundary: finish with x0 = x_b path
            pred = x - plan[-1].sigma * v
        self._write_context(pred.detach(), start, order=list(reversed(self.experts.names)),
                            then=self.plan[0].expert)
        self._remember(start, pred.detach())
        self.next_frame += frames
        self.chunk_index += 1
        return pred

    def chunks(self, count: int, frames: int | None = None):
        """Yield `count` chunks one by one."""
        for _ in range(count):
            yield self.next_chunk(frames)

    def run(self, count: int, schedule: PromptSchedule | None = None):
        """Yield `count` chunks, applying the schedule's prompt changes before the chunks they name."""
        if count < 1:
            raise ValueError(f"the number of chunks must be at least 1, got {count}")
        if schedule is not None:
            schedule.check(count)
        blend = None  # (previous text, change) while a blend is under way
        for k in range(count):
            change = schedule.at(k) if schedule is not None else None
            if change is not None:
                if change.mode == "blend" and self.prompt is not None:
                    blend = (self.prompt, change)
                else:
                    blend = None
                    self.set_prompt(change.context, change.clip_fea, "cut" if change.mode == "blend" else change.mode)
            if blend is not None:
                old, ch = blend
                w = min(1.0, (k - ch.chunk + 1) / ch.blend_chunks)
                self.set_prompt(blend_text(old, ch.context, w, self.experts.config.text_len), ch.clip_fea)
                if w >= 1.0:
                    self.prompt, blend = ch.context, None
            yield self.next_chunk()

    def fork(self) -> "Stream":
        """A stream that goes on from here on its own (caches, RNG, position), while this one stays as it is.

        The new stream takes over the cache buffers on the compute device; this stream keeps a copy in host
        memory (parked; 1 x cache_bytes() of host memory) and brings it back only when it is forked again (a
        re-queue: that fork gets the copy) or run itself. So the caches are on the device once per running
        stream, never twice for one continue."""
        other = copy.copy(self)
        other.caches = {}
        for n, c in self.caches.items():
            if c.parked:  # host copies are never written in place: both streams can read the same buffers
                other.caches[n] = c.copy_to(HOST, parked=True, share=True)
            else:  # the device buffers go to the new stream; this one keeps a copy in host memory
                self.copier.ready(c)  # a copy in still in flight lands first
                other.caches[n], self.caches[n] = c, c.copy_to(HOST, parked=True)
        other.history = list(self.history)
        other.cross = dict(self.cross)
        other.expert_calls = list(self.expert_calls)
        other.grad_calls = list(self.grad_calls)
        other.generators = [torch.Generator().set_state(g.get_state()) for g in self.generators]
        return other

    @property
    def parked(self) -> bool:
        """Every cache waits in host memory (this stream was forked and has not run since)."""
        return all(c.parked for c in self.caches.values())

    def _place_caches(self, active: str) -> None:
        """Before expert `active` runs: its cache on the compute device; under swap/blocks offload the other
        experts' caches go to host memory first (so two never share the device), else they come back too."""
        idle = self.experts.park_idle_caches
        for n in sorted(self.caches, key=lambda n: n == active):  # the parking first, then the copy in
            c = self.caches[n]
            park = idle and n != active
            if c.parked != park:
                self.caches[n] = self.copier.move(c, to_host=park)
        self.copier.ready(self.caches[active])  # the compute stream waits for a copy still in flight

    def cache_bytes(self) -> int:
        return sum(c.nbytes() for c in self.caches.values())

    def device_cache_bytes(self) -> int:
        """Bytes of the caches on the compute device now (the parked ones wait in host memory)."""
        return sum(c.nbytes() for c in self.caches.values() if not c.parked)

    def reserve(self, frames: int) -> None:
        """Size window-less caches for `frames` more frames, so they grow once instead of doubling."""
        for c in self.caches.values():
            if c.window is None:
                c.capacity = max(c.capacity or 0, self.next_frame + frames)


def frame_zero_alone(experts: ExpertPair, next_frame: int) -> bool:
    """An expert pair without a start image makes frame 0 alone as its first chunk (as the release does)."""
    return next_frame == 0 and experts.high is not None


def frames_after(experts: ExpertPair, next_frame: int, chunks: int, chunk_frames: int) -> int:
    """The stream's length after `chunks` more chunks (Stream.run) from `next_frame`: what sizes its KV cache."""
    if chunks < 1:
        return next_frame
    first = 1 if frame_zero_alone(experts, next_frame) else chunk_frames
    return next_frame + first + (chunks - 1) * chunk_frames


def chunk_sizes(frames: int, chunk_frames: int, first_alone: bool) -> list[int]:
    """How a stream splits `frames` latent frames into chunks: frame 0 alone first when `first_alone` (see
    frame_zero_alone), then chunks of `chunk_frames`, the last one shorter if the frames run out."""
    sizes = [1] if first_alone and frames > 0 else []
    left = frames - sum(sizes)
    while left > 0:
        sizes.append(min(chunk_frames, left))
        left -= sizes[-1]
    return sizes


def blend_text(a: torch.Tensor, b: torch.Tensor, weight: float, text_len: int) -> torch.Tensor:
    """(1 - weight) a + weight b, after zero-padding both texts to the same token count."""
    n = max(a.shape[1], b.shape[1])
    if n > text_len:
        raise ValueError(f"text has {n} tokens; this model takes at most {text_len}")
    pad = lambda x: torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[1]))  # noqa: E731
    return torch.lerp(pad(a).float(), pad(b).to(a.device).float(), weight).to(a.dtype)
