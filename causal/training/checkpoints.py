"""Resumable training state, written atomically (temporary name + rename) so a crash never leaves half a checkpoint.

    <dir>/step-000120/weights.safetensors   generator, critic and EMA weights (prefixes gen., critic., ema.)
    <dir>/step-000120/optim.pt              optimizer states (loaded with torch.load(weights_only=True))
    <dir>/step-000120/state.json            step, generator updates, loss history, config
    <dir>/step-000120/rng.safetensors       torch RNG state
    <dir>/latest                            name of the newest complete checkpoint (replaced atomically)
Older checkpoints are removed once a newer one is complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_file(path: Path, write) -> None:
    """write(tmp_path) then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_folder(path: Path, write) -> None:
    """write(tmp_folder) then rename it to `path` (which must not exist)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _contiguous(d: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in d.items()}


def save(folder, step: int, weights: dict, optim: dict, state: dict) -> Path:
    """Write checkpoint `step` under `folder` and point `latest` at it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"

    def write(tmp: Path):
        save_file(_contiguous(weights), str(tmp / "weights.safetensors"))
        torch.save(optim, str(tmp / "optim.pt"))
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))

    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    atomic_folder(target, write)
    atomic_file(folder / "latest", lambda p: p.write_text(name))
    for old in folder.glob("step-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old)
    return target


def latest(folder) -> Path | None:
    """The newest complete checkpoint under `folder`, or None."""
    pointer = Path(folder) / "latest"
    if not pointer.is_file():
        return None
    target = Path(folder) / pointer.read_text().strip()
    return target if (target / "state.json").is_file() else None


def load(target) -> tuple[dict, dict, dict]:
    """(weights, optimizer states, state) of a checkpoint folder; restores the torch RNG state."""
    target = Path(target)
    weights = load_file(str(target / "weights.safetensors"))
    optim = torch.load(str(target / "optim.pt"), weights_only=True)
    state = json.loads((target / "state.json").read_text())
    torch.set_rng_state(load_file(str(target / "rng.safetensors"))["cpu"])
    return weights, optim, state
