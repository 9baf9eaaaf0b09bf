"""Score models with the Wan model's interface whose answers are known in closed form (for the trainer tests).

GaussianDenoiser: data x0 ~ N(mean_c, std_c^2) independently per channel c; its velocity is the exact flow of that
distribution: x0_hat = mean + (1-s) std^2 / ((1-s)^2 std^2 + s^2) (x_t - (1-s) mean), v = (x_t - x0_hat) / s.
Its mean and log std are parameters, so a copy of it is a trainable critic.
AffineGenerator: x0_hat = a_c + b_c x_t; with the single step t = 1000 it generates N(a, b^2) per channel.
Both ignore text, cache and frame position, and run through the Stream like a Wan expert.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from causalwan.causal.model.config import WanConfig


def config(channels: int) -> WanConfig:
    return WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=channels, out_dim=channels, text_dim=8,
                     text_len=4, freq_dim=32)


class _Interface(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.config = config(channels)

    @property
    def device(self):
        return torch.device("cpu")

    def cross_kv(self, context, clip_fea=None):
        return []

    def forward(self, x, t, context=None, *, cross_kv=None, clip_fea=None, y=None, cache=None, start_frame=0,
                attn_mask=None):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(x.shape[0], -1)[:, :1]
        s = (t / 1000).view(-1, 1, 1, 1, 1)
        x0 = self.x0(x, s)
        return torch.where(s > 0, (x - x0) / s.clamp_min(1e-6), torch.zeros_like(x))

    @staticmethod
    def per_channel(p):
        return p.view(1, -1, 1, 1, 1)


class GaussianDenoiser(_Interface):
    def __init__(self, mean, std):
        super().__init__(len(mean))
        self.mean = nn.Parameter(torch.tensor(mean, dtype=torch.float32))
        self.log_std = nn.Parameter(torch.tensor(std, dtype=torch.float32).log())

    def x0(self, x, s):
        m, var = self.per_channel(self.mean), self.per_channel(self.log_std).exp() ** 2
        gain = (1 - s) * var / ((1 - s) ** 2 * var + s ** 2)
        return m + gain * (x - (1 - s) * m)


class AffineGenerator(_Interface):
    def __init__(self, a, b):
        super().__init__(len(a))
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float32))

    def x0(self, x, s):
        return self.per_channel(self.a) + self.per_channel(self.b) * x
