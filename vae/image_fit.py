"""Fitting a start image to a Wan resolution: sides snapped to multiples of 16, the image scaled to cover and
centre-cropped (or stretched). Shared by the Start node and the command line."""
from __future__ import annotations

import torch
import torch.nn.functional as F

MULTIPLE = 16  # VAE stride 8 x DiT patch 2
MAX_SIDE = 8192
FITS = ("crop", "stretch")


def snap(value: int, name: str) -> tuple[int, str]:
    """Round a side to the nearest multiple of 16; a note when it changed; an error when it cannot be done."""
    value = int(value)
    if value < MULTIPLE or value > MAX_SIDE:
        raise ValueError(f"{name} {value} cannot be used: it must be between {MULTIPLE} and {MAX_SIDE} pixels "
                         f"(a multiple of {MULTIPLE})")
    snapped = max(MULTIPLE, (value + MULTIPLE // 2) // MULTIPLE * MULTIPLE)  # nearest, halves up
    if snapped == value:
        return value, ""
    return snapped, f"{name} {value} snapped to {snapped} (a multiple of {MULTIPLE})"


def check_image(image: torch.Tensor, name: str = "image") -> None:
    """An IMAGE [N, H, W, 3 or 4] with pixels and finite values, or one readable error naming `name`."""
    if image.dim() != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: expected an IMAGE [frames, height, width, 3], got {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name} is empty ({image.shape[2]}x{image.shape[1]} pixels, {image.shape[0]} frames); "
                         f"give a picture with at least one pixel")
    if not torch.isfinite(image).all():
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite values; the node before it produced broken pixels, "
                         f"fix or replace that image")


def fit_image(image: torch.Tensor, width: int, height: int, fit: str = "crop") -> torch.Tensor:
    """IMAGE [N, H, W, 3] -> [N, height, width, 3]: scaled to cover and centre-cropped ("crop"), or stretched."""
    x = image.movedim(-1, 1).float()
    if fit == "crop":
        h, w = x.shape[-2:]
        scale = max(width / w, height / h)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - height) // 2, (nw - width) // 2
        x = x[..., top:top + height, left:left + width]
    else:
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.movedim(1, -1).clamp(0, 1)
