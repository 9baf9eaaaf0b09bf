"""CausalWan Start: the start of a stream, from an image (image-to-video) or from nothing (text-to-video)."""
from __future__ import annotations

import logging

from ..vae.image_fit import FITS, MAX_SIDE, MULTIPLE, check_image, fit_image, snap
from .node_text import with_text
from .values import CATEGORY, START, VAE, StartLatent

log = logging.getLogger("causalwan")


class CausalWanImageConditioner:
    DESCRIPTION = ("The start of a stream. With an image: the image is resized to width x height and encoded by "
                   "the VAE into latent frame 0, which both experts read before the first chunk "
                   "(image-to-video). Without an image: text-to-video from noise at that size.")
    CATEGORY = CATEGORY
    FUNCTION = "execute"
    RETURN_TYPES = (START, "STRING")
    RETURN_NAMES = ("start", "note")
    OUTPUT_TOOLTIPS = ("Start latent and video size for CausalWan Chunk Sampler.",
                       "What was adjusted (sizes snapped to multiples of 16, extra images ignored); empty if "
                       "nothing was.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 832, "min": MULTIPLE, "max": MAX_SIDE, "step": MULTIPLE, "tooltip": (
                "Video width in pixels; a multiple of 16 (other values are snapped to the nearest one).")}),
            "height": ("INT", {"default": 480, "min": MULTIPLE, "max": MAX_SIDE, "step": MULTIPLE, "tooltip": (
                "Video height in pixels; a multiple of 16 (other values are snapped to the nearest one).")}),
            "fit": (list(FITS), {"default": "crop", "tooltip": (
                "How the image meets width x height: crop = scale to cover, then cut the centre (keeps the "
                "aspect); stretch = scale to exactly that size.")}),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "Start image (first frame of the video). Leave unconnected for "
                                           "text-to-video."}),
            "vae": (VAE, {"tooltip": "CausalWan VAE that encodes the start image; needed only with an image."}),
        }}

    def execute(self, **inputs):
        """ComfyUI's entry: start(), with what the start is and any adjustment shown as text on the node."""
        start, note = self.start(**inputs)
        kind = "image to video" if start.latent is not None else "text to video (no start image)"
        return with_text((start, note), f"{kind}, {start.width}x{start.height}", note)

    def start(self, width, height, fit="crop", image=None, vae=None):
        if fit not in FITS:
            raise ValueError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
        width, note_w = snap(width, "width")
        height, note_h = snap(height, "height")
        notes = [n for n in (note_w, note_h) if n]
        latent = None
        if image is not None:
            if vae is None:
                raise ValueError("a start image needs a VAE to encode it: connect a CausalWan VAE Loader to 'vae'")
            check_image(image, "image")
            if image.shape[0] > 1:
                notes.append(f"{image.shape[0]} images given; the first one starts the video")
            frame = fit_image(image[:1, ..., :3], width, height, fit)
            latent = vae.vae.encode_images(frame).cpu()
        note = "; ".join(notes)
        if note:
            log.warning("CausalWan Start: %s", note)
        return (StartLatent(latent, width, height, 1), note)
