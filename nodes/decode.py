"""CausalWan Decode: LATENT or stream -> IMAGE frames, decoded chunk by chunk by the streaming VAE decoder."""
from __future__ import annotations

import torch

from ..vae.streaming import StreamingDecoder
from . import comfy_adapter as adapter
from .latents import FRAMES_KEY, PIECES_KEY, from_comfy_latent, split_pieces
from .values import CATEGORY, STREAM, VAE, StreamState

LATENT_OR_STREAM = f"LATENT,{STREAM}"


def join_frames(pieces: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Batch-major IMAGE pieces [B*F_i, H, W, 3] -> one batch-major IMAGE [B*sum(F_i), H, W, 3]."""
    out = torch.cat([p.view(batch, -1, *p.shape[1:]) for p in pieces], dim=1)
    return out.reshape(-1, *out.shape[2:])


def decode_pieces(vae, latent: torch.Tensor, pieces: list[int], tile_size: int | None = None,
                  node_id=None) -> torch.Tensor:
    """Normalised [B, 16, T, h, w] -> IMAGE [B*F, H, W, 3] (batch-major), one piece at a time with progress
    and an interrupt check between pieces. Equal to decoding the whole latent at once."""
    decoder = StreamingDecoder(vae, tile_size=tile_size)
    frames, start = [], 0
    try:
        for i, n in enumerate(pieces):
            if i:
                adapter.throw_if_interrupted()
            frames.append(decoder.decode(latent[:, :, start:start + n]))
            start += n
            adapter.progress(i + 1, len(pieces), None, node_id)
    finally:
        decoder.close()
    return join_frames(frames, latent.shape[0])


class CausalWanDecode:
    DESCRIPTION = ("Decodes a CausalWan latent video (or a stream) into frames with the Wan VAE, chunk by chunk "
                   "with the decoder cache kept between chunks: the same frames as one whole decode, with the "
                   "memory of one chunk. Feed the IMAGE to Create Video -> Save Video.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Video frames [frames, height, width, 3] in 0..1: 1 + 4 per latent frame after the first.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE, {"tooltip": "CausalWan VAE (Wan2.1 VAE)."}),
            "latent": (LATENT_OR_STREAM, {"tooltip": (
                "LATENT from CausalWan Chunk Sampler / Continue (or any Wan video LATENT), or their stream "
                "output.")}),
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 512, "step": 8, "tooltip": (
                "Spatial tile edge in latent pixels (x8 in the image) to bound decoder memory at large sizes; "
                "0 decodes whole frames.")}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def decode(self, vae, latent, tile_size=0, unique_id=None):
        decoded = latent.decoded if isinstance(latent, StreamState) else latent.get(FRAMES_KEY)
        if decoded is not None and decoded.vae is vae.vae and not tile_size:
            return (decoded.images,)  # the sampler's preview decoder already made exactly these frames
        if isinstance(latent, StreamState):
            z, pieces = latent.latent, latent.pieces
        else:
            z, pieces = from_comfy_latent(latent), latent.get(PIECES_KEY)
        pieces = split_pieces(z.shape[2], pieces)
        return (decode_pieces(vae.vae, z, pieces, tile_size or None, unique_id),)
