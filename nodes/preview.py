"""Every frame of a running stream to the browser's stream player (web/stream_player.js), without holding up
the sampler: frames are shrunk on their device, and a worker thread JPEG-encodes them and sends one
"causalwan.stream" event per chunk while the sampler makes the next chunk.

Events (all carry "node" and "run", an id of this run):
    {"kind": "chunk", "chunk": k, "chunks": N, "first": index of its first frame, "frames": [data URLs],
     "total_frames": frames the run will make, "fps": 16, "prompt": prompt slot in force (see PromptEntry.slot)}
    {"kind": "end", "state": "done" | "cancelled" | "failed", "error": message, "frames": frames sent}
"""
from __future__ import annotations

import base64
import io
import queue
import threading
import uuid

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import comfy_adapter as adapter

PREVIEW_MAX_SIDE = 320  # pixels: the player is about 340 px wide
JPEG_QUALITY = 75
VIDEO_FPS = 16  # Wan 2.1 / 2.2 A14B videos (and the shipped CreateVideo nodes) run at 16 frames per second


def small_frames(frames: torch.Tensor, max_side: int = PREVIEW_MAX_SIDE) -> torch.Tensor:
    """IMAGE frames [F, H, W, 3] in [0, 1] -> uint8 [F, h, w, 3] on the CPU, longest side at most `max_side`
    (shrunk on the frames' own device, so only the small frames cross to the CPU)."""
    frames = frames.detach()
    h, w = frames.shape[1:3]
    scale = max_side / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        frames = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=size, mode="area").permute(0, 2, 3, 1)
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def jpeg_data_url(frame: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """uint8 [h, w, 3] -> "data:image/jpeg;base64,..."."""
    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class FrameSender:
    """Sends one run's frames in order from a worker thread; `end()` waits for what is queued, then says how
    the run ended. Without anyone listening (plain Python, no ComfyUI server) it does nothing."""

    def __init__(self, node_id, chunks: int, total_frames: int, fps: int = VIDEO_FPS):
        self.base = {"node": None if node_id is None else str(node_id), "run": uuid.uuid4().hex[:12]}
        self.chunks, self.total_frames, self.fps = chunks, total_frames, fps
        self.sent = 0  # frames handed over so far
        self.enabled = adapter.has_event_listeners()
        self._queue: queue.Queue = queue.Queue()
        self._worker = None
        if self.enabled:
            self._worker = threading.Thread(target=self._work, name="causalwan-preview", daemon=True)
            self._worker.start()

    def chunk(self, k: int, frames: torch.Tensor | None, prompt: int) -> None:
        """Frames [F, H, W, 3] of chunk k (1-based) and the prompt slot in force during it."""
        if not self.enabled:
            return
        small = small_frames(frames) if frames is not None and frames.shape[0] else None
        first, self.sent = self.sent, self.sent + (0 if small is None else small.shape[0])
        self._queue.put({"kind": "chunk", "chunk": k, "chunks": self.chunks, "first": first,
                         "total_frames": self.total_frames, "fps": self.fps, "prompt": prompt, "frames": small})

    def end(self, state: str, error: str = "") -> None:
        """"done", "cancelled" or "failed" (with `error`), after every queued chunk went out."""
        if not self.enabled:
            return
        self._queue.put({"kind": "end", "state": state, "error": error, "frames": self.sent})
        self._queue.put(None)
        self._worker.join(timeout=60)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if item["kind"] == "chunk":
                small = item["frames"]
                item["frames"] = [] if small is None else [jpeg_data_url(f) for f in small.numpy()]
            try:
                adapter.send_event({**self.base, **item}, adapter.STREAM_EVENT)
            except Exception as e:  # a preview must never break the run
                adapter.log.warning("CausalWan: a preview event was not sent: %s", e)
