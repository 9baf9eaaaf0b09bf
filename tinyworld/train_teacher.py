"""Stage 3b: the bidirectional teacher, the pack's Wan DiT (causal/model/transformer.py, no cache), trained by
flow matching on the world's latents, conditioned on the caption and on clean leading frames (the start image).

x_t = (1 - s) x0 + s n, target v = n - x0, with s drawn uniformly and warped by the scheduler shift (most
training where the few-step sampler spends its steps). Clean leading frames get t = 0 and no loss. One caption
in ten is dropped (the empty prompt), so the teacher also has an unconditional score for guidance.

Three in five clips are drawn at nearly pure noise (s in [0.99, 1]). The shape is a strong outlier in the latent,
so below that its place shows through the noise and the caption's direction hardly lowers the loss; only near pure
noise must the model take the direction from the words. Without this share the teacher never read the direction
(its loss with the opposite direction's caption stayed within 0.5% of the right one's after 1500 steps). With two
in five the gap at s = 1 was 68% after 2500 steps; with three in five, 142% (the shipped teacher).

The same loop, with `causal=True`, makes the causal student's start (the build's stage `causal`): the teacher
fine-tuned by teacher forcing under the block-causal mask of the student's chunks (start frame, then chunks of 3
latent frames). The frames before one chunk are clean at t = 0, as the student's KV cache holds them, and only
that chunk is noised and scored. Run causally as both experts, the bidirectional teacher moves the shape the
named way in 43 of 64 direction videos (4 seeds); after 800 such steps, in 60-62 of 64. Alone it fades in long
streams, so the build uses it as the high-noise expert only (build.stage_release): 1600 steps, where 2400 made
shapes fade after a prompt switch.
"""
from __future__ import annotations

import math
import time

import torch

from ..causal.model.config import WanConfig
from ..causal.model.masks import block_causal_mask, token_mask
from ..causal.model.transformer import CausalWanModel
from ..causal.sampling.schedule import warp_sigma

CONFIG = WanConfig(dim=64, ffn_dim=256, num_heads=2, num_layers=4, in_dim=16, out_dim=16, text_dim=32,
                   text_len=32, freq_dim=64)  # text zero-padded to 32 tokens, all attended (the releases: 512)
SHIFT = 3.0
DROP_CAPTION = 0.1
NEAR_NOISE = 0.6  # share of clips drawn at s in [0.99, 1] (see above)
CHUNK = 3  # latent frames per chunk of the causal student


def new_teacher(seed: int) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(CONFIG)
    with torch.no_grad():  # start as the identity-ish denoiser: zero output head, as DiTs are usually started
        model.head.head.weight.zero_()
        model.head.head.bias.zero_()
    return model


def text_batch(embeds: dict, captions: list[str], text_len: int) -> torch.Tensor:
    out = torch.zeros(len(captions), text_len, next(iter(embeds.values())).shape[-1])
    for i, c in enumerate(captions):
        e = embeds[c]
        out[i, : e.shape[0]] = e
    return out


