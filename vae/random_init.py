"""Seeded random Wan VAEs for tests, benches and demos (no weights file needed)."""

import torch

from .model import WanVAE, WanVAEConfig


def random_vae(base_dim: int = 8, seed: int = 0, num_res_blocks: int = 2) -> WanVAE:
    """A WanVAE with seeded random weights scaled so activations stay O(1) (eval mode, fp32, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    model = WanVAE(WanVAEConfig(base_dim=base_dim, num_res_blocks=num_res_blocks))
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.05 * noise)
            else:
                p.copy_(noise / (p[0].numel() ** 0.5))
    return model.eval().requires_grad_(False)
