"""Resumable training state, written atomically (temporary name + rename) so a crash never leaves half a checkpoint.

    <dir>/step-000120/weights.safetensors   generator, critic and EMA weights (prefixes gen., critic., ema.)
    <dir>/step-000120/optim.pt              optimizer states (loaded with torch.load(weights_only=True))
    <dir>/step-000120/state.json            step, generator updates, loss history, config
    <dir>/step-000120/rng.safetensors       torch RNG state
    <dir>/latest                            name of the newest complete checkpoint (replaced atomically)
Older checkpoints are removed once `latest` names a newer complete one (a re-saved step gets its own folder,
step-000120.1, so no crash can leave `latest` naming a missing or half-written folder). save_trainer / resume map a DMDTrainer onto this.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import sharding


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (so a rename never publishes unwritten data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder
        pass
    finally:
        os.close(fd)


def atomic_file(path: Path, write) -> None:
    """write(tmp_path), flush it to disk, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_folder(path: Path, write) -> None:
    """write(tmp_folder), flush it to disk, then rename it to `path` (which must not exist)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            _fsync(f)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _contiguous(d: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in d.items()}


def save(folder, step: int, weights: dict, optim: dict, state: dict) -> Path:
    """Write checkpoint `step` under `folder` and point `latest` at it. Crash-safe at every point: the new
    checkpoint goes into a folder of its own (step-000120, or step-000120.1 when that step was saved before), only
    then does `latest` move to it (an atomic rename), and only then are the others removed; `latest` always names a
    complete checkpoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name, n = f"step-{step:06d}", 0
    while (folder / name).exists():
        n += 1
        name = f"step-{step:06d}.{n}"

    def write(tmp: Path):
        save_file(_contiguous(weights), str(tmp / "weights.safetensors"))
        torch.save(optim, str(tmp / "optim.pt"))
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))

    target = folder / name
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


def latest_step(folder) -> int | None:
    target = latest(folder)
    return None if target is None else int(target.name.split("-")[1].split(".")[0])


# ----------------------------------------------------------------------------------------------- a trainer's state
def _pairs(trainer):
    return (("gen", trainer.generator), ("critic", trainer.critic))


def trainer_weights(trainer) -> dict[str, torch.Tensor]:
    """Whole generator, critic and EMA weights of a DMDTrainer (gathered: every process must call it)."""
    weights = {}
    for prefix, pair in _pairs(trainer):
        for n, m in pair.modules().items():
            weights.update({f"{prefix}.{n}.{k}": v for k, v in sharding.full_state(m).items()})
    weights.update({f"ema.{k}": v for k, v in trainer.ema.state_dict().items()})
    return weights


def save_trainer(trainer) -> Path | None:
    """Checkpoint a DMDTrainer: every process gathers (sharded models), the main process writes."""
    weights = trainer_weights(trainer)
    optim = {"generator": sharding.optimizer_state(trainer.gen_opt),
             "critic": sharding.optimizer_state(trainer.critic_opt)}
    path = None
    if trainer.acc.is_main_process:
        state = {"step": trainer.step, "gen_updates": trainer.gen_updates, "history": trainer.history,
                 "init_steps_done": trainer.init_steps_done, "config": trainer.config.to_dict()}
        path = save(trainer.checkpoint_dir, trainer.step, weights, optim, state)
    trainer.acc.wait_for_everyone()
    trainer.saved_step = trainer.step  # kept in memory: no process reads the disk to know it
    return path


class _Slot:
    """Where a tensor sits in a structure sent to the other processes: its shape and dtype."""

    def __init__(self, t: torch.Tensor):
        self.shape, self.dtype = tuple(t.shape), t.dtype


def from_main(acc, tree):
    """The main process's `tree` (dicts / lists / tuples of tensors and plain values) on every process: the layout
    once (accelerate's broadcast_object_list), then tensor by tensor (accelerate's broadcast), so the main process's
    disk is the only one read: no shared filesystem is needed and every process decides alike."""
    if acc.num_processes == 1:
        return tree
    from accelerate.utils import broadcast, broadcast_object_list
    sent = []

    def strip(x):
        if torch.is_tensor(x):
            sent.append(x)
            return _Slot(x)
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(strip(v) for v in x)
        return x

    layout = broadcast_object_list([strip(tree) if acc.is_main_process else None])[0]
    queue = iter(sent)

    def fill(x):
        if isinstance(x, _Slot):
            t = next(queue) if acc.is_main_process else torch.empty(x.shape, dtype=x.dtype)
            return broadcast(t.to(acc.device), from_process=0).cpu()
        if isinstance(x, dict):
            return {k: fill(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(fill(v) for v in x)
        return x

    return fill(layout)


def resume(trainer) -> bool:
    """Load the newest checkpoint under the trainer's checkpoint_dir into it, if there is one. The main process
    reads it and hands it to the others (from_main), so every process resumes from the same step."""
    loaded = None
    if trainer.acc.is_main_process:
        target = latest(trainer.checkpoint_dir)
        if target is not None:
            loaded = (str(target), *load(target), torch.get_rng_state())
    loaded = from_main(trainer.acc, loaded)
    if loaded is None:
        return False
    target, weights, optim, state, rng = loaded
    torch.set_rng_state(rng)
    for prefix, pair in _pairs(trainer):
        for n, m in pair.modules().items():
            pre = f"{prefix}.{n}."
            try:
                sharding.load_full_state(m, {k[len(pre):]: v for k, v in weights.items() if k.startswith(pre)})
            except RuntimeError as e:
                raise ValueError(f"checkpoint '{target}' does not belong to these models ({prefix} {n}): "
                                 f"{str(e).splitlines()[0]}; use another checkpoint_dir") from None
    trainer.ema.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("ema.")})
    sharding.load_optimizer_state(trainer.gen_opt, optim["generator"])
    sharding.load_optimizer_state(trainer.critic_opt, optim["critic"])
    trainer.step, trainer.gen_updates, trainer.history = state["step"], state["gen_updates"], state["history"]
    trainer.init_steps_done = state.get("init_steps_done", 0)
    trainer.saved_step = trainer.step
    return True
