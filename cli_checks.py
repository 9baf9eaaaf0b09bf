"""Every command-line input checked before any weight is loaded or any frame computed.

`check_args(args)` turns argparse's namespace into `CheckedArgs` (paths resolved, the start image read and
fitted, numbers in range) or raises `UsageError`: one line in the command line's own words (its flags), what is
wrong and what to give instead. The number rules are the engine's (causal/sampling/settings.py, the window check,
the step-list parser, vae/image_fit.py), the same ones the nodes use; only the names differ.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .causal.model.config import ROPE_TABLE
from .causal.model.kv_cache import check_window
from .causal.sampling import settings
from .causal.sampling.schedule import parse_steps
from .causal.weights.checkpoint_files import not_weights
from .vae.image_fit import read_image, snap

BUNDLED_IMAGE = Path(__file__).resolve().parent / "assets" / "start.png"  # a frame of the tiny world
TINY_WORLD = Path(__file__).resolve().parent / "assets" / "tinyworld"  # the model used when none is given
MAX_FPS = 240
MAX_FRAMES_PER_CHUNK = 21
DEMO_SIZE, MODEL_SIZE = (128, 128), (832, 480)  # (width, height) when --width/--height are not given


class UsageError(ValueError):
    """A bad command-line input; its text is the whole message after 'error: '."""


@dataclass
class ModelFiles:
    """Where the weights come from; demo: none were given, the bundled tiny world (assets/tinyworld) is used."""

    folder: Path | None = None
    high: Path | None = None
    low: Path | None = None  # the low-noise expert, or a dense model (--model)
    vae: Path | None = None
    text_encoder: Path | None = None
    demo: bool = False
    experts: object = None  # PreparedExperts: what the experts' headers said (config, count), for the loader
    text: object = None  # PreparedTextEncoder: the encoder's headers read and its tokenizer built, for the loader


@dataclass
class CheckedArgs:
    files: ModelFiles
    device: str
    width: int
    height: int
    image: torch.Tensor  # IMAGE [1, height, width, 3], fitted
    out: Path
    steps: tuple | None
    shift: float | None
    boundary: float | None
    switches: list = field(default_factory=list)  # [(chunk, prompt)], chunks counted from 0
    loras: list = field(default_factory=list)  # [(Path, strength)]
    notes: list = field(default_factory=list)  # what was adjusted (sizes snapped)


def check_args(a) -> CheckedArgs:
    try:
        files = check_model_files(a)
        device = check_device(a.device)
        nums = check_numbers(a)
        width, height, notes = check_size(a, files.demo)
        image = read_image(a.image, width, height, "--image")
        out = check_out(a.out, a.image)
        switches = check_switches(a.switch, a.prompt, a.chunks)
        loras = [check_lora(spec) for spec in a.lora]
        read_model_headers(files)  # after the cheap checks, so they answer first
        fill_model_values(a, files)  # the release's values, recognised from the headers as the loader does
        check_chunking(a)
    except UsageError:
        raise
    except ValueError as e:  # an engine rule, already worded with the flag names it was given
        raise UsageError(str(e)) from None
    return CheckedArgs(files, device, width, height, image, out, switches=switches, loras=loras, notes=notes,
                       **nums)


# --------------------------------------------------------------------------------------------- numbers
def fill_model_values(a, files: ModelFiles) -> None:
    """--frames-per-chunk, --window and --sink left out: the values of the release the loader will recognise
    from the model's name and its file's metadata (causal/weights/releases.py: 1 frame per chunk for frame-wise
    Causal Forcing, window 12 + 3 sinks for LongLive, ...; an expert pair and an unknown dense model: 3 frames
    per chunk, no window)."""
    d = files.experts.defaults
    if a.frames_per_chunk is None:
        a.frames_per_chunk = d.chunk_frames
    if a.window is None:
        a.window = d.window or 0
    if a.sink is None:
        a.sink = d.sink


def check_numbers(a) -> dict:
    """The numbers given, each on its own (--frames-per-chunk, --window and --sink together: check_chunking)."""
    settings.check_chunks(a.chunks, "--chunks")
    if a.frames_per_chunk is not None:
        settings.check_int(a.frames_per_chunk, "--frames-per-chunk", 1, MAX_FRAMES_PER_CHUNK,
                           "the released models use 3")
    settings.check_seed(a.seed, "--seed")
    settings.check_int(a.fps, "--fps", 1, MAX_FPS, "16 for the released models")
    if a.window is not None:
        settings.check_int(a.window, "--window", 0, hint="0 for no window, e.g. 12 for a long stream")
    if a.steps is not None and not a.steps.strip():
        raise UsageError("--steps is empty; give timesteps such as --steps 1000,750,500,250, or leave --steps out "
                         "for the model's own list")
    steps = tuple(parse_steps(a.steps, "--steps")) if a.steps is not None else None
    shift = settings.check_shift(a.shift, "--shift") if a.shift is not None else None
    boundary = settings.check_boundary(a.boundary, "--boundary") if a.boundary is not None else None
    return {"steps": steps, "shift": shift, "boundary": boundary}


def check_chunking(a) -> None:
    """--frames-per-chunk, --window and --sink (given or the model's) together, and the frame positions."""
    check_window(a.window or None, a.sink, a.frames_per_chunk, names=("--window", "--sink", "--frames-per-chunk"))
    frames = 1 + a.chunks * a.frames_per_chunk
    if not a.window and frames > ROPE_TABLE:
        raise UsageError(f"--chunks {a.chunks} makes {frames} latent frames, more than the model's {ROPE_TABLE} frame "
                         f"positions without a window; add --window 12 --sink 3 (any length) or lower --chunks")


def check_size(a, demo: bool) -> tuple[int, int, list[str]]:
    dw, dh = DEMO_SIZE if demo else MODEL_SIZE
    width, note_w = snap(dw if a.width is None else a.width, "--width")
    height, note_h = snap(dh if a.height is None else a.height, "--height")
    return width, height, [n for n in (note_w, note_h) if n]


def check_switches(switches, prompt: str, chunks: int) -> list[tuple[int, str]]:
    """--switch CHUNK PROMPT pairs -> [(chunk, prompt)], every switch inside this run."""
    if not prompt.strip():
        raise UsageError("--prompt is empty; describe the video, e.g. --prompt \"a red fox runs through snow\"")
    out, seen = [], {}
    for chunk, text in switches:
        if not chunk.strip().lstrip("-").isdigit():
            raise UsageError(f"--switch takes a chunk number and then a prompt, got {chunk!r} {text!r}; e.g. "
                             f"--switch 4 \"the fox starts to run\"")
        k = int(chunk)
        if k < 1:
            raise UsageError(f"--switch {k}: chunk 0 is where --prompt starts and chunks are counted from 0; switch "
                             f"at chunk 1 or later, or put that text in --prompt")
        if k >= chunks:
            raise UsageError(f"--switch {k} never comes: --chunks {chunks} makes chunks 0 to {chunks - 1}; raise "
                             f"--chunks to {k + 1} or more, or switch earlier")
        if k in seen:
            raise UsageError(f"two --switch at chunk {k} ({seen[k]!r} and {text!r}); give each its own chunk")
        if not text.strip():
            raise UsageError(f"--switch {k} has an empty prompt; give the text that takes over at chunk {k}")
        seen[k] = text
        out.append((k, text))
    return sorted(out)


# --------------------------------------------------------------------------------------------- device
def check_device(text: str) -> str:
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible to this PyTorch (driver, CUDA_VISIBLE_DEVICES?)")
            raise UsageError(f"--device {text}: {why}; use --device cpu, or install a CUDA build of PyTorch")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {text}: Apple MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise UsageError(f"--device {text}: only cpu, cuda (cuda:N) and mps are supported")
    return text


# --------------------------------------------------------------------------------------------- files
def _existing(flag: str, value) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not str(value).strip() or not path.exists():
        raise UsageError(f"{flag} '{value}' does not exist; check the path")
    if path.is_file():
        what = not_weights(path)
        if what:
            raise UsageError(f"{flag} '{value}' {what}")
    return path


def check_model_files(a) -> ModelFiles:
    """Which weights to load, every file present, the VAE and text encoder found, before anything is loaded."""
    given = [f for f, v in (("--folder", a.folder), ("--model", a.model)) if v]
    if a.high or a.low:
        given.append("--high/--low")
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} were both given; pass one of --folder (a release folder), "
                         f"--high with --low (two expert files), or --model (one dense checkpoint)")
    if a.high and not a.low:
        raise UsageError("only --high (the high-noise expert) was given; add --low with the low-noise expert, or pass "
                         "a one-file dense model as --model")
    if a.low and not a.high:
        raise UsageError("only --low was given; add --high with the high-noise expert, or pass a one-file dense "
                         "model as --model")
    files = ModelFiles(folder=_existing("--folder", a.folder), high=_existing("--high", a.high),
                       low=_existing("--low", a.low) or _existing("--model", a.model),
                       vae=_existing("--vae", a.vae), text_encoder=_existing("--text-encoder", a.text_encoder))
    if files.folder is not None and not files.folder.is_dir():
        raise UsageError(f"--folder '{a.folder}' is a file; --folder takes the release folder (with model_index.json), "
                         f"a single file goes in --model, or --high/--low")
    if files.high is not None and files.high.resolve() == files.low.resolve():
        raise UsageError(f"--high and --low are the same file ('{a.high}'); give the high-noise expert to --high and "
                         f"the low-noise expert to --low")
    if files.folder is None and files.low is None:
        for flag, v in (("--vae", a.vae), ("--text-encoder", a.text_encoder)):
            if v:
                raise UsageError(f"{flag} was given without a model; add --folder, --high/--low or --model, or leave "
                                 f"{flag} out for the bundled tiny world")
        if not (TINY_WORLD / "model_index.json").is_file():
            raise UsageError(f"no model files were given and the bundled tiny world '{TINY_WORLD}' is missing; "
                             f"reinstall the pack, or pass --folder (or --high/--low, or --model)")
        files = ModelFiles(folder=TINY_WORLD, demo=True)
    folder = files.folder
    if files.vae is None:
        if folder is None or not (folder / "vae").is_dir():
            raise UsageError("--vae is needed with these model files (a diffusers --folder carries vae/ itself); give "
                             "the Wan2.1 VAE, e.g. --vae wan_2.1_vae.safetensors")
        files.vae = folder / "vae"
    if files.text_encoder is None:
        if folder is None or not (folder / "text_encoder").is_dir():
            raise UsageError("--text-encoder is needed with these model files (a diffusers --folder carries "
                             "text_encoder/ itself); give the umT5 file or folder, e.g. --text-encoder "
                             "umt5-xxl-enc-bf16.safetensors")
        files.text_encoder = folder
    return files


