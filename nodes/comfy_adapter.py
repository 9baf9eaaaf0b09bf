"""The one place that talks to ComfyUI: model folders, progress, events, interrupts and GPU memory.

Every function works without ComfyUI too (plain pytest, the CLI): folders then come from `set_model_folders`
or from `$CAUSALWAN_MODELS_DIR` / `./models`, progress and events go to registered listeners only, an
interrupt is requested with `request_interrupt()`, and memory calls fall back to plain torch.
ComfyUI modules are looked up at call time among the modules already imported: ComfyUI imports folder_paths,
comfy.* and server before it loads any custom node, and outside ComfyUI nothing of the kind is imported by
accident (a stray server.py in the working directory, a GPU probe in comfy.model_management).
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger("causalwan")

MODEL_EXTENSIONS = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")
FOLDER_KINDS = ("diffusion_models", "vae", "text_encoders", "loras")
STREAM_EVENT = "causalwan.stream"
_DIFFUSERS_MARKERS = ("model_index.json", "transformer/config.json")
# The pack's own models folder: the tiny world (assets/tinyworld/) is offered as a diffusers folder "tinyworld/"
BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "assets"
_FOLDER_SEARCH_DEPTH = 2

_folders: dict[str, list[str]] | None = None
_progress_listeners: list[Callable] = []
_event_listeners: list[Callable] = []
_interrupt = threading.Event()


class Interrupted(Exception):
    """Raised by throw_if_interrupted() outside ComfyUI (inside ComfyUI its own exception is raised)."""


def comfy(name: str):
    """The ComfyUI module `name` ("folder_paths", "comfy.model_management", ...) or None outside ComfyUI."""
    return sys.modules.get(name)


def keeps_old_outputs() -> bool:
    """True when ComfyUI's cache may serve a node's earlier outputs again (--cache-lru, --cache-ram), so an
    output must stay usable after its node has run again."""
    cli = comfy("comfy.cli_args")
    args = getattr(cli, "args", None)
    return bool(args is not None and (getattr(args, "cache_lru", 0) or getattr(args, "cache_ram", 0)))


# ------------------------------------------------------------------------------------------- model folders
def set_model_folders(folders: dict[str, list[str] | str] | None) -> None:
    """Use these folders per kind instead of ComfyUI's (tests, CLI). None: back to ComfyUI / the default."""
    global _folders
    _folders = None if folders is None else {k: [str(p) for p in ([v] if isinstance(v, (str, Path)) else v)]
                                             for k, v in folders.items()}


def set_models_dir(root) -> None:
    """Use `root/<kind>` for every kind (a ComfyUI-like `models` folder)."""
    set_model_folders({k: [str(Path(root) / k)] for k in FOLDER_KINDS})


def folder_paths(kind: str) -> list[str]:
    """The folders searched for `kind`; diffusion_models also searches the pack's bundled models (the tiny world)
    unless set_model_folders chose the folders."""
    if _folders is not None:
        return list(_folders.get(kind, []))
    bundled = [str(BUNDLED_MODELS)] if kind == "diffusion_models" else []
    fp = comfy("folder_paths")
    if fp is not None:
        try:
            return list(fp.get_folder_paths(kind)) + bundled
        except Exception:
            return bundled
    root = Path(os.environ.get("CAUSALWAN_MODELS_DIR", "models"))
    return [str(root / kind)] + bundled


def _walk_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if f.lower().endswith(MODEL_EXTENSIONS):
                out.append(Path(dirpath, f).relative_to(root).as_posix())
    return out


def diffusers_folders(kind: str = "diffusion_models", containing: str | None = None) -> list[str]:
    """Diffusers pipeline (or transformer) folders under the `kind` folders, as names ending in "/"; with
    `containing`, only those that hold that subfolder (e.g. "vae")."""
    names = set()
    for root in map(Path, folder_paths(kind)):
        if not root.is_dir():
            continue
        level = [root]
        for _ in range(_FOLDER_SEARCH_DEPTH):
            nxt = []
            for d in level:
                for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    if any((sub / m).is_file() for m in _DIFFUSERS_MARKERS):
                        if containing is None or (sub / containing).is_dir():
                            names.add(sub.relative_to(root).as_posix() + "/")
                    else:
                        nxt.append(sub)
            level = nxt
    return sorted(names)


def model_files(kind: str) -> list[str]:
    """Weight files of `kind` (relative names, "/"-separated), without those inside diffusers folders."""
    if _folders is None and comfy("folder_paths") is not None:
        try:
            files = list(comfy("folder_paths").get_filename_list(kind))
        except Exception:
            files = []
    else:
        files = [f for root in folder_paths(kind) if Path(root).is_dir() for f in _walk_files(Path(root))]
    inside = tuple(diffusers_folders(kind))
    return sorted({f for f in files if not f.replace("\\", "/").startswith(inside)})


def offer_tiny_world_image(name: str = "causalwan_tinyworld.png") -> Path | None:
    """Inside ComfyUI: put the tiny world's start image (assets/start.png) in the input folder under `name`, once,
    so the tiny world workflow's LoadImage finds it; a file already there is left alone."""
    fp = comfy("folder_paths")
    if fp is None:
        return None
    try:
        target = Path(fp.get_input_directory()) / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((BUNDLED_MODELS / "start.png").read_bytes())
        return target
    except OSError as e:  # a read-only input folder: the workflow's note says where the image is
        log.warning("CausalWan: could not copy the tiny world start image to the input folder: %s", e)
        return None


