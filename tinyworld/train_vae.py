"""Stage 1: the pack's own Wan2.1 VAE (vae/model.py) with a small base width, trained on the tiny world.

Constrained so that it learns in minutes on a CPU: the middle attention blocks are muted (identity), every 3x3x3
causal conv looks at its own frame only, and the temporal down/upsampling convs pass one frame through. The VAE
is then an image autoencoder applied frame by frame (each latent frame codes the last of its 4 frames and decodes
to it 4 times), so it trains on single frames from small crops, and a stream of any length or size decodes like
its training data. A little noise on the latent makes the decoder forgive the DiT's errors. Afterwards the latent
is re-scaled per channel (folded into conv1 and conv2, an exact reparametrisation) so that the normalised latent
the DiT sees (vae/latent_norm.py) has zero mean and unit spread on the world.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..vae.blocks import AttentionBlock, CausalConv3d, Resample
from ..vae.feature_cache import FeatureCache
from ..vae.latent_norm import LATENT_MEAN, LATENT_STD
from ..vae.model import WanVAE, WanVAEConfig
from .clips import vae_batch

CONFIG = WanVAEConfig(base_dim=8, num_res_blocks=1)
Z = 16


def shape_mask(video: torch.Tensor) -> torch.Tensor:
    """[B,1,T,H,W] 1 where a pixel is saturated (the shape), 0 on the gray background."""
    return ((video.amax(1, keepdim=True) - video.amin(1, keepdim=True)) > 0.3).float()


def decode_raw(vae: WanVAE, mu: torch.Tensor) -> torch.Tensor:
    return vae.decoder(vae.conv2(mu), FeatureCache())


def frame_local(vae: WanVAE) -> None:
    """Every 3x3x3 causal conv looks at its own frame only (the two past-frame slices of its kernel zeroed and kept
    at zero); time is left to the temporal down/upsampling convs (see hold_time)."""
    keep = {id(m.time_conv) for m in vae.modules() if isinstance(m, Resample) and hasattr(m, "time_conv")}
    for m in vae.modules():
        if isinstance(m, CausalConv3d) and m.weight.shape[2] == 3 and id(m) not in keep:
            mask = torch.zeros_like(m.weight)
            mask[:, :, 2] = 1.0
            with torch.no_grad():
                m.weight.mul_(mask)
            m.weight.register_hook(lambda g, mask=mask: g * mask)


@torch.no_grad()
def hold_time(vae: WanVAE) -> None:
    """The temporal down/upsampling convs set to pass one frame through (the last of each pair going down, a copy
    of it twice going up) and frozen."""
    for m in vae.modules():
        if isinstance(m, Resample) and hasattr(m, "time_conv"):
            w = m.time_conv.weight  # [out, in, 3, 1, 1]
            c = w.shape[1]
            w.zero_()
            eye = torch.eye(c)
            for k in range(w.shape[0] // c):
                w[k * c:(k + 1) * c, :, 2, 0, 0] = eye
            m.time_conv.bias.zero_()
            m.time_conv.requires_grad_(False)


def mute_attention(vae: WanVAE) -> None:
    """Zero and freeze the output projection of the middle attention blocks: they become the identity, so the
    VAE is convolutional throughout and what it learns on small crops holds on whole frames."""
    for m in vae.modules():
        if isinstance(m, AttentionBlock):
            with torch.no_grad():
                m.proj.weight.zero_()
                m.proj.bias.zero_()
            m.proj.requires_grad_(False)


def train(vae: WanVAE, state: dict, steps: int, log, seed: int, batch=12, frames=1, crop=48, lr=1e-3,
          save=None, save_every=25, warmup=50) -> None:
    """Adam on L1 + MSE reconstruction of single frames; resumes from state (step, optimiser, RNG)."""
    mute_attention(vae)
    frame_local(vae)
    hold_time(vae)
    opt = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=lr)
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    rng = np.random.default_rng([seed, state.get("step", 0)])
    gen = torch.Generator().manual_seed(seed + state.get("step", 0))
    vae.train()
    t0 = time.time()
    for step in range(state.get("step", 0), steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = vae_batch(rng, batch, frames, crop)
        mu = vae.latent_mean(x)
        z = mu + 0.1 * torch.randn(mu.shape, generator=gen)
        y = decode_raw(vae, z)
        w = 1.0 + 9.0 * shape_mask(x)  # the shape is a small part of a frame but all that matters
        rec = ((y - x).abs() * w).mean() + ((y - x).pow(2) * w).mean()
        loss = rec + 1e-3 * mu.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            psnr = 10 * math.log10(4.0 / max((y - x).pow(2).mean().item(), 1e-10))
            log(f"vae step {step}/{steps} loss {loss.item():.4f} psnr {psnr:.1f} dB |mu| {mu.abs().mean():.2f} "
                f"({time.time() - t0:.0f}s)")
        state["step"] = step + 1
        if save is not None and (state["step"] % save_every == 0 or state["step"] == steps):
            state["opt"] = opt.state_dict()
            save(vae, state)
    vae.eval()


@torch.no_grad()
def fold_latent_scale(vae: WanVAE, rng: np.random.Generator, clips: int = 16) -> None:
    """Re-scale conv1's mean half and conv2's input so the normalised latent has zero mean and unit std."""
    mus = torch.cat([vae.latent_mean(vae_batch(rng, 1, 9, 128)).transpose(0, 1).flatten(1) for _ in range(clips)], 1)
    m, s = mus.mean(1), mus.std(1).clamp_min(1e-4)
    target_m, target_s = torch.tensor(LATENT_MEAN), torch.tensor(LATENT_STD)
    a = target_s / s  # mu' = a * mu + c has the Wan statistics; its normalised form is (mu - m) / s
    c = target_m - a * m
    w1, b1 = vae.conv1.weight, vae.conv1.bias  # [32, 32, 1, 1, 1]; rows 0..15 are the mean
    w1[:Z] *= a.view(-1, 1, 1, 1, 1)
    b1[:Z] = a * b1[:Z] + c
    w2, b2 = vae.conv2.weight, vae.conv2.bias  # conv2(mu) = W mu + b = W (mu' - c) / a + b
    b2 -= (w2[:, :, 0, 0, 0] * (c / a)).sum(1)
    w2 /= a.view(1, -1, 1, 1, 1)


def new_vae(seed: int) -> WanVAE:
    torch.manual_seed(seed)
    return WanVAE(CONFIG)
