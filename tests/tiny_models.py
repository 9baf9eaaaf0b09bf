"""Tiny random Wan experts (fp32, CPU) for the tests, built from the package's own classes."""
from __future__ import annotations

import torch

from causalwan.causal.model.config import WanConfig
from causalwan.causal.model.transformer import CausalWanModel



def tiny_config(**kw) -> WanConfig:
    base = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, text_len=16, freq_dim=32)
    base.update(kw)
    return WanConfig(**base)


def tiny_model(seed: int = 0, scale: float = 0.2, **kw) -> CausalWanModel:
    """A tiny expert whose random weights are large enough that every layer matters."""
    torch.manual_seed(seed)
    m = CausalWanModel(tiny_config(**kw)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, scale)
    return m
