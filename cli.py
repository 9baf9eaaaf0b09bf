"""The main job from the command line: animate a start image into a streamed MP4, chunk by chunk.

    python -m causalwan.cli                       # no weights given: the bundled tiny world
    python -m causalwan.cli --folder CausalWan2.2-I2V-A14B-Diffusers --prompt "..." --out out/video.mp4
    python -m causalwan.cli --prompt "a fox walks" --switch 4 "the fox starts to run"   # prompt switch at chunk 4

(installed with pip, the same command is `causalwan-run`). Every input is checked before anything is loaded; a
bad one ends the run with one line `error: ...` and exit code 2. Frames are decoded and appended to
<out>.partial.mp4 as each chunk finishes, which becomes <out> only when the video is complete: a failure or
Ctrl-C leaves an existing <out> as it was.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import contextmanager

from .cli_endings import Stopped, end, fail, starting, stopped_by_signals

with starting():  # Ctrl-C while torch and the engine are imported: one line, like every other ending
    import torch

    from .causal.memory.memory_plan import GIB, MODES, plan_memory, replace_plan
    from .causal.memory.offload import MODES as OFFLOAD_MODES, apply_offload, part_bytes, weight_dtype_of
    from .causal.model.kv_cache import CACHE_DTYPES
    from .causal.sampling.prompts import SWITCH_MODES, PromptChange, PromptSchedule
    from .causal.sampling.defaults import model_defaults
    from .causal.sampling.stream import Stream, StreamOptions
    from .cli_checks import BUNDLED_IMAGE, CheckedArgs, UsageError, check_args
    from .vae.streaming import StreamingDecoder
    from .video_writer import Mp4Writer

DEFAULT_PROMPT = "a red circle moves right"  # what the bundled start image shows, in the tiny world's words


def encode_prompts(encoder, a, c: CheckedArgs, device) -> PromptSchedule:
    """--prompt and the --switch prompts, encoded; the caller drops the encoder afterwards."""
    encode = lambda prompt: encoder.encode([prompt])[0][None].to(device)  # noqa: E731
    changes = [PromptChange(0, encode(a.prompt))]
    changes += [PromptChange(k, encode(p), a.switch_mode) for k, p in c.switches]
    return PromptSchedule(changes)


def real_models(c: CheckedArgs, dtype, offload: str):
    """Experts (on the CPU unless resident: the offload policy moves them), VAE and text encoder, from what the
    checks read of their headers (c.files.experts, c.files.text)."""
    from .causal.weights.loader import load_experts
    from .causal.weights.text_encoder import load_text_encoder
    from .vae.weights import load_vae

    f, device = c.files, c.device
    with loading("the VAE", f.vae):
        vae = load_vae(f.vae, device=device, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    with loading("the experts" if f.high or f.folder else "the model", f.folder or f.low, f.high):
        experts = load_experts(prepared=f.experts, dtype=dtype, device=device if offload == "resident" else "cpu",
                               boundary=c.boundary, shift=c.shift)
    with loading("the text encoder", f.text_encoder):
        encoder = load_text_encoder(prepared=f.text, device=device)
    return experts, vae, encoder


@contextmanager
def loading(what: str, *paths):
    """'loading <what> (<size> GiB) ...' before, '... in <s>s' after (the experts also report every 10%)."""
    size = sum(p.stat().st_size if p.is_file() else sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
               for p in paths if p is not None)
    print(f"loading {what} ({size / GIB:.2f} GiB on disk) ...", flush=True)
    t = time.perf_counter()
    yield
    print(f"loaded {what} in {time.perf_counter() - t:.1f}s", flush=True)


def apply_loras(experts, loras: list) -> str:
    """The checked --lora files and strengths in force on every expert; their summary line."""
    from .causal.weights.lora import activate
    from .causal.weights.lora_keys import read_lora

    return activate(experts, [(read_lora(path), s, s) for path, s in loras])


def memory_plan(c: CheckedArgs, a, dtype):
    """The planner's plan for this run and its line, from the file headers (nothing loaded yet)."""
    cfg, experts = c.files.experts.config, c.files.experts.count
    plan = plan_memory(cfg, c.height, c.width, chunk_frames=a.frames_per_chunk,
                       frames=1 + a.chunks * a.frames_per_chunk, window=a.window or None, sink=a.sink,
                       experts=experts, weight_dtype=dtype, shared_cross=experts == 2,
                       mode=a.offload if a.offload in MODES else "resident", cache_dtype=CACHE_DTYPES[a.kv_cache])
    line = f"memory plan: {plan.describe()}"
    if c.device.startswith("cuda"):
        free = torch.cuda.mem_get_info(torch.device(c.device))[0]
        line += f"; {free / GIB:.1f} GiB free on {c.device}"
    return plan, line


