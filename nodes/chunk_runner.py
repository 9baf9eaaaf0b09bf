"""The per-chunk loop shared by the sampler and the continue node: generate, preview, report, honour Cancel."""
from __future__ import annotations

import torch

from ..causal.sampling.stream import frames_after
from ..vae.streaming import StreamingDecoder
from . import comfy_adapter as adapter
from .preview import FrameSender
from .values import LoadedVAE

FRAMES_PER_LATENT = 4


def pixel_frames(latent_frames: int) -> int:
    """Pixel frames of a Wan video of `latent_frames` latent frames (1 + 4 per later frame)."""
    return 0 if latent_frames <= 0 else 1 + FRAMES_PER_LATENT * (latent_frames - 1)


def active_prompt(schedule, chunk: int) -> int:
    """1-based number of the schedule entry in force at `chunk` (0 without a schedule)."""
    if schedule is None:
        return 0
    return sum(1 for c in schedule.changes if c.chunk <= chunk)


UPSTREAM_PROMPT = -1  # the slot sent while a Continue keeps the prompt of the stream it continues


def prompt_slot(schedule, slots: list[int] | None, chunk: int) -> int:
    """The prompt slot (PromptEntry.slot) in force at `chunk`, for the stream player's caption."""
    entry = active_prompt(schedule, chunk)
    if entry == 0:
        return UPSTREAM_PROMPT
    return slots[entry - 1] if slots and entry <= len(slots) else entry


def run_chunks(stream, count: int, schedule=None, vae: LoadedVAE | None = None, node_id=None,
               warmup: torch.Tensor | None = None, slots: list[int] | None = None,
               show_warmup: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Make `count` chunks on `stream` (which is advanced); return the chunks and, with a VAE, their frames.

    After each chunk: progress and, with a VAE, the chunk's frames to the stream player (nodes/preview.py);
    between chunks: the interrupt check; at the end the player hears whether the run finished, was cancelled
    or failed. warmup: earlier latent frames decoded first so that the decoder continues an existing video; its
    frames lead the returned frames (and the player's, with show_warmup). The frames (IMAGE [B*F, H, W, 3] per
    piece) equal a whole decode when warmup is everything before the first chunk. slots: the prompt slot of
    each schedule entry (PromptEntry.slot), named to the player.
    """
    decoder = StreamingDecoder(vae.vae) if vae is not None else None
    have = 0 if warmup is None else warmup.shape[2]
    made = frames_after(stream.experts, stream.next_frame, count, stream.options.chunk_frames) - stream.next_frame
    total = pixel_frames(have + made) - (pixel_frames(have) if not show_warmup else 0)
    sender = FrameSender(node_id, count, total if decoder is not None else 0)
    frames = []
    if decoder is not None and have > 0:
        frames.append(decoder.decode(warmup))
    chunks = []
    try:
        for k, chunk in enumerate(stream.run(count, schedule)):
            chunks.append(chunk)
            shown = None
            if decoder is not None:
                frames.append(decoder.decode(chunk))
                shown = torch.cat(frames[-2:]) if (k == 0 and have and show_warmup) else frames[-1]
                shown = shown[: shown.shape[0] // stream.batch]  # the first video of a batch (batch-major)
            sender.chunk(k + 1, shown, prompt_slot(schedule, slots, k))
            adapter.progress(k + 1, count, None, node_id)
            if k + 1 < count:
                adapter.throw_if_interrupted()
    except BaseException as e:
        sender.end("cancelled" if adapter.is_interrupt(e) else "failed", str(e))
        raise
    finally:
        if decoder is not None:
            decoder.close()
    sender.end("done")
    return chunks, frames
