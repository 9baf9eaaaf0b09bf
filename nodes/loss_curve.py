"""The training node's preview: the loss curves drawn as a small picture (PIL only)."""
from __future__ import annotations

from PIL import Image, ImageDraw

SIZE = (384, 192)
COLOURS = {"critic_loss": (80, 160, 255), "dmd_loss": (255, 140, 60)}


def loss_curve_image(history: list[dict], size=SIZE) -> Image.Image:
    """Critic (blue) and DMD (orange) losses over the steps of `history`, each scaled to its own range."""
    w, h = size
    img = Image.new("RGB", size, (24, 24, 24))
    draw = ImageDraw.Draw(img)
    pad = 8
    for key, colour in COLOURS.items():
        pts = [(r["step"], r[key]) for r in history if key in r]
        if not pts:
            continue
        steps = [s for s, _ in pts]
        vals = [v for _, v in pts]
        lo, hi = min(vals), max(vals)
        x0, x1 = min(steps), max(steps)

        def xy(s, v):
            x = pad + (w - 2 * pad) * ((s - x0) / (x1 - x0) if x1 > x0 else 0.5)
            y = h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo) if hi > lo else 0.5)
            return x, y

        line = [xy(s, v) for s, v in pts]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        else:
            draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=colour)
        draw.text((pad, pad + (0 if key == "critic_loss" else 12)), f"{key.split('_')[0]} {vals[-1]:.4g}",
                  fill=colour)
    return img
