"""Wan2.1 VAE (pure PyTorch): start-image encoder and a streaming decoder that keeps its cache between chunks."""

from .feature_cache import FeatureCache
from .images import images_to_video, video_to_images
from .latent_norm import LATENT_MEAN, LATENT_STD, denormalize_latent, normalize_latent
from .model import WanVAE, WanVAEConfig
from .random_init import random_vae
from .streaming import StreamingDecoder
from .weights import VAEWeightsError, load_vae, load_vae_state_dict

__all__ = [
    "FeatureCache", "LATENT_MEAN", "LATENT_STD", "StreamingDecoder", "VAEWeightsError", "WanVAE", "WanVAEConfig",
    "denormalize_latent", "images_to_video", "load_vae", "load_vae_state_dict", "normalize_latent",
    "random_vae", "video_to_images",
]
