"""One command builds the tiny world's release folder from nothing, stage by stage, resumable:

    python -m causalwan.tinyworld.build --out assets/tinyworld --work out/tinyworld_build

Stages (each writes its result under --work and is skipped when that result exists; an interrupted stage
resumes from its last checkpoint): vae, text, latents, teacher, causal, student, release. Seeds are fixed, so a rerun
on the same machine and torch version gives the same files (BUILD.md in the release records their sha256).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

SEED = 20261130
CAUSAL_LR = 1e-3


class Log:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def resume(model, ckpt: Path, log, name: str) -> dict:
    """Load a stage's checkpoint into `model` if there is one; the training state (step, optimiser) to go on from."""
    if not ckpt.is_file():
        return {}
    saved = torch.load(ckpt, weights_only=True)
    model.load_state_dict(saved["model"])
    log(f"{name}: resuming at step {saved['step']}")
    return {"step": saved["step"], "opt": saved["opt"]}


def saver(ckpt: Path):
    return lambda model, st: torch.save({"model": model.state_dict(), "step": st["step"], "opt": st["opt"]}, ckpt)


def stage_vae(work: Path, log, steps: int, init: str | None):
    """From scratch, or (init: a VAE file) fine-tuned from given weights at a lower learning rate."""
    from safetensors.torch import load_file, save_file

    from . import train_vae

    final = work / "vae.safetensors"
    if final.is_file():
        return
    vae = train_vae.new_vae(SEED)
    if init:
        vae.load_state_dict(load_file(init))
        log(f"vae: fine-tuning {init}")
        train_vae.train(vae, {}, steps, log, SEED + 11, lr=1e-3)
    else:
        state = resume(vae, work / "vae_ckpt.pt", log, "vae")
        train_vae.train(vae, state, steps, log, SEED, save=saver(work / "vae_ckpt.pt"))
    train_vae.fold_latent_scale(vae, np.random.default_rng(SEED + 1))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(final))
    log(f"vae: done -> {final}")


def load_vae_file(work: Path):
    from ..vae.weights import load_vae

    return load_vae(work / "vae.safetensors")


def stage_text(work: Path, log):
    from .text import build_text_encoder

    if (work / "text" / "text_encoder").is_dir():
        return
    build_text_encoder(work / "text", SEED + 2)
    log("text: tiny umT5 + SentencePiece written")


def caption_embeddings(work: Path) -> dict:
    from .text import encode_captions

    return encode_captions(work / "text")


def stage_latents(work: Path, log, clips: int):
    from .latents import make_dataset

    final = work / "latents.pt"
    if final.is_file():
        return
    data = make_dataset(load_vae_file(work), clips, SEED + 3, log)
    torch.save(data, final)
    log(f"latents: {len(data['captions'])} clips -> {final}")


def stage_teacher(work: Path, log, steps: int):
    from safetensors.torch import save_file

    from . import train_teacher

    final = work / "teacher.safetensors"
    if final.is_file():
        return
    data = torch.load(work / "latents.pt", weights_only=True)
    embeds = caption_embeddings(work)
    model = train_teacher.new_teacher(SEED + 4)
    state = resume(model, work / "teacher_ckpt.pt", log, "teacher")
    train_teacher.train(model, data, embeds, state, steps, log, SEED + 5, save=saver(work / "teacher_ckpt.pt"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(final))
    log(f"teacher: done -> {final}")


def load_teacher(work: Path):
    from safetensors.torch import load_file

    from .train_teacher import new_teacher

    model = new_teacher(SEED + 4)
    model.load_state_dict(load_file(str(work / "teacher.safetensors")))
    return model.eval().requires_grad_(False)


def causal_file(work: Path, steps: int) -> Path:
    return work / f"causal_{steps}.safetensors"  # named by its step count: another --causal-steps is another file


def stage_causal(work: Path, log, steps: int):
    """The high-noise expert: the teacher fine-tuned by teacher forcing under the block-causal mask."""
    from safetensors.torch import save_file

    from . import train_teacher

    final = causal_file(work, steps)
    if final.is_file() or steps == 0:
        return
    data = torch.load(work / "latents.pt", weights_only=True)
    model = load_teacher(work).requires_grad_(True)
    ckpt = work / f"causal_{steps}_ckpt.pt"  # (its cosine schedule is for this step count only)
    state = resume(model, ckpt, log, "causal")
    train_teacher.train(model, data, caption_embeddings(work), state, steps, log, SEED + 7, lr=CAUSAL_LR,
                        save=saver(ckpt), causal=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(final))
    log(f"causal: done -> {final}")


def stage_student(work: Path, log, init_steps: int, dmd_steps: int):
    """The DMD-trained pair (student_high/low); the release takes its low-noise expert."""
    from safetensors.torch import save_file

    from .student import train_student

    if (work / "student_low.safetensors").is_file():
        return
    if init_steps == 0 and dmd_steps == 0:  # no distillation: both experts are the teacher, run causally
        weights = {k: v.contiguous() for k, v in load_teacher(work).state_dict().items()}
        for name in ("high", "low"):
            save_file(weights, str(work / f"student_{name}.safetensors"))
        log("student: no distillation asked (--init-steps 0 --dmd-steps 0): both experts are the teacher")
        return
    data = torch.load(work / "latents.pt", weights_only=True)
    def keep_init(weights):  # the causal-init student, kept for comparison with the DMD result
        for name, sd in weights.items():
            save_file({k: v.contiguous() for k, v in sd.items()}, str(work / f"student_init_{name}.safetensors"))

    pair = train_student(load_teacher(work), data, caption_embeddings(work), work / "student_ckpt", log, SEED + 6,
                         init_steps, dmd_steps, keep_init)
    for name, model in pair.modules().items():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(work / f"student_{name}.safetensors"))
    log("student: done")


