"""ComfyUI LATENT <-> the engine's normalised latent.

A ComfyUI video LATENT is {"samples": [B, 16, T, h, w]} in raw Wan VAE space (core Wan VAEDecode decodes it
as is); the engine and our VAE work on the normalised latent (raw - mean) / std. A LATENT made here also
carries "causalwan_pieces": the latent frame counts of the start and each chunk, which our decoder follows.
"""
from __future__ import annotations

import torch

from ..vae.latent_norm import denormalize_latent, normalize_latent

PIECES_KEY = "causalwan_pieces"
FRAMES_KEY = "causalwan_frames"  # DecodedFrames the sampler's preview decoder made, reused by CausalWan Decode


def to_comfy_latent(normalised: torch.Tensor, pieces: list[int] | None = None, decoded=None) -> dict:
    out = {"samples": denormalize_latent(normalised).cpu()}
    if pieces:
        out[PIECES_KEY] = list(pieces)
    if decoded is not None:
        out[FRAMES_KEY] = decoded
    return out


def from_comfy_latent(latent: dict) -> torch.Tensor:
    """Normalised [B, 16, T, h, w] from a LATENT dict, with a readable error for image latents."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError("expected a LATENT ({'samples': tensor})")
    s = latent["samples"]
    if s.dim() != 5 or s.shape[1] != 16:
        raise ValueError(f"expected a Wan video latent [batch, 16, frames, h, w], got {list(s.shape)}; "
                         "image latents (4 dims) and other VAEs' latents cannot be decoded by the Wan VAE")
    return normalize_latent(s)


def split_pieces(frames: int, pieces: list[int] | None, chunk_frames: int = 3) -> list[int]:
    """Frame counts to decode in turn: the recorded pieces, else 1 frame then chunks of `chunk_frames`."""
    if pieces and sum(pieces) == frames:
        return list(pieces)
    out = [1] if frames else []
    left = frames - 1
    while left > 0:
        out.append(min(chunk_frames, left))
        left -= out[-1]
    return out