def read_model_headers(files: ModelFiles) -> None:
    """The experts' and text encoder's headers and configs read (kept in `files` for the loaders, which read
    nothing twice): a file that is no Wan model, two experts that differ, or a text encoder of the wrong width
    stop here, before any weight is read."""
    from .causal.weights.loader import prepare_experts

    folder = files.folder
    try:
        files.experts = prepare_experts(files.high, None if folder else files.low, folder)
    except ValueError as e:
        flag = "--folder" if folder else ("--high/--low" if files.high else "--model")
        raise UsageError(f"{flag}: {' '.join(str(e).split())}") from None
    from .causal.weights.text_encoder import prepare_text_encoder

    flag = "--text-encoder" if files.text_encoder != folder else "--folder"
    try:
        files.text = prepare_text_encoder(files.text_encoder)
    except ImportError as e:
        raise UsageError(f"{flag}: the umT5 text encoder needs the '{e.name}' package; pip install -e \".[text]\"") \
            from None
    except ValueError as e:
        raise UsageError(f"{flag}: {' '.join(str(e).split())}") from None
    width, reads = files.text.width, files.experts.config.text_dim
    if width != reads:
        raise UsageError(f"{flag}: the text encoder '{files.text_encoder}' gives {width}-wide text, but the model "
                         f"reads {reads}-wide text; give the text encoder made for this model (umT5-XXL for Wan)")


