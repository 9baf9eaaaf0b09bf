"""Streaming VAE decode vs decoding the whole latent at once, and tiled vs untiled decode. Prints JSON.

Each measurement runs in its own subprocess so its peak memory is its own: on CPU the peak is the process's
peak RSS (ru_maxrss) above the RSS after setup, with glibc's mmap threshold pinned at 64 KiB so that freed
tensors leave the RSS at once (RSS then tracks live tensor memory); on CUDA torch.cuda.max_memory_allocated
above the setup allocation. Streaming decodes `--chunks` chunks of `--chunk-frames` latent frames, dropping each chunk's
frames (as a previewer/saver would); per chunk it records time, current memory and the feature-cache size,
which must stay flat. The default (tiny random VAE, 64x64, single thread) runs in well under two minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from causalwan.vae import StreamingDecoder, random_vae


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Meter:
    """Memory now and peak-since-start, in MiB: CUDA allocator on CUDA, process RSS on CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            self.base = _rss_mb()

    def now(self) -> float:
        """Memory in use above the baseline."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated() / 2**20 - self.base
        return _rss_mb() - self.base

    def peak(self) -> float:
        """Peak memory above the baseline."""
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20 - self.base
        return _peak_rss_mb() - self.base


def measure(a) -> dict:
    """Run one measurement (`a.measure`) in this process and return its figures."""
    torch.set_num_threads(a.threads) if a.threads else None
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    vae = random_vae(base_dim=a.base_dim).to(a.device, dtype)
    h, w = a.height // 8, a.width // 8
    gen = torch.Generator().manual_seed(0)
    chunks = [torch.randn(1, 16, a.chunk_frames, h, w, generator=gen).to(a.device) for _ in range(a.chunks)]
    tiles = dict(tile_size=a.tile_size, tile_overlap=a.tile_overlap) if a.measure == "tiled" else {}
    if a.measure in ("tiled", "untiled"):
        chunks = chunks[:1]
    warm = StreamingDecoder(vae, **tiles)                      # warm-up (allocator, kernels) before the baseline
    warm.decode(chunks[0][:, :, :1])
    warm.close()
    meter = Meter(a.device)
    if a.measure == "whole":
        t0 = time.perf_counter()
        frames = StreamingDecoder(vae).decode(torch.cat(chunks, dim=2)).shape[0]
        total = time.perf_counter() - t0
        return {"peak_mb": round(meter.peak(), 1), "total_s": round(total, 3), "pixel_frames": frames,
                "ms_per_chunk": round(1000 * total / a.chunks, 1)}
    dec, rows = StreamingDecoder(vae, **tiles), []
    for k, chunk in enumerate(chunks):
        t0 = time.perf_counter()
        frames = dec.decode(chunk).shape[0]
        rows.append({"chunk": k, "ms": round(1000 * (time.perf_counter() - t0), 1), "frames": frames,
                     "mem_mb": round(meter.now(), 1), "cache_mb": round(dec.cache_nbytes() / 2**20, 3)})
    out = {"peak_mb": round(meter.peak(), 1), "ms_per_chunk_median": sorted(r["ms"] for r in rows)[len(rows) // 2]}
    if a.measure == "stream":
        out.update(first_chunk=rows[0], second_chunk=rows[1], last_chunk=rows[-1],
                   mem_growth_mb_second_to_last=round(rows[-1]["mem_mb"] - rows[1]["mem_mb"], 1),
                   cache_growth_mb_first_to_last=round(rows[-1]["cache_mb"] - rows[0]["cache_mb"], 3),
                   pixel_frames=sum(r["frames"] for r in rows))
    else:
        out.update(ms=rows[0]["ms"], tiles=len(dec._caches))
    return out


def main(argv=None) -> dict:
    """Parse args; with --measure run one measurement, else run all four in subprocesses and print JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-dim", type=int, default=8)
    ap.add_argument("--height", type=int, default=64, help="pixel height (multiple of 8)")
    ap.add_argument("--width", type=int, default=64, help="pixel width (multiple of 8)")
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--chunk-frames", type=int, default=3, help="latent frames per chunk")
    ap.add_argument("--tile-size", type=int, default=None, help="latent pixels (default: half the latent)")
    ap.add_argument("--tile-overlap", type=int, default=None, help="latent pixels (default: tile_size // 4)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="default: bf16 on CUDA, else fp32")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch default)")
    ap.add_argument("--measure", choices=["stream", "whole", "tiled", "untiled"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    a.tile_size = a.tile_size or max(2, min(a.height, a.width) // 16)
    a.tile_overlap = max(1, a.tile_size // 4) if a.tile_overlap is None else a.tile_overlap
    if a.measure:
        print(json.dumps(measure(a)))
        return {}
    args = list(argv if argv is not None else sys.argv[1:])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")   # freed tensors leave RSS at once
    results = {}
    for mode in ("stream", "whole", "untiled", "tiled"):
        cmd = [sys.executable, __file__, *args, "--measure", mode]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"measurement {mode} failed:\n{proc.stderr}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    s, wh, ut, t = results["stream"], results["whole"], results["untiled"], results["tiled"]
    out = {
        "bench": "vae_stream", "device": a.device, "dtype": a.dtype, "base_dim": a.base_dim,
        "height": a.height, "width": a.width, "chunks": a.chunks, "chunk_frames": a.chunk_frames,
        "memory": "CUDA max_memory_allocated" if a.device.startswith("cuda") else "process RSS (ru_maxrss)",
        "tile_size": a.tile_size, "tile_overlap": a.tile_overlap, **results,
        "stream_peak_over_whole_peak": round(s["peak_mb"] / max(wh["peak_mb"], 1e-6), 3),
        "tiled_peak_over_untiled_peak": round(t["peak_mb"] / max(ut["peak_mb"], 1e-6), 3),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
