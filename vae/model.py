"""The Wan2.1 VAE (z_dim 16, stride 4x8x8) in plain PyTorch, with the original Wan key names.

    encoder.conv1 -> encoder.downsamples.* -> encoder.middle.{0,1,2} -> encoder.head.{0,2} -> conv1 (mu | logvar)
    conv2 -> decoder.conv1 -> decoder.middle.{0,1,2} -> decoder.upsamples.* -> decoder.head.{0,2}

Time is causal: pixel frames 1, 4, 4, ... map to one latent frame each, and back. `encode` returns the
normalised latent the DiT works in; `decode` and `StreamingDecoder` (streaming.py) take it back to pixels.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import AttentionBlock, CausalConv3d, ResidualBlock, Resample, RMSNorm
from .feature_cache import FeatureCache
from .images import images_to_video
from .latent_norm import normalize_latent

SPATIAL_STRIDE = 8
TEMPORAL_STRIDE = 4


@dataclass(frozen=True)
class WanVAEConfig:
    """Shape of a Wan2.1-style VAE; the defaults are the released Wan2.1 VAE."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple = (False, True, True)


def _middle(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(dim, images=False), nn.SiLU(), CausalConv3d(dim, out_dim, 3, padding=1))


def _run(layers, x, cache):
    for layer in layers:
        x = layer(x) if isinstance(layer, (nn.SiLU, RMSNorm)) else layer(x, cache)
    return x


class Encoder3d(nn.Module):
    """Video [B,3,T,H,W] -> [B, 2*z_dim, T', H/8, W/8] (mu and logvar), one causal chunk per call."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(dims[-1])
        self.head = _head(dims[-1], cfg.z_dim * 2)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        return _run(self.head, x, cache)


class Decoder3d(nn.Module):
    """Raw latent [B,z_dim,T,h,w] -> pixels [B,3,T*,8h,8w]; T* = 1+4(T-1) for a video's first call, else 4T."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.base_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_upsample = tuple(cfg.temporal_downsample[::-1])
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0])
        layers = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2                      # each Resample halves the channels
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = _head(dims[-1], 3)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        return _run(self.head, x, cache)


class WanVAE(nn.Module):
    """Wan2.1 VAE: `encode` video -> normalised latent, `decode` normalised latent -> video in [-1, 1]."""

    def __init__(self, cfg: WanVAEConfig = WanVAEConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)

    @property
    def device(self) -> torch.device:
        """Device of the weights (where encode and decode compute)."""
        return self.conv2.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype (the dtype of the weights)."""
        return self.conv2.weight.dtype

    @torch.no_grad()
    def encode(self, video: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Video [B,3,1+4k,H,W] in [-1,1] -> latent [B,16,1+k,H/8,W/8] (normalised unless normalize=False), fp32."""
        _check_video(video)
        mu = self.latent_mean(video.to(self.device, self.dtype))
        return normalize_latent(mu) if normalize else mu.float()

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The raw latent mean of a video in the compute dtype, with gradients when autograd records (training):
        frame 0 alone, then 4 frames per latent frame through one feature cache."""
        cache, outs = FeatureCache(), []
        for start in [0, *range(1, x.shape[2], TEMPORAL_STRIDE)]:
            end = 1 if start == 0 else start + TEMPORAL_STRIDE
            outs.append(self.conv1(self.encoder(x[:, :, start:end], cache)))
        return torch.cat(outs, dim=2)[:, : self.cfg.z_dim]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """ComfyUI IMAGE [N,H,W,3] in [0,1] (N = 1 start image, or 1+4k frames) -> normalised [1,16,1+k,H/8,W/8]."""
        return self.encode(images_to_video(images))

    @torch.no_grad()
    def decode_chunk(self, z_raw: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        """Raw (denormalised) latent chunk -> raw, unclamped pixels, continuing the video held in `cache`."""
        return self.decoder(self.conv2(z_raw.to(self.device, self.dtype)), cache)


def _check_video(video: torch.Tensor):
    if video.dim() != 5:
        raise ValueError(f"expected a video tensor [B,3,T,H,W] in [-1,1], got shape {tuple(video.shape)}")
    b, c, t, h, w = video.shape
    if c != 3:
        raise ValueError(f"expected 3 colour channels at dim 1 of [B,3,T,H,W], got {c} (shape {tuple(video.shape)})")
    if (t - 1) % TEMPORAL_STRIDE != 0:
        raise ValueError(f"the Wan VAE encodes 1+4k frames (1, 5, 9, ...), got {t}")
    if h % SPATIAL_STRIDE or w % SPATIAL_STRIDE or h == 0 or w == 0:
        raise ValueError(f"spatial size {h}x{w} does not fit the VAE: height and width must be multiples of 8")
