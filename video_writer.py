"""Write frames to an MP4 as they arrive (PyAV).

Frames go to `<name>.partial.mp4` beside the target, which is renamed to the target only when the video is
complete, so a failed or cancelled run never replaces an existing file with a broken one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class Mp4Writer:
    """Append ComfyUI IMAGE batches [N, H, W, 3] in [0, 1] to an H.264 (or MPEG-4) file."""

    def __init__(self, path, fps: int = 16):
        import av

        self.path = Path(path)
        self._made = [p for p in reversed(self.path.parents) if not p.exists()]  # folders to remove on abort
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.stem + ".partial.mp4")
        self._container = av.open(str(self.partial), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=fps)
        self._stream.pix_fmt = "yuv420p"
        self._size = None
        self.frames = 0

    def write(self, images: torch.Tensor) -> None:
        import av

        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"frames must be an IMAGE batch [N, H, W, 3], got {list(images.shape)}")
        h, w = images.shape[1:3]
        if self._size is None:
            if h % 2 or w % 2:
                raise ValueError(f"MP4 (yuv420p) needs an even frame size, got {w}x{h}")
            self._stream.width, self._stream.height, self._size = w, h, (h, w)
        elif self._size != (h, w):
            raise ValueError(f"frame size changed from {self._size} to {(h, w)} within one video")
        arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        for frame in arr:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self._container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        """Finish the file and move it to its target name."""
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self.partial.replace(self.path)

    def abort(self) -> None:
        """Drop the unfinished file; the target is left as it was (also when closing fails, e.g. on a full disk)."""
        try:
            self._container.close()
        except Exception:  # the write that failed made closing fail too; the file goes anyway
            pass
        finally:
            self.partial.unlink(missing_ok=True)
            for folder in reversed(self._made):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()
