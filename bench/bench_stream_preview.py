"""What sending every frame to the stream player costs the sampler. Prints JSON.

The node path (nodes/chunk_runner.run_chunks: stream, streaming VAE decode, progress, frame sender) runs the
same chunks twice per repeat, side by side: once with nobody listening (the frame sender is off, as in plain
Python) and once with a listener, as under a ComfyUI server (every decoded frame shrunk to at most 320 px,
JPEG-encoded in the sender's worker thread and handed to the listener as a data URL). Also reported: the
sender's own work per frame (shrink + encode, timed alone). Tiny random model and VAE, real frame sizes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from causalwan.causal.model.config import WanConfig
from causalwan.causal.model.transformer import CausalWanModel
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.stream import Stream, StreamOptions
from causalwan.nodes import comfy_adapter as adapter
from causalwan.nodes.chunk_runner import run_chunks
from causalwan.nodes.preview import jpeg_data_url, small_frames
from causalwan.nodes.values import LoadedVAE
from causalwan.vae.random_init import random_vae


def one_run(pair, vae, latent_hw, chunks, steps, device, listen: bool) -> tuple[float, int]:
    adapter.clear_listeners()
    got = []
    if listen:
        adapter.add_event_listener(lambda name, data: got.append(len(data.get("frames") or [])
                                                                 if data.get("kind") == "chunk" else 0))
    s = Stream(pair, seed=0, options=StreamOptions(steps=steps), latent_hw=latent_hw, device=device)
    s.set_prompt(torch.randn(1, 20, 64, device=device))
    start = torch.randn(1, 16, 1, *latent_hw, device=device)
    s.prime(start)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run_chunks(s, chunks, vae=vae, node_id="1", warmup=start)  # returns after the last frame was sent
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    adapter.clear_listeners()
    return dt, sum(got)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, nargs=2, default=(480, 832), metavar=("H", "W"))
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", default="1000,750,500,250")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = WanConfig(dim=a.dim, ffn_dim=2 * a.dim, num_heads=max(1, a.dim // 64), num_layers=a.layers, text_dim=64,
                    text_len=32, freq_dim=64)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    pair = ExpertPair(low=CausalWanModel(cfg).to(a.device, dtype).eval())  # one dense expert
    vae = LoadedVAE(random_vae(base_dim=8, seed=0).to(a.device).eval())
    latent_hw = (a.size[0] // 8, a.size[1] // 8)
    steps = tuple(int(x) for x in a.steps.split(","))
    with torch.no_grad():
        one_run(pair, vae, latent_hw, 1, steps, a.device, True)  # warm-up (allocator, JPEG codec, thread)
        off, on, frames = [], [], 0
        for _ in range(a.repeats):  # interleaved, so drift in machine load hits both alike
            off.append(one_run(pair, vae, latent_hw, a.chunks, steps, a.device, False)[0])
            dt, frames = one_run(pair, vae, latent_hw, a.chunks, steps, a.device, True)
            on.append(dt)
        sample = torch.rand(12, *a.size, 3, device=a.device)  # one chunk of frames, timed alone
        t0 = time.perf_counter()
        small = small_frames(sample)
        urls = [jpeg_data_url(f) for f in small.numpy()]
        encode = time.perf_counter() - t0
    t_off, t_on = statistics.median(off), statistics.median(on)
    out = {
        "bench": "stream_preview_frames", "device": a.device, "torch_threads": torch.get_num_threads(),
        "frame_size": list(a.size), "preview_size": list(small.shape[1:3]), "chunks": a.chunks,
        "frames_sent_per_run": frames, "steps": list(steps), "model_dim": a.dim, "layers": a.layers,
        "repeats": a.repeats,
        "sampler_s_without_frames": [round(x, 3) for x in off], "sampler_s_with_frames": [round(x, 3) for x in on],
        "median_s_without": round(t_off, 3), "median_s_with": round(t_on, 3),
        "slowdown_percent": round(100 * (t_on - t_off) / t_off, 2),
        "sender_ms_per_frame_alone": round(1000 * encode / len(urls), 2),
        "jpeg_bytes_per_frame": round(sum(len(u) for u in urls) * 3 / 4 / len(urls)),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
