"""Conversion between ComfyUI IMAGE tensors and VAE video tensors.

IMAGE: [N, H, W, 3] float in [0, 1] (N frames of one video). Video: [B, 3, T, H, W] float in [-1, 1].
"""

import torch


def images_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [N,H,W,3] in [0,1] (or one frame [H,W,3]) -> video [1,3,N,H,W] in [-1,1]."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"expected an IMAGE tensor [N,H,W,3], got shape {tuple(images.shape)}")
    if images.shape[-1] != 3:
        raise ValueError(
            f"expected an IMAGE tensor [N,H,W,3] with 3 colour channels, got {images.shape[-1]} channels "
            f"(shape {tuple(images.shape)}); drop an alpha channel before encoding"
        )
    return (images.float() * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)


def video_to_images(video: torch.Tensor) -> torch.Tensor:
    """Video [B,3,T,H,W] in [-1,1] -> ComfyUI IMAGE [B*T,H,W,3] in [0,1] (batch-major), fp32, same device."""
    if video.dim() != 5 or video.shape[1] != 3:
        raise ValueError(f"expected a video tensor [B,3,T,H,W], got shape {tuple(video.shape)}")
    images = (video.float().clamp(-1.0, 1.0) + 1.0) * 0.5
    return images.permute(0, 2, 3, 4, 1).reshape(-1, video.shape[3], video.shape[4], 3)