def get_full_path(kind: str, name: str) -> str:
    """Absolute path of a file or folder name from the lists above; a readable FileNotFoundError if absent."""
    if name.endswith("/"):
        for root in folder_paths(kind):
            p = Path(root) / name.rstrip("/")
            if p.is_dir():
                return str(p)
    else:
        fp = comfy("folder_paths")
        if _folders is None and fp is not None:
            path = fp.get_full_path(kind, name)
            if path:
                return path
        for root in folder_paths(kind):
            p = Path(root) / name
            if p.is_file():
                return str(p)
    searched = ", ".join(folder_paths(kind)) or "(no folders configured)"
    raise FileNotFoundError(f"'{name}' was not found in the {kind} folders ({searched}); "
                            f"put it there or refresh the node's file list")


# ------------------------------------------------------------------------------------------- progress, events
def add_progress_listener(fn: Callable) -> None:
    """fn(value, total, preview_image_or_None, node_id) on every progress report."""
    _progress_listeners.append(fn)


def add_event_listener(fn: Callable) -> None:
    """fn(event_name, data) on every custom event sent to the browser."""
    _event_listeners.append(fn)


def clear_listeners() -> None:
    _progress_listeners.clear()
    _event_listeners.clear()


def progress(value: int, total: int, preview=None, node_id=None) -> None:
    """Progress of the running node to ComfyUI's bar and to listeners. The sampler's frames go to the pack's
    own stream player (nodes/preview.py), so no `preview` image is given to ComfyUI's bar (it would draw a
    second picture of the same chunk on the node)."""
    utils = comfy("comfy.utils")
    if utils is not None and hasattr(utils, "ProgressBar"):
        bar = utils.ProgressBar(total, node_id=node_id)
        bar.update_absolute(value, total, ("JPEG", preview, 512) if preview is not None else None)
    for fn in list(_progress_listeners):
        fn(value, total, preview, node_id)


def _server():
    server = comfy("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def has_event_listeners() -> bool:
    """Whether anything receives send_event(): a ComfyUI server (its browsers) or a registered listener."""
    return _server() is not None or bool(_event_listeners)


def send_event(data: dict, event: str = STREAM_EVENT) -> None:
    """A custom websocket event for the frontend (web/stream_events.js listens to "causalwan.stream")."""
    instance = _server()
    if instance is not None:  # to the client that queued the prompt, as ComfyUI's own progress messages go
        instance.send_sync(event, data, getattr(instance, "client_id", None))
    for fn in list(_event_listeners):
        fn(event, data)


# ------------------------------------------------------------------------------------------- interrupts
def request_interrupt() -> None:
    """Ask the running node to stop at its next check (what ComfyUI's Cancel button does inside ComfyUI)."""
    _interrupt.set()
    mm = comfy("comfy.model_management")
    if mm is not None and hasattr(mm, "interrupt_current_processing"):
        mm.interrupt_current_processing(True)


def throw_if_interrupted() -> None:
    """Raise if a stop was requested; the request is consumed, so the next run goes ahead."""
    mm = comfy("comfy.model_management")
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()
    if _interrupt.is_set():
        _interrupt.clear()
        raise Interrupted("generation was interrupted")


def is_interrupt(error: BaseException) -> bool:
    """Whether `error` is a Cancel (ComfyUI's interrupt, or ours outside ComfyUI) rather than a failure."""
    mm = comfy("comfy.model_management")
    kind = getattr(mm, "InterruptProcessingException", None)
    return isinstance(error, Interrupted) or (isinstance(kind, type) and isinstance(error, kind))


def interrupt_requested() -> bool:
    """True when a stop was requested (Cancel), without consuming the request: a loop can end cleanly (e.g. after
    a checkpoint) and then call throw_if_interrupted()."""
    mm = comfy("comfy.model_management")
    if mm is not None and hasattr(mm, "processing_interrupted") and mm.processing_interrupted():
        return True
    return _interrupt.is_set()


def output_directory() -> Path:
    """ComfyUI's output folder (./output outside ComfyUI)."""
    fp = comfy("folder_paths")
    if fp is not None and hasattr(fp, "get_output_directory"):
        return Path(fp.get_output_directory())
    return Path(os.environ.get("CAUSALWAN_OUTPUT_DIR", "output"))


# ------------------------------------------------------------------------------------------- devices, memory
def torch_device() -> torch.device:
    """The compute device: ComfyUI's choice inside ComfyUI, else CUDA when present, else CPU."""
    mm = comfy("comfy.model_management")
    if mm is not None and hasattr(mm, "get_torch_device"):
        return torch.device(mm.get_torch_device())
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_room(nbytes: int, device=None, unload_all: bool = False) -> None:
    """Ask ComfyUI to evict its models (text encoder, VAE, ...) so that `nbytes` fit on `device`.

    unload_all: evict everything ComfyUI manages (before loading a 14B expert).
    """
    device = torch.device(device) if device is not None else torch_device()
    mm = comfy("comfy.model_management")
    if mm is not None:
        if unload_all and hasattr(mm, "unload_all_models"):
            mm.unload_all_models()
        elif hasattr(mm, "free_memory") and device.type != "cpu":
            mm.free_memory(int(nbytes), device)
    if unload_all:
        gc.collect()  # drop what the unloaded models left behind before a big load
    soft_empty_cache()


def soft_empty_cache() -> None:
    """Return cached, unused GPU memory to the driver."""
    mm = comfy("comfy.model_management")
    if mm is not None and hasattr(mm, "soft_empty_cache"):
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
