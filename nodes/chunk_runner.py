"""The per-chunk loop shared by the sampler and the continue node: generate, preview, report, honour Cancel."""
from __future__ import annotations

import torch

from ..vae.streaming import StreamingDecoder
from . import comfy_adapter as adapter
from .preview import data_url, to_pil
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


def run_chunks(stream, count: int, schedule=None, vae: LoadedVAE | None = None, node_id=None,
               warmup: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Make `count` chunks on `stream` (which is advanced); return the chunks and, with a VAE, their frames.

    After each chunk: progress (with the chunk's last decoded frame when a VAE is given) and a
    "causalwan.chunk" event; between chunks: the interrupt check. warmup: earlier latent frames decoded first so
    that the decoder continues an existing video; its frames lead the returned frames. The frames (IMAGE
    [B*F, H, W, 3] per piece) equal a whole decode when warmup is everything before the first chunk.
    """
    decoder = StreamingDecoder(vae.vae) if vae is not None else None
    frames = []
    if decoder is not None and warmup is not None and warmup.shape[2] > 0:
        frames.append(decoder.decode(warmup))
    chunks = []
    try:
        for k, chunk in enumerate(stream.run(count, schedule)):
            chunks.append(chunk)
            if decoder is not None:
                frames.append(decoder.decode(chunk))
            preview = to_pil(frames[-1][-1]) if decoder is not None else None
            adapter.progress(k + 1, count, preview, node_id)
            adapter.send_event({
                "node": None if node_id is None else str(node_id),
                "chunk": k + 1,
                "chunks": count,
                "latent_frames": stream.next_frame,
                "frames": pixel_frames(stream.next_frame),
                "prompt": active_prompt(schedule, k),
                "image": data_url(preview) if preview is not None else None,
            })
            if k + 1 < count:
                adapter.throw_if_interrupted()
    finally:
        if decoder is not None:
            decoder.close()
    return chunks, frames
