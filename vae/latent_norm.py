"""Per-channel normalisation of Wan2.1 VAE latents (the 16 means and stds the Wan DiT was trained with)."""

import torch

LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


def _stats(z: torch.Tensor):
    shape = (1, len(LATENT_MEAN), 1, 1, 1)
    mean = torch.tensor(LATENT_MEAN, device=z.device, dtype=torch.float32).view(shape)
    std = torch.tensor(LATENT_STD, device=z.device, dtype=torch.float32).view(shape)
    return mean, std


def normalize_latent(mu: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent [B,16,T,h,w] -> the normalised latent the DiT sees: (mu - mean) / std, in fp32."""
    mean, std = _stats(mu)
    return (mu.float() - mean) / std


def denormalize_latent(z: torch.Tensor) -> torch.Tensor:
    """Normalised latent [B,16,T,h,w] -> raw VAE latent: z * std + mean, in fp32."""
    mean, std = _stats(z)
    return z.float() * std + mean
