"""The README's main job on the bundled tiny world (python -m causalwan.cli, no arguments): time per chunk on this
machine and the share of it spent decoding. Prints JSON.

With --accuracy it also reports the direction accuracy of the causal student (8 steps, through the Stream) and of
the bidirectional teacher it was distilled from (Euler ODE over a whole clip, --teacher-steps) over 4 colours x 4
directions x 2 seeds, tracked by colour centroid over 1 + 12 * --accuracy-chunks frames (the teacher with the
classifier-free guidance its scores were distilled with).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from causalwan import cli
from causalwan.cli_checks import TINY_WORLD
from causalwan.tinyworld.evaluate import direction_accuracy, load_models, student_video, teacher_video


def demo_timing(chunks: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = cli.main(["--chunks", str(chunks), "--out", str(Path(tmp) / "demo.mp4")])
        wall = time.perf_counter() - t0
    rows = s["per_chunk"][1:] or s["per_chunk"]  # the first chunk warms the allocator up
    den = statistics.median(r["denoise_s"] for r in rows)
    dec = statistics.median(r["decode_s"] for r in rows)
    return {"chunks": chunks, "frames": s["frames"], "size": s["size"], "wall_s": round(wall, 2),
            "chunk_s_median": round(den + dec, 3), "denoise_s_median": round(den, 3),
            "decode_s_median": round(dec, 3), "decode_share": round(dec / (den + dec), 3),
            "video_s_per_chunk": round(rows[0]["frames"] / 16, 3)}


def accuracies(teacher_steps: int, chunks: int) -> dict:
    from causalwan.tinyworld.student import GUIDANCE

    m = load_models(TINY_WORLD, teacher=True)
    t0 = time.perf_counter()
    student, rows_s = direction_accuracy(lambda p, img, seed: student_video(m, p, img, seed, chunks=chunks))
    t1 = time.perf_counter()
    teacher, rows_t = direction_accuracy(lambda p, img, seed: teacher_video(
        m, p, img, seed, latent_frames=1 + 3 * chunks, steps=teacher_steps, guidance=GUIDANCE))
    t2 = time.perf_counter()
    return {"student_direction_accuracy": round(student, 3), "teacher_direction_accuracy": round(teacher, 3),
            "student_steps": 8, "teacher_steps": teacher_steps, "teacher_guidance": GUIDANCE,
            "frames_tracked": 1 + 12 * chunks, "videos": len(rows_s),
            "student_misses": [r for r in rows_s if r[1] != r[3]], "teacher_misses": [r for r in rows_t if r[1] != r[3]],
            "student_s": round(t1 - t0, 1), "teacher_s": round(t2 - t1, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunks", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--accuracy", action="store_true", help="also teacher vs student direction accuracy")
    ap.add_argument("--teacher-steps", type=int, default=40)
    ap.add_argument("--accuracy-chunks", type=int, default=2, help="chunks per video of the direction accuracy")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"model": str(TINY_WORLD), "device": "cpu", "threads": a.threads, "torch": torch.__version__,
           "demo": demo_timing(a.chunks)}
    if a.accuracy:
        out["accuracy"] = accuracies(a.teacher_steps, a.accuracy_chunks)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
