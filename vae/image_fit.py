"""Fitting a start image to a Wan resolution: sides snapped to multiples of 16, the image scaled to cover and
centre-cropped (or stretched); start images read from files. Shared by the Start node, the command line and
training (the command and the CausalWan Train (DMD) node)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MULTIPLE = 16  # VAE stride 8 x DiT patch 2
MAX_SIDE = 8192
FITS = ("crop", "stretch")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


def read_image(path, width: int, height: int, name: str = "start image") -> torch.Tensor:
    """The image file `path` read whole (a truncated file fails here, not mid-run) as an IMAGE [1, height, width,
    3], fitted; errors name the file as `name` (the caller's word for it)."""
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{name} '{path}' does not exist; give a PNG or JPEG image")
    if path.is_dir():
        raise ValueError(f"{name} '{path}' is a folder; give one PNG or JPEG file from it")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        kind = "is not an image" if isinstance(e, UnidentifiedImageError) else "could not be read"
        detail = str(e).split("\n")[0].replace(str(path), "").strip(" :'") or type(e).__name__
        raise ValueError(f"{name} '{path}' {kind} ({detail}); give a complete PNG or JPEG file") from None
    image = torch.from_numpy(rgb)[None]
    check_image(image, name)
    return fit_image(image, width, height)


def read_images(folder, width: int, height: int, name: str = "start images folder") -> list[torch.Tensor]:
    """Every image file of `folder` (by name), each read and fitted as read_image does."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{name} '{folder}' is not a folder; give a folder of images ({', '.join(IMAGE_SUFFIXES)})")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{name} '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}); put the start images "
                         f"in it")
    return [read_image(f, width, height) for f in files]
