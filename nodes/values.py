"""What travels on the CausalWan sockets: the socket type names and the objects behind them.

ComfyUI caches node outputs and hands the same object to every downstream node, so these objects are treated
as read-only once a node has returned them; nodes that go on from one (Continue) work on a fork (`Stream.fork`:
the fork takes over the caches on the device, the original keeps a copy in host memory).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace

import torch

MODEL = "CAUSALWAN_MODEL"
VAE = "CAUSALWAN_VAE"
START = "CAUSALWAN_START"
PROMPTS = "CAUSALWAN_PROMPTS"
STREAM = "CAUSALWAN_STREAM"
PROMPTS_OR_CONDITIONING = f"{PROMPTS},CONDITIONING"  # a union socket: either link type is accepted
CATEGORY = "CausalWan"


@dataclass
class LoadedModel:
    """A loaded ExpertPair, the device it computes on, and how it was loaded."""

    experts: object  # causal.experts.ExpertPair
    device: torch.device
    source: str  # what was loaded, for messages
    plan: str  # the memory-plan line shown to the user
    offload: str = "resident"  # the mode in force ("auto" already resolved)
    policy: object = None  # causal.offload.Offload attached to the experts
    # StreamStates built on it; shared with its LoRA copies (`replace` keeps it), which share the experts
    streams: weakref.WeakSet = field(default_factory=weakref.WeakSet, repr=False)
    loras: tuple = ()  # causal.weights.lora.LoraUse entries, in the order the LoRA nodes added them

    def with_lora(self, use) -> "LoadedModel":
        """A copy of this value with one more LoRA (the experts are shared; nothing is applied yet)."""
        return replace(self, loras=self.loras + (use,))

    def use(self) -> str:
        """check(), then put exactly this value's LoRAs in force on the shared experts (taking off any others,
        e.g. those of an earlier queue or of a bypassed LoRA node); returns the LoRA summary line."""
        from ..causal.weights.lora import activate

        self.check()
        return activate(self.experts, list(self.loras))

    @property
    def config(self):
        return self.experts.config

    def memory_plan(self, height: int, width: int, **workload):
        """The planner's prediction (causal/memory/memory_plan.py) for a stream of `workload` (frames, window,
        sink, chunk_frames, cache_dtype, parked_frames) on this model, in its offload mode, from the real weights."""
        from ..causal.memory.memory_plan import MODES, plan_memory
        from ..causal.memory.offload import DEFAULT_BLOCKS, part_bytes, weight_dtype_of

        return plan_memory(self.config, height, width, experts=len(self.experts.names),
                           mode=self.offload if self.offload in MODES else "resident",
                           blocks=getattr(self.policy, "budget", DEFAULT_BLOCKS),
                           weight_dtype=weight_dtype_of(self.experts),
                           shared_cross=self.experts.share_cross_cache, part_bytes=part_bytes(self.experts), **workload)

    @property
    def released(self) -> bool:
        """The loader ran again and freed these experts (a flag on the experts, so the copies CausalWan LoRA made of
        this value see it too)."""
        return getattr(self.experts, "released", False)

    @property
    def is_pair(self) -> bool:
        return self.experts.high is not None

    def release(self) -> None:
        """Free the weights and the caches of every stream built on them (the loader ran again), so what the
        loader plans next sees that memory free; any later use raises a readable error."""
        from ..causal.model.rope import clear_tables

        for state in list(self.streams):
            state.release()
        if self.policy is not None:  # hooks off, weights back where their masters are (no copy), policy dropped
            self.policy.remove(self.device if self.offload == "resident" else torch.device("cpu"))
            self.policy = None
        for m in self.experts.modules().values():
            m.to("meta")
        self.experts.released = True
        clear_tables()  # the RoPE tables its streams used stay on the device otherwise

    def check(self) -> None:
        if self.released:
            raise ValueError("this model was released because its CausalWan Model Loader ran again; queue the "
                             "workflow again so the sampler gets the newly loaded model")


@dataclass
class LoadedVAE:
    vae: object  # vae.WanVAE


@dataclass
class StartLatent:
    """Where a stream starts: the normalised start latent (image-to-video) or None (text-to-video)."""

    latent: torch.Tensor | None  # [B, 16, 1, h, w], normalised
    width: int
    height: int
    batch: int = 1

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // 8, self.width // 8


@dataclass
class PromptEntry:
    chunk: int  # first chunk (counted from 0 = the first chunk of the run) that uses this text
    text: torch.Tensor  # [B, L, text_dim] as it came from the CONDITIONING (padded/trimmed later)
    mode: str = "cut"
    slot: int = 0  # where the text came from, for the stream player: k = conditioning_k of a Prompt Switch,
    # 0 = a CONDITIONING connected straight to the sampler / Continue


@dataclass
class PromptList:
    """Texts and the chunks at which they take over; the first entry starts at chunk 0."""

    entries: list[PromptEntry]
    blend_chunks: int = 2


@dataclass
class DecodedFrames:
    """Frames a sampler's preview decoder already made for the whole video, and the VAE that made them."""

    vae: object  # vae.WanVAE
    images: torch.Tensor  # IMAGE [B*F, H, W, 3], batch-major, equal to a whole decode of the latent


@dataclass(eq=False)  # compared by identity: the model keeps a weak set of its streams
class StreamState:
    """A stream that has made some chunks, and the latent video so far.

    `stream` is never advanced after this object is output; continuing works on `stream.fork()`.
    `pieces` are the latent frame counts of the start and of every chunk, in order (they sum to the frames of
    `latent`), so a decoder can follow the chunks.
    """

    stream: object  # causal.stream.Stream
    model: LoadedModel
    latent: torch.Tensor  # normalised [B, 16, T, h, w], all frames so far (start frame included)
    pieces: list[int] = field(default_factory=list)
    decoded: DecodedFrames | None = None

    def __post_init__(self):
        self.model.streams.add(self)

    def release(self) -> None:
        """Drop the stream's caches (its node ran again); the latent video stays decodable."""
        self.stream = None

    def check(self) -> None:
        if self.stream is None:
            raise ValueError("this stream was released to free memory when its node ran again; queue the "
                             "workflow again (change any input of that node, e.g. the seed, if it is cached)")
        self.model.use()