def loaded_plan(plan, experts, policy):
    """The plan an out-of-memory error is explained from once the weights are loaded: the mode really in force
    ("auto" resolved), the weights' own dtype (fp8 files) and their measured sizes."""
    if policy is not None and policy.plan is not None:  # "auto" planned it on the loaded experts
        return policy.plan
    mode = policy.mode if policy is not None else "resident"
    return replace_plan(plan, mode=mode, blocks=getattr(policy, "budget", plan.blocks),
                        weight_dtype=weight_dtype_of(experts), part_bytes=part_bytes(experts))


def shown(prompt: str, width: int = 48) -> str:
    return repr(prompt if len(prompt) <= width else prompt[:width - 3] + "...")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"error: {message}; run with --help to see every option\n")


def parse_args(argv):
    return build_parser().parse_args(argv)


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m causalwan.cli (or causalwan-run)", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("model files (none given: the bundled tiny world, assets/tinyworld)")
    src.add_argument("--folder", help="diffusers folder of the release (transformer/, transformer_2/, vae/, ...) "
                                       "(default: none)")
    src.add_argument("--high", help="high-noise expert file (ComfyUI diffusion_models single file); needs "
                                     "--low (default: none)")
    src.add_argument("--low", help="low-noise expert file; needs --high (default: none)")
    src.add_argument("--model", help="one dense causal checkpoint (Self-Forcing / CausVid 1.3B) (default: none)")
    src.add_argument("--vae", help="Wan2.1 VAE file or diffusers vae/ folder (default: the folder's vae/)")
    src.add_argument("--text-encoder", help="umT5 file or folder (default: the folder's text_encoder/ + tokenizer/)")
    src.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                     help="a LoRA on every expert (strength default 1); repeat to stack LoRAs (default: none)")
    ap.add_argument("--image", default=str(BUNDLED_IMAGE), help="start image, PNG or JPEG (default: the bundled "
                                                                "assets/start.png)")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"text from chunk 0 on (default: '{DEFAULT_PROMPT}')")
    ap.add_argument("--switch", nargs=2, action="append", default=[], metavar=("CHUNK", "PROMPT"),
                    help="from chunk CHUNK (counted from 0, as the progress lines count) on, use PROMPT; repeat for "
                         "more switches (default: none)")
    ap.add_argument("--switch-mode", default="recache", choices=SWITCH_MODES,
                    help="cut: new text only; recache: re-run the cached frames under it; blend: over 2 chunks "
                         "(default: %(default)s)")
    ap.add_argument("--chunks", type=int, default=7, help="chunks after the start frame, each --frames-per-chunk "
                                                          "latent frames = 4x video frames (default: %(default)s)")
    ap.add_argument("--frames-per-chunk", type=int, default=None, help="latent frames per chunk (default: the "
                                                                       "model's: 3, 1 for frame-wise Causal Forcing)")
    ap.add_argument("--width", type=int, default=None, help="pixels, multiple of 16 (default 832; tiny world 128)")
    ap.add_argument("--height", type=int, default=None, help="pixels, multiple of 16 (default 480; tiny world 128)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed, 0 to 2^64-1 (default: %(default)s)")
    ap.add_argument("--steps", default=None, help="timesteps, e.g. '1000,750,500,250' (default: the model's own: 8 "
                                                  "for CausalWan2.2-I2V-A14B and the tiny world, 4 for a dense model)")
    ap.add_argument("--shift", type=float, default=None, help="scheduler shift, positive (default: the "
                                                              "checkpoint's, else 5)")
    ap.add_argument("--boundary", type=float, default=None, help="expert boundary timestep in (0, 1000) "
                                                                 "(default: the checkpoint's, else 875)")
    ap.add_argument("--window", type=int, default=None, help="attention window in latent frames, 0: none "
                                                             "(default: the model's: 12 for LongLive, 9 for Reward "
                                                             "Forcing, else none; e.g. 12 for long streams)")
    ap.add_argument("--sink", type=int, default=None, help="sink frames kept in the window, smaller than --window "
                                                           "(default: the model's: 3 with LongLive's window, else 0)")
    ap.add_argument("--offload", default="resident", choices=OFFLOAD_MODES,
                    help="resident: all weights on the GPU; swap: one expert at a time; blocks: a few blocks at a "
                         "time; auto: the least offloading that fits the free memory (default: %(default)s)")
    ap.add_argument("--kv-cache", default="auto", choices=tuple(CACHE_DTYPES),
                    help="attention cache format: auto (the compute dtype) or fp8_e4m3fn (about half the memory) "
                         "(default: %(default)s)")
    ap.add_argument("--fps", type=int, default=16, help="frames per second of the MP4 (default: %(default)s)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu, cuda, cuda:N or mps (default here: %(default)s)")
    ap.add_argument("--out", default="out/causalwan_demo.mp4", help="MP4 file to write (default: %(default)s)")
    return ap


