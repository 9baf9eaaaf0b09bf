"""StreamingDecoder: decode a latent video chunk by chunk as the generator produces it.

Every causal conv keeps its last two input frames between calls (one FeatureCache per spatial tile), so
feeding latent chunks of any size (1, 3, 3, ...) gives exactly the frames of decoding the whole latent at
once: 1 pixel frame for the stream's first latent frame, 4 for every later one.
"""

import torch

from .feature_cache import FeatureCache
from .images import video_to_images
from .latent_norm import denormalize_latent
from .model import SPATIAL_STRIDE
from .tiling import plan_tiles


def decode_whole(vae, latent: torch.Tensor, tile_size: int | None = None, tile_overlap: int | None = None,
                 output_device=None) -> torch.Tensor:
    """Whole normalised latent [B,16,T,h,w] -> video [B,3,1+4(T-1),8h,8w] in [-1,1], fp32.

    Equal to streaming it chunk by chunk; tiling (latent pixels) bounds memory. Output on `output_device`
    (default: the latent's device).
    """
    out_dev = latent.device if output_device is None else output_device
    return StreamingDecoder(vae, tile_size, tile_overlap, output_device=out_dev).decode_video(latent)


class StreamingDecoder:
    """Chunk-by-chunk decoder of one latent stream, optionally spatially tiled.

    vae: a WanVAE (computes on its device and dtype). tile_size / tile_overlap: tile edge and overlap in latent
    pixels (None: no tiling; overlap defaults to tile_size // 4). frames_per_pass: latent frames per decoder
    pass inside a chunk (None: the whole chunk at once). output_device: where frames are returned (and tiles
    blended); default CPU.
    """

    def __init__(self, vae, tile_size: int | None = None, tile_overlap: int | None = None,
                 frames_per_pass: int | None = None, output_device="cpu"):
        if tile_size is not None:
            tile_overlap = tile_size // 4 if tile_overlap is None else tile_overlap
            plan_tiles(1, 1, tile_size, tile_overlap)  # validates the numbers
        if frames_per_pass is not None and frames_per_pass < 1:
            raise ValueError(f"frames_per_pass must be >= 1 or None, got {frames_per_pass}")
        self.vae = vae
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.frames_per_pass = frames_per_pass
        self.output_device = torch.device(output_device)
        self._closed = False
        self.reset()

    def reset(self):
        """Start a new stream: drop every cache; the next chunk begins a new video."""
        self._check_open()
        self._tiles, self._caches, self._weight_sum, self._shape = None, None, None, None
        self.latent_frames = 0
        self.pixel_frames = 0

    def close(self):
        """Free the caches; any later decode raises."""
        self._tiles, self._caches, self._weight_sum = None, None, None
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def cache_nbytes(self) -> int:
        """Bytes held by the feature caches of all tiles."""
        return sum(c.nbytes() for c in self._caches or [])

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent chunk [B,16,T,h,w] -> ComfyUI IMAGE [B*F,8h,8w,3] in [0,1], fp32, batch-major."""
        return video_to_images(self.decode_video(latent))

    __call__ = decode

    def decode_video(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent chunk [B,16,T,h,w] -> video [B,3,F,8h,8w] in [-1,1], fp32 (F = 1+4(T-1) first, else 4T)."""
        self._check_chunk(latent)
        z = denormalize_latent(latent)
        if self._tiles is None:
            self._start(latent.shape)
        if len(self._tiles) == 1:
            out = self._decode_tile(z, self._caches[0])
        else:
            out = None
            for tile, cache in zip(self._tiles, self._caches):
                piece = self._decode_tile(z[..., tile.y0:tile.y1, tile.x0:tile.x1], cache)
                if out is None:
                    b, c, f = piece.shape[:3]
                    out = torch.zeros(b, c, f, *self._weight_sum.shape[-2:], device=self.output_device)
                s = SPATIAL_STRIDE
                out[..., tile.y0 * s:tile.y1 * s, tile.x0 * s:tile.x1 * s] += piece * tile.weight
                del piece
            out /= self._weight_sum
        self.latent_frames += latent.shape[2]
        self.pixel_frames += out.shape[2]
        return out.clamp_(-1.0, 1.0)

    def _start(self, shape):
        b, _, _, h, w = shape
        self._shape = (b, h, w)
        if self.tile_size is None:
            self._tiles = [None]
        else:
            self._tiles = plan_tiles(h, w, self.tile_size, self.tile_overlap, SPATIAL_STRIDE)
            s = SPATIAL_STRIDE
            self._weight_sum = torch.zeros(1, 1, 1, h * s, w * s)
            for t in self._tiles:
                self._weight_sum[..., t.y0 * s:t.y1 * s, t.x0 * s:t.x1 * s] += t.weight
            self._weight_sum = self._weight_sum.to(self.output_device)
            self._tiles = [_on(t, self.output_device) for t in self._tiles]
        self._caches = [FeatureCache() for _ in self._tiles]

    def _decode_tile(self, z: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        step = self.frames_per_pass or z.shape[2]
        parts = [self.vae.decode_chunk(z[:, :, i:i + step], cache).float().to(self.output_device)
                 for i in range(0, z.shape[2], step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def _check_open(self):
        if self._closed:
            raise RuntimeError(
                "this StreamingDecoder is closed: it cannot decode another chunk or be reset; "
                "create a new StreamingDecoder for a new stream"
            )

    def _check_chunk(self, latent: torch.Tensor):
        self._check_open()
        z_dim = self.vae.cfg.z_dim
        if latent.dim() != 5:
            raise ValueError(f"expected a latent chunk [B,{z_dim},T,h,w], got shape {tuple(latent.shape)}")
        b, c, t, h, w = latent.shape
        if c != z_dim:
            raise ValueError(
                f"expected {z_dim} latent channels at dim 1 of [B,{z_dim},T,h,w], got {c} "
                f"(shape {tuple(latent.shape)}); pixel frames go to the encoder, not the decoder"
            )
        if t == 0 or h == 0 or w == 0:
            raise ValueError(f"empty latent chunk, shape {tuple(latent.shape)}")
        if self._shape is not None and self._shape != (b, h, w):
            raise ValueError(
                f"latent chunk of batch {b} and size {h}x{w} does not fit this stream (batch {self._shape[0]}, "
                f"size {self._shape[1]}x{self._shape[2]}); call reset() to start a new stream"
            )


def _on(tile, device):
    return type(tile)(tile.y0, tile.y1, tile.x0, tile.x1, tile.weight.to(device))
