"""The main job from the command line: animate a start image into a streamed MP4, chunk by chunk.

    python -m causalwan.cli                       # no weights: a tiny random model (the video is noise)
    python -m causalwan.cli --folder CausalWan2.2-I2V-A14B-Diffusers --prompt "..." --out out/video.mp4
    python -m causalwan.cli --prompt "a fox walks" --switch 4 "the fox starts to run"   # prompt switch at chunk 4

Frames are decoded and appended to the MP4 as each chunk finishes; per-chunk timings are printed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .causal.model.config import WanConfig
from .causal.sampling.experts import ExpertPair
from .causal.model.transformer import CausalWanModel
from .causal.sampling.prompts import SWITCH_MODES, PromptChange, PromptSchedule
from .causal.sampling.schedule import parse_steps
from .causal.sampling.stream import Stream, StreamOptions
from .vae.image_fit import fit_image, snap
from .vae.random_init import random_vae
from .vae.streaming import StreamingDecoder
from .video_writer import Mp4Writer

BUNDLED_IMAGE = Path(__file__).resolve().parent / "assets" / "start.png"
DEMO_CONFIG = WanConfig(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=64, text_len=32, freq_dim=64)


def load_image(path, width: int, height: int) -> torch.Tensor:
    """An image file -> IMAGE [1, height, width, 3] in [0, 1], fitted as the Start node fits it."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return fit_image(torch.from_numpy(img)[None], width, height)


def demo_models(seed: int):
    """Tiny random-weight experts and VAE: the pipeline runs end to end, the picture is noise."""
    torch.manual_seed(seed)
    high, low = CausalWanModel(DEMO_CONFIG).eval(), CausalWanModel(DEMO_CONFIG).eval()
    return ExpertPair(low=low, high=high, boundary=875.0, shift=5.0), random_vae(base_dim=8, seed=seed)


