"""Settings of one DMD training run: a dataclass, read from a JSON, TOML or YAML file or a dict.

Unknown keys are refused with one error that names the key and lists the valid ones, so a typo never trains
with a silent default.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


class ConfigError(ValueError):
    """A training config that cannot be used as written."""


@dataclass
class TrainConfig:
    # ---- models (paths for the command line; programmatic callers pass modules to DMDTrainer)
    teacher: str = ""  # bidirectional teacher: release folder (pair) or one file (dense)
    student: str = ""  # causal generator to start from; "" = a copy of the teacher
    text_encoder: str = ""  # umT5 folder/file for the prompts file (command line only)
    vae: str = ""  # VAE for start images (image-to-video, command line only)
    prompts_file: str = ""  # UTF-8 text, one prompt per line
    start_images: str = ""  # folder of start images: image-to-video rollouts primed with frame 0
    negative_prompt: str = ""
    # ---- output
    output: str = ""  # trained generator: a folder for a pair, a .safetensors file for a dense model
    checkpoint_dir: str = ""  # resumable state (default: <output>.ckpt)
    checkpoint_every: int = 100
    resume: bool = True  # continue from checkpoint_dir when it holds a checkpoint
    # ---- schedule and sizes
    steps: int = 1000  # generator updates are steps // gen_update_every
    batch_size: int = 1  # global batch (split over processes)
    latent_frames: int = 21  # of the generated video, start frame included
    latent_height: int = 60
    latent_width: int = 104
    chunk_frames: int = 3
    denoise_steps: tuple = ()  # generator's nominal steps; () = the model's default (4 dense, 8 pair)
    shift: float = 5.0  # generator's schedule shift
    seed: int = 0
    # ---- DMD
    guidance: float = 3.0  # real score: cond + guidance * (cond - uncond)
    timestep_shift: float = 5.0
    min_t: float = 20.0
    max_t: float = 980.0
    gen_update_every: int = 5  # generator updated once per this many critic updates
    lr_generator: float = 2e-6
    lr_critic: float = 4e-7
    betas: tuple = (0.0, 0.999)
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    ema_decay: float = 0.99
    ema_start: int = 200  # iteration (step, critic-only ones counted) from which the EMA averages (before: copies)
    # ---- causal initialisation (optional stage before DMD)
    init_steps: int = 0
    init_lr: float = 2e-6
    teacher_steps: int = 20  # ODE steps of the teacher trajectories the causal student regresses onto
    # ---- scale-out
    mixed_precision: str = "no"  # "no" or "bf16"
    fsdp: bool = False  # shard generator, critic and teacher over processes (accelerate FSDP)
    activation_checkpointing: bool = False
    extra: dict = field(default_factory=dict)  # free-form notes carried into checkpoints

    def __post_init__(self):
        self.denoise_steps = tuple(float(s) for s in self.denoise_steps)
        self.betas = tuple(float(b) for b in self.betas)
        self.check()

    def check(self) -> None:
        positive = ("steps", "batch_size", "latent_frames", "latent_height", "latent_width", "chunk_frames",
                    "gen_update_every", "checkpoint_every", "teacher_steps")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.min_t < self.max_t <= 1000:
            raise ConfigError(f"need 0 <= min_t < max_t <= 1000, got min_t={self.min_t}, max_t={self.max_t}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ConfigError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers such as [0.0, 0.999], got {list(self.betas)}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.init_steps < 0:
            raise ConfigError(f"init_steps must be >= 0, got {self.init_steps}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(d).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise ConfigError(f"{source}: unknown setting {unknown[0]!r}; valid settings are: {', '.join(valid)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["denoise_steps"], d["betas"] = list(self.denoise_steps), list(self.betas)
        return d


def load_config(path, overrides: dict | None = None) -> TrainConfig:
    """Read a .json, .toml or .yaml/.yml file; `overrides` (e.g. from the command line) win."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file '{path}': use .json, .toml or .yaml")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"could not read config file '{path}': {type(e).__name__}: {e}") from None
    if isinstance(data, dict):
        data = {**data, **(overrides or {})}
    return TrainConfig.from_dict(data, str(path))