def caption_batch(data: dict, embeds: dict, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The text of clips `idx`, one caption in ten dropped (the empty prompt) for the unconditional score."""
    drop = torch.rand(len(idx), generator=gen) < DROP_CAPTION
    caps = ["" if d else data["captions"][i] for i, d in zip(idx.tolist(), drop.tolist())]
    return text_batch(embeds, caps, CONFIG.text_len)


def batch(data: dict, embeds: dict, gen: torch.Generator, size: int):
    """(x0, clean-prefix mask [B, F], text) of a random batch. A clip that turns keeps its frames before the turn
    clean; a plain clip is the start image and what follows (prefix 1, half of them), a longer clean past
    (prefix 2..F-2), or all noisy (prefix 0, the whole-clip denoiser DMD's scores ask for)."""
    n, f = data["latents"].shape[0], data["latents"].shape[2]
    idx = torch.randint(n, (size,), generator=gen)
    x0 = data["latents"][idx].float()
    prefix = data["prefix"][idx].clone()
    plain = prefix == 1
    r = torch.rand(size, generator=gen)
    longer = torch.randint(2, f - 1, (size,), generator=gen)
    prefix = torch.where(plain & (r < 0.25), torch.zeros_like(prefix), prefix)
    prefix = torch.where(plain & (r > 0.75), longer, prefix)
    clean = torch.arange(f)[None] < prefix[:, None]
    return x0, clean, caption_batch(data, embeds, idx, gen)


def causal_batch(data: dict, embeds: dict, gen: torch.Generator, size: int):
    """(x0, clean mask [B, F], text, scored mask [B, F]) for teacher forcing under the student's chunking: the
    frames before one chunk are clean (the start frame alone, or the start frame and the first chunk), the chunk is
    noised and scored. A clip that turns is scored on the second chunk, after its turn or close to it."""
    n, f = data["latents"].shape[0], data["latents"].shape[2]
    idx = torch.randint(n, (size,), generator=gen)
    x0 = data["latents"][idx].float()
    plain = data["prefix"][idx] == 1
    later = 1 + CHUNK
    first = torch.full((size,), later).where(~plain | (torch.rand(size, generator=gen) < 0.5), torch.tensor(1))
    frames = torch.arange(f)[None]
    clean = frames < first[:, None]
    scored = ~clean & (frames < first[:, None] + CHUNK)
    return x0, clean, caption_batch(data, embeds, idx, gen), scored


def flow_loss(model, x0, clean, text, gen, scored=None) -> torch.Tensor:
    """Flow-matching loss on the noisy frames (or on `scored` ones, with the block-causal mask of the student's
    chunks and clean frames at t = 0, as its KV cache holds them)."""
    b, f = clean.shape
    u = torch.rand(b, 1, generator=gen)
    sigma = warp_sigma(u, SHIFT)
    near = torch.rand(b, 1, generator=gen) < NEAR_NOISE
    sigma = torch.where(near, 1 - 0.01 * torch.rand(b, 1, generator=gen), sigma)
    s = sigma.expand(b, f) * (~clean)
    noise = torch.randn(x0.shape, generator=gen)
    sv = s[:, None, :, None, None]
    xt = (1 - sv) * x0 + sv * noise
    # clean frames are labelled t = 0 (the Stream's cache) or, for half the clips, with the clip's t (the trainer's
    # teacher ODE holds the start frame clean under one timestep for the whole clip)
    same = torch.rand(b, 1, generator=gen) < 0.5
    if scored is None:
        t = torch.where(clean & same, sigma.expand(b, f), s) * 1000.0
        v = model(xt, t, text)
    else:
        tokens = (x0.shape[3] // CONFIG.patch_size[1]) * (x0.shape[4] // CONFIG.patch_size[2])
        mask = token_mask(block_causal_mask([1] + [CHUNK] * ((f - 1) // CHUNK)), tokens)
        v = model(xt, s * 1000.0, text, attn_mask=mask)
    w = (~clean if scored is None else scored)[:, None, :, None, None].float()
    return ((v - (noise - x0)) ** 2 * w).sum() / (w.sum() * x0.shape[1] * x0.shape[3] * x0.shape[4])


def train(model, data, embeds, state: dict, steps: int, log, seed: int, size=8, lr=2e-3, save=None,
          save_every=100, causal: bool = False) -> None:
    """Flow matching with AdamW, warm-up and cosine decay; causal: teacher forcing (causal_batch) instead."""
    name = "causal" if causal else "teacher"
    draw = causal_batch if causal else batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    model.train()
    t0, avg = time.time(), None
    for step in range(state.get("step", 0), steps):
        gen = torch.Generator().manual_seed(seed * 100_003 + step)  # keyed by step: a resumed run draws the same
        warm = min(1.0, (step + 1) / 50)
        for g in opt.param_groups:
            g["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        x0, clean, text, *scored = draw(data, embeds, gen, size)
        loss = flow_loss(model, x0, clean, text, gen, *scored)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        avg = loss.item() if avg is None else 0.95 * avg + 0.05 * loss.item()
        if step % 20 == 0 or step == steps - 1:
            log(f"{name} step {step}/{steps} loss {avg:.4f} ({time.time() - t0:.0f}s)")
        state["step"] = step + 1
        if save is not None and (state["step"] % save_every == 0 or state["step"] == steps):
            state["opt"] = opt.state_dict()
            save(model, state)
    model.eval()