def stage_release(work: Path, out: Path, log, command: str, causal_steps: int, vae_init: str | None = None):
    from safetensors.torch import load_file

    from .release import sha256_table, write_release
    from .train_teacher import SHIFT

    teacher = load_teacher(work)
    experts = {}
    for name in ("high", "low"):
        experts[name] = load_teacher(work)
        experts[name].load_state_dict(load_file(str(work / f"student_{name}.safetensors")))
    if causal_steps:  # the high-noise expert, which takes the direction from the words at pure noise
        experts["high"].load_state_dict(load_file(str(causal_file(work, causal_steps))))
        log(f"release: the high-noise expert is the causal fine-tune ({causal_steps} steps)")
    write_release(out, experts["high"], experts["low"], teacher, load_vae_file(work), work / "text", SHIFT)
    rows = sha256_table(out)
    lines = ["# The tiny world release", "", "Made by one command (CPU, deterministic seeds, resumable stages):", "",
             f"    {command}", "", f"torch {torch.__version__}. Build log: {work / 'build.log'} (not shipped).", ""]
    if vae_init:
        lines += [f"The VAE stage fine-tuned `{vae_init}` (`--vae-init`), a VAE from earlier runs of this recipe "
                  "whose settings changed between and during them: that file is an input of this build, not "
                  "reproduced by it (not shipped). Every later stage runs from the VAE stage as recorded here.", ""]
    lines += ["| file | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| {name} | {size} | `{digest}` |" for name, digest, size in rows]
    (out / "BUILD.md").write_text("\n".join(lines) + "\n")
    log(f"release: {len(rows)} files, {sum(r[2] for r in rows) / 1e6:.1f} MB -> {out}")


STAGES = ["vae", "text", "latents", "teacher", "causal", "student", "release"]


def command(a) -> str:
    """The one command that rebuilds this release from nothing (every stage, these settings)."""
    init = f"--vae-init {a.vae_init} " if a.vae_init else ""
    return (f"python -m causalwan.tinyworld.build --out {a.out} --work {a.work} {init}--vae-steps {a.vae_steps} "
            f"--clips {a.clips} --teacher-steps {a.teacher_steps} --causal-steps {a.causal_steps} "
            f"--init-steps {a.init_steps} "
            f"--dmd-steps {a.dmd_steps}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m causalwan.tinyworld.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/tinyworld", help="release folder to write")
    ap.add_argument("--work", default="out/tinyworld_build", help="checkpoints and intermediate results")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-steps", type=int, default=1000)
    ap.add_argument("--vae-init", default=None, help="start the VAE from these weights (a .safetensors file)")
    ap.add_argument("--clips", type=int, default=480)
    ap.add_argument("--teacher-steps", type=int, default=2500)
    ap.add_argument("--causal-steps", type=int, default=1600, help="teacher-forcing fine-tune (0: none)")
    ap.add_argument("--init-steps", type=int, default=60, help="ODE-regression steps (causal init)")
    ap.add_argument("--dmd-steps", type=int, default=40)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    log = Log(work / "build.log")
    for stage in a.stages.split(","):
        t = time.time()
        log(f"stage {stage}: start")
        if stage == "vae":
            stage_vae(work, log, a.vae_steps, a.vae_init)
        elif stage == "text":
            stage_text(work, log)
        elif stage == "latents":
            stage_latents(work, log, a.clips)
        elif stage == "teacher":
            stage_teacher(work, log, a.teacher_steps)
        elif stage == "causal":
            stage_causal(work, log, a.causal_steps)
        elif stage == "student":
            stage_student(work, log, a.init_steps, a.dmd_steps)
        elif stage == "release":
            stage_release(work, Path(a.out), log, command(a), a.causal_steps, a.vae_init)
        else:
            raise SystemExit(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        log(f"stage {stage}: {time.time() - t:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