@contextmanager
def engine_log_to_stdout():
    """The engine's info lines (loading progress of large files) printed like the CLI's own, for this run only."""
    log, handler = logging.getLogger("causalwan"), logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def main(argv=None) -> dict:
    with starting():
        a = parse_args(argv)
    with stopped_by_signals(), engine_log_to_stdout():
        try:
            c = check_args(a)
        except UsageError as err:  # bad input: one readable line, no traceback, nothing loaded or written
            fail(str(err), 2)
        except Stopped as s:  # reading the model headers can take a moment
            end(s, a.out, False, {"chunks": 0}, a.chunks, a.device)
        existed, report = c.out.exists(), {"chunks": 0}
        try:
            return run(a, c, report)
        except (Stopped, OSError, MemoryError, ValueError, RuntimeError) as err:  # one line, what was kept
            end(err, c.out, existed, report, a.chunks, c.device)


def run(a, c: CheckedArgs, report: dict) -> dict:
    device = c.device
    for note in c.notes:
        print(f"note: {note}")
    dtype = torch.float32 if c.files.demo or device == "cpu" else torch.bfloat16
    report["plan"], line = memory_plan(c, a, dtype)  # an out-of-memory error is explained from it (main)
    print(line, flush=True)
    if c.files.demo:
        print("No model files given: using the bundled tiny world (assets/tinyworld), a small causal expert pair "
              "trained on 128x128 videos of one coloured circle or square over gray; prompts read \"a "
              "{red|green|blue|yellow} {circle|square} moves {left|right|up|down}\". Pass --folder (or --high/--low, "
              "or --model) for a real model.", flush=True)
    experts, vae, encoder = real_models(c, dtype, a.offload)
    print(f"model: {model_defaults(experts).describe(experts.shift)}", flush=True)
    if c.loras:
        print(apply_loras(experts, c.loras), flush=True)
    schedule = encode_prompts(encoder, a, c, device)
    del encoder  # the text encoder leaves the GPU before the stream needs the memory
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    policy = None
    if a.offload != "resident":  # weights on the CPU, streamed to the device by the policy
        policy = apply_offload(experts, a.offload, device, height=c.height, width=c.width,
                               chunk_frames=a.frames_per_chunk, frames=report["plan"].frames, window=a.window or None,
                               sink=a.sink, cache_dtype=CACHE_DTYPES[a.kv_cache])
    report["plan"] = loaded_plan(report["plan"], experts, policy)
    texts = {0: a.prompt, **dict(c.switches)}
    t0 = time.perf_counter()
    start = vae.encode_images(c.image.to(device))
    opts = StreamOptions(chunk_frames=a.frames_per_chunk, steps=c.steps, shift=c.shift, window=a.window or None,
                         sink=a.sink, cache_dtype=CACHE_DTYPES[a.kv_cache], max_frames=start.shape[2] + a.chunks * a.frames_per_chunk)
    stream = Stream(experts, seed=a.seed, options=opts, device=device)
    stream.set_prompt(schedule.changes[0].context)
    stream.prime(start)
    decoder = StreamingDecoder(vae)
    timings = []
    report["writing"] = True
    with Mp4Writer(c.out, fps=a.fps) as writer:
        writer.write(decoder.decode(start))
        print(f"start frame encoded and primed in {time.perf_counter() - t0:.2f}s; prompt 1 {shown(a.prompt)}",
              flush=True)
        chunks = stream.run(a.chunks, schedule)
        for k in range(a.chunks):
            if k in texts and k:
                number = sorted(texts).index(k) + 1
                print(f"chunk {k}: switching to prompt {number} {shown(texts[k])} ({a.switch_mode})", flush=True)
            t1 = time.perf_counter()
            chunk = next(chunks)
            t2 = time.perf_counter()
            frames = decoder.decode(chunk)
            writer.write(frames)
            t3 = time.perf_counter()
            report["chunks"] = k + 1
            in_force = max(j for j in texts if j <= k)
            timings.append({"chunk": k, "denoise_s": round(t2 - t1, 3), "decode_s": round(t3 - t2, 3),
                            "frames": frames.shape[0], "prompt": sorted(texts).index(in_force) + 1})
            print(f"chunk {k} ({k + 1} of {a.chunks}), prompt {sorted(texts).index(in_force) + 1} "
                  f"{shown(texts[in_force], 32)}: denoise "
                  f"{t2 - t1:.2f}s, decode {t3 - t2:.2f}s, {frames.shape[0]} frames (total {writer.frames})",
                  flush=True)
    summary = {"out": str(c.out), "frames": writer.frames, "size": [c.width, c.height], "demo": c.files.demo,
               "total_s": round(time.perf_counter() - t0, 2), "per_chunk": timings}
    print(json.dumps({k: v for k, v in summary.items() if k != "per_chunk"}))
    return summary


def command(argv=None) -> int:
    """The installed `causalwan-run` (and `python -m causalwan.cli`): exit code 0 once the video is written; the
    errors exit with their own codes (2: bad input, 1: a run that could not finish, 130/143: a signal)."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(command())