def check_lora(spec: str) -> tuple[Path, float]:
    """--lora FILE[:STRENGTH] -> (present file, strength); a ':' that is part of the path (C:\\) is kept."""
    from .causal.weights.lora import check_strength

    path, _, strength = spec.rpartition(":")
    if not path or not strength.replace(".", "", 1).lstrip("-").isdigit():  # no strength given
        path, strength = spec, "1"
    return _existing("--lora", path), check_strength(strength, f"--lora {spec}")


def check_out(value: str, image: str) -> Path:
    """--out: an .mp4 path whose folder exists (or can be made) and is writable, not a folder itself."""
    out = Path(value)
    if not value.strip():
        raise UsageError("--out is empty; give the video file to write, e.g. --out out/video.mp4")
    if out.is_dir():
        raise UsageError(f"--out '{value}' is a folder; give a file name in it, e.g. --out {out / 'video.mp4'}")
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out '{value}': the video is written as MP4; give a name ending in .mp4")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out '{value}': '{parent}' is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out '{value}': no permission to write in '{parent}'; choose another --out")
    partial = out.with_name(out.stem + ".partial.mp4")
    if partial.is_dir():
        raise UsageError(f"--out '{value}': '{partial}' (where the video grows) is a folder; remove it or choose "
                         f"another --out")
    if Path(image).exists() and out.exists() and out.resolve() == Path(image).resolve():
        raise UsageError(f"--out '{value}' is the start image (--image); choose another --out")
    return out
