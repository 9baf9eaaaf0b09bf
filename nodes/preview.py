"""Preview frames of a running stream: a decoded IMAGE frame -> a small PIL image / JPEG data URL."""
from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

PREVIEW_MAX_SIDE = 512


def to_pil(frame: torch.Tensor, max_side: int = PREVIEW_MAX_SIDE) -> Image.Image:
    """One IMAGE frame [H, W, 3] in [0, 1] -> an RGB PIL image no larger than `max_side`."""
    arr = (frame.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return img


def data_url(img: Image.Image, quality: int = 80) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