def demo_text(prompt: str, cfg: WanConfig) -> torch.Tensor:
    """A stand-in text embedding derived from the prompt (no text encoder without weights)."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "little")
    return torch.randn(1, 12, cfg.text_dim, generator=torch.Generator().manual_seed(seed))


def real_models(a, device, dtype):
    from .causal.weights.text_encoder import load_text_encoder
    from .causal.weights.loader import load_experts
    from .vae.weights import load_vae

    folder_arg = a.folder or (a.model if a.model and Path(a.model).is_dir() else None)
    low = a.low or (a.model if a.model and not Path(a.model).is_dir() else None)
    experts = load_experts(high=a.high, low=low, folder=folder_arg, dtype=dtype, device=device,
                           boundary=a.boundary, shift=a.shift)
    folder = Path(a.folder) if a.folder else None
    vae_path = a.vae or (folder / "vae" if folder and (folder / "vae").is_dir() else None)
    te_path = a.text_encoder or (folder if folder and (folder / "text_encoder").is_dir() else None)
    if vae_path is None or te_path is None:
        missing = "--vae" if vae_path is None else "--text-encoder"
        raise SystemExit(f"error: {missing} is needed with these model files (a diffusers folder carries vae/ and "
                         f"text_encoder/ itself)")
    vae = load_vae(vae_path, device=device, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    encoder = load_text_encoder(te_path, device=device)
    return experts, vae, lambda prompt: encoder.encode([prompt])[0][None]


def apply_loras(experts, specs: list[str]) -> str:
    """--lora FILE[:STRENGTH] (repeatable) -> those LoRAs in force on every expert; their summary line."""
    from .causal.weights.lora import activate, check_strength
    from .causal.weights.lora_keys import read_lora

    uses = []
    for spec in specs:
        path, _, strength = spec.rpartition(":")
        if not path or not strength.replace(".", "", 1).lstrip("-").isdigit():  # no strength (or a C:\ path)
            path, strength = spec, "1"
        s = check_strength(strength, f"--lora {spec}")
        uses.append((read_lora(path), s, s))
    return activate(experts, uses)


def prompt_schedule(a, encode, device) -> PromptSchedule:
    """--prompt from chunk 0, then each --switch CHUNK PROMPT."""
    changes = [PromptChange(0, encode(a.prompt).to(device))]
    for chunk, prompt in a.switch:
        if not chunk.lstrip("-").isdigit():
            raise ValueError(f"--switch takes a chunk number and a prompt, got {chunk!r} {prompt!r}")
        changes.append(PromptChange(int(chunk), encode(prompt).to(device), a.switch_mode))
    schedule = PromptSchedule(changes)
    schedule.check(a.chunks)  # before the stream starts and the video file is opened
    return schedule


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m causalwan.cli", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("model files (none given: a tiny random demo model)")
    src.add_argument("--folder", help="diffusers folder of the release (transformer/, transformer_2/, vae/, ...)")
    src.add_argument("--high", help="high-noise expert file (ComfyUI diffusion_models single file)")
    src.add_argument("--low", help="low-noise expert file")
    src.add_argument("--model", help="one dense causal checkpoint (Self-Forcing / CausVid 1.3B)")
    src.add_argument("--vae", help="Wan2.1 VAE file or diffusers vae/ folder")
    src.add_argument("--text-encoder", help="umT5 file or folder (diffusers text_encoder/ + tokenizer/)")
    src.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                     help="a LoRA on every expert (strength default 1); repeat to stack LoRAs")
    ap.add_argument("--image", default=str(BUNDLED_IMAGE), help="start image (default: the bundled picture)")
    ap.add_argument("--prompt", default="a calm lake under a warm evening sun, gentle waves, birds flying")
    ap.add_argument("--switch", nargs=2, action="append", default=[], metavar=("CHUNK", "PROMPT"),
                    help="from chunk CHUNK (counted from 0) on, use PROMPT; repeat for more switches")
    ap.add_argument("--switch-mode", default="recache", choices=SWITCH_MODES,
                    help="cut: new text only; recache: re-run the cached frames under it; blend: over 2 chunks")
    ap.add_argument("--chunks", type=int, default=7, help="chunks of latent frames after the start frame")
    ap.add_argument("--frames-per-chunk", type=int, default=3)
    ap.add_argument("--width", type=int, default=None, help="pixels, multiple of 16 (default 832; demo 256)")
    ap.add_argument("--height", type=int, default=None, help="pixels, multiple of 16 (default 480; demo 160)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default=None, help="timesteps, e.g. '1000,750,500,250' (default: the model's)")
    ap.add_argument("--shift", type=float, default=None, help="scheduler shift (default: the checkpoint's)")
    ap.add_argument("--boundary", type=float, default=None, help="expert boundary timestep (default: checkpoint)")
    ap.add_argument("--window", type=int, default=0, help="attention window in latent frames (0: none)")
    ap.add_argument("--sink", type=int, default=0, help="sink frames kept in the window")
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="out/causalwan_demo.mp4")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    try:
        return run(a)
    except (ValueError, FileNotFoundError, RuntimeError) as err:  # bad input: one readable line, no traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def run(a) -> dict:
    demo = not any((a.folder, a.high, a.low, a.model))
    device = a.device
    if demo:
        print("No model files given: running a tiny built-in model with RANDOM weights. The pipeline runs end to "
              "end (encode, stream, decode, MP4), but the video will be noise because no weights are present. "
              "Pass --folder (or --high/--low, or --model) to use real weights.", flush=True)
        experts, vae = demo_models(a.seed)
        experts.low.to(device), experts.high.to(device), vae.to(device)
        encode = lambda prompt: demo_text(prompt, DEMO_CONFIG)  # noqa: E731
        width, height = a.width or 256, a.height or 160
    else:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        experts, vae, encode = real_models(a, device, dtype)
        width, height = a.width or 832, a.height or 480
    if a.lora:
        print(apply_loras(experts, a.lora), flush=True)
    (w16, note_w), (h16, note_h) = snap(width, "width"), snap(height, "height")
    for note in (note_w, note_h):
        if note:
            print(f"note: {note}")
    schedule = prompt_schedule(a, encode, device)
    image = load_image(a.image, w16, h16)
    t0 = time.perf_counter()
    start = vae.encode_images(image.to(device))
    opts = StreamOptions(chunk_frames=a.frames_per_chunk, steps=parse_steps(a.steps) if a.steps else None,
                         shift=a.shift, window=a.window or None, sink=a.sink,
                         max_frames=start.shape[2] + a.chunks * a.frames_per_chunk)
    stream = Stream(experts, seed=a.seed, options=opts, device=device)
    stream.set_prompt(schedule.changes[0].context)
    stream.prime(start)
    decoder = StreamingDecoder(vae)
    timings = []
    with Mp4Writer(a.out, fps=a.fps) as writer:
        writer.write(decoder.decode(start))
        print(f"start frame encoded and primed in {time.perf_counter() - t0:.2f}s", flush=True)
        chunks = stream.run(a.chunks, schedule)
        for k in range(a.chunks):
            t1 = time.perf_counter()
            chunk = next(chunks)
            t2 = time.perf_counter()
            frames = decoder.decode(chunk)
            writer.write(frames)
            t3 = time.perf_counter()
            timings.append({"chunk": k + 1, "denoise_s": round(t2 - t1, 3), "decode_s": round(t3 - t2, 3),
                            "frames": frames.shape[0]})
            print(f"chunk {k + 1}/{a.chunks}: denoise {t2 - t1:.2f}s, decode {t3 - t2:.2f}s, "
                  f"{frames.shape[0]} frames (total {writer.frames})", flush=True)
    summary = {"out": str(a.out), "frames": writer.frames, "size": [w16, h16], "demo": demo,
               "total_s": round(time.perf_counter() - t0, 2), "per_chunk": timings}
    print(json.dumps({k: v for k, v in summary.items() if k != "per_chunk"}))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
