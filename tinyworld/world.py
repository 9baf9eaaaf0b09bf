"""The tiny world: 128x128 videos of one coloured circle or square sliding over a plain gray background.

    scene = sample_scene(rng)                     # colour, shape, radius, speed, direction, start, background
    frames = render(scene, 37)                     # uint8 [37, 128, 128, 3]; 4k+1 frames, as the Wan VAE takes
    caption(scene)                                 # "a red circle moves left"

The shape moves in a straight line at `speed` pixels per frame and bounces off the borders. A scene can change
direction at a given frame (`turn_at`, `turn_to`): that is what a prompt switch asks of a model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SIZE = 128
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
RADIUS = (10.0, 20.0)
SPEED = (0.5, 1.5)
GRAY = (105, 150)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    direction: str
    radius: float
    speed: float
    x: float  # centre at frame 0, pixels
    y: float
    gray: int  # background level (all three channels)
    turn_at: int | None = None  # frame from which the shape moves `turn_to` instead
    turn_to: str | None = None


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moves {direction}"


def scene_caption(scene: Scene) -> str:
    """The caption of what the shape does last (after a turn, the new direction)."""
    return caption(scene.colour, scene.shape, scene.turn_to or scene.direction)


def all_captions() -> list[str]:
    return [caption(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]


def sample_scene(rng: np.random.Generator, **fixed) -> Scene:
    """A random scene; keyword arguments fix any field (e.g. colour="red", x=64.0)."""
    radius = float(rng.uniform(*RADIUS))
    s = dict(colour=str(rng.choice(list(COLOURS))), shape=str(rng.choice(SHAPES)),
             direction=str(rng.choice(list(DIRECTIONS))), radius=radius, speed=float(rng.uniform(*SPEED)),
             x=float(rng.uniform(radius, SIZE - radius)), y=float(rng.uniform(radius, SIZE - radius)),
             gray=int(rng.integers(GRAY[0], GRAY[1] + 1)))
    s.update(fixed)
    return Scene(**s)


def _bounce(p: float, lo: float, hi: float) -> tuple[float, float]:
    """Fold a free coordinate back into [lo, hi]; returns (position, sign of the velocity)."""
    span = hi - lo
    q = (p - lo) % (2 * span)
    return (lo + q, 1.0) if q <= span else (hi - (q - span), -1.0)


def positions(scene: Scene, frames: int) -> np.ndarray:
    """Centre (x, y) of the shape at every frame [frames, 2], bounces included."""
    lo, hi = scene.radius, SIZE - scene.radius
    out = np.zeros((frames, 2))
    x, y = scene.x, scene.y
    d = np.array(DIRECTIONS[scene.direction])
    for f in range(frames):
        if scene.turn_at is not None and f == scene.turn_at:
            d = np.array(DIRECTIONS[scene.turn_to])
        out[f] = x, y
        x, sx = _bounce(x + d[0] * scene.speed, lo, hi)
        y, sy = _bounce(y + d[1] * scene.speed, lo, hi)
        d = d * np.array([sx if d[0] else 1.0, sy if d[1] else 1.0])
    return out


def render(scene: Scene, frames: int, supersample: int = 4) -> np.ndarray:
    """uint8 RGB frames [frames, 128, 128, 3] with anti-aliased edges."""
    n = SIZE * supersample
    grid = (np.arange(n) + 0.5) / supersample
    xx, yy = np.meshgrid(grid, grid)
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    bg = np.full(3, scene.gray, dtype=np.float32)
    out = np.empty((frames, SIZE, SIZE, 3), dtype=np.uint8)
    for f, (cx, cy) in enumerate(positions(scene, frames)):
        if scene.shape == "circle":
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= scene.radius ** 2
        else:
            inside = (np.abs(xx - cx) <= scene.radius) & (np.abs(yy - cy) <= scene.radius)
        cover = inside.reshape(SIZE, supersample, SIZE, supersample).mean(axis=(1, 3))[..., None]
        out[f] = np.round(bg * (1 - cover) + colour * cover).astype(np.uint8)
    return out


def start_scene(colour: str = "red", shape: str = "circle", direction: str = "right", x: float = 64.0,
                y: float = 64.0) -> Scene:
    """The scene of the bundled start image: the shape in the middle, room to move every way."""
    return Scene(colour=colour, shape=shape, direction=direction, radius=14.0, speed=1.0, x=x, y=y, gray=128)


def turned(scene: Scene, at: int, to: str) -> Scene:
    return replace(scene, turn_at=at, turn_to=to)
