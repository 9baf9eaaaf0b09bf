"""Building blocks of the Wan2.1 VAE, with the original Wan parameter names.

Tensors are video-shaped [B, C, T, H, W]. Blocks that hold causal convs take an optional FeatureCache; with
one, a call continues the video where the previous call with the same cache stopped.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .feature_cache import FeatureCache


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _batch_to_frames(x: torch.Tensor, b: int) -> torch.Tensor:
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).transpose(1, 2)


class CausalConv3d(nn.Conv3d):
    """Conv3d that pads time on the left only; with a cache, the left padding is the previous call's frames."""

    def __init__(self, in_dim, out_dim, kernel_size, stride=1, padding=0):
        super().__init__(in_dim, out_dim, kernel_size, stride=stride, padding=0)
        pt, ph, pw = _triple(padding)
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        time_pad = self.time_pad
        if cache is not None and time_pad > 0:
            past = cache.swap(self, x)
            if past is not None:
                x = torch.cat([past.to(x), x], dim=2)
                time_pad -= past.shape[2]
        return super().forward(F.pad(x, (*self.space_pad, time_pad, 0)))


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(dim) and a learned per-channel gain `gamma`."""

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xn = F.normalize(x.float(), dim=1).to(x.dtype)
        return xn * self.scale * self.gamma


class Upsample2x(nn.Upsample):
    """Nearest-exact 2x spatial upsampling computed in fp32 (as Wan does) and cast back."""

    def __init__(self):
        super().__init__(scale_factor=(2.0, 2.0), mode="nearest-exact")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


class ResidualBlock(nn.Module):
    """RMSNorm-SiLU-conv twice plus a (1x1x1 conv) shortcut; `residual` indices 0..6 match Wan's keys."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(), nn.Dropout(0.0), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.to_qkv(self.norm(_frames_to_batch(x)))            # [bt, 3c, h, w]
        q, k, v = y.reshape(b * t, 1, 3 * c, h * w).transpose(2, 3).chunk(3, dim=-1)
        # contiguous q/k/v [bt, 1, hw, c]: CUDA's flash / memory-efficient kernels need a unit last stride (the
        # transposed views would send it to the math kernel, which builds the whole [hw x hw] matrix)
        y = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())  # [bt, 1, hw, c]
        y = y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return x + _batch_to_frames(self.proj(y), b)


class Resample(nn.Module):
    """Spatial 2x up/down sampling per frame, plus a causal temporal 2x for the '3d' modes.

    Temporal rule (as in Wan): the very first frame of a video is never duplicated (upsample) and never
    merged (downsample); it passes alone. A cache is required for the 3d modes to know where the video starts.
    """

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        elif mode.startswith("downsample"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._time_upsample(x, cache)
        x = _batch_to_frames(self.resample(_frames_to_batch(x)), x.shape[0])
        if self.mode == "downsample3d":
            x = self._time_downsample(x, cache)
        return x

    def _time_upsample(self, x, cache):
        if cache is None:
            raise ValueError("upsample3d needs a FeatureCache to know which frame starts the video")
        head = None
        if cache.get(self) is None:                    # first frame of the video: passes alone
            cache.set(self, "started")
            head, x = x[:, :, :1], x[:, :, 1:]
        if x.shape[2] > 0:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, cache).reshape(b, 2, c, t, h, w)
            x = torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c, 2 * t, h, w)
        return x if head is None else torch.cat([head, x], dim=2)

    def _time_downsample(self, x, cache):
        if cache is None:
            raise ValueError("downsample3d needs a FeatureCache to know which frame starts the video")
        past = cache.get(self)
        cache.set(self, x[:, :, -1:].clone())
        if past is None:                               # first frame of the video: passes alone
            if x.shape[2] == 1:
                return x
            return torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)
        return self.time_conv(torch.cat([past.to(x), x], dim=2))
