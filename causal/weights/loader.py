"""One way in for transformer weights: detect the format, rename to original Wan keys, check, build on meta.

    detect_format(path)                      -> "diffusers_folder", "diffusers_transformer", "original_folder",
                                                "comfy_single_file", "diffusers_single_file", "sharded_safetensors",
                                                "torch_checkpoint"
    load_transformer(path, dtype=None, device="cpu", config=None)           -> CausalWanModel
    load_experts(high=None, low=None, folder=None, dtype=None, device="cpu",
                 boundary=None, shift=None)                                   -> ExpertPair
    prepare_experts(high=None, low=None, folder=None) -> PreparedExperts (headers only; load_experts(prepared=))

dtype: None keeps the file's dtype (fp8 files compute in bf16 with fp8 weights kept; fp32/fp64 files become
`float_dtype`, default float32: pass auto_float_dtype(compute device) for bf16 on CUDA); a torch dtype or "bf16",
"fp16", "fp32"; or "fp8_e4m3fn" to quantise the big block Linear weights on load (compute in bf16). Files that
store fp8 weights always keep them fp8 in memory.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from . import assemble, infer_config, keymap, model_family, releases
from .checkpoint_files import PICKLE_SUFFIXES, TensorSource, WeightsError, first, open_file, open_folder
from ..model.config import WanConfig
from ..sampling.defaults import ModelDefaults
from ..sampling.experts import ExpertPair
from ..model.fp8 import FP8_NAMES, FP8Linear, is_fp8
from ..model.transformer import CausalWanModel

__all__ = ["WeightsError", "detect_format", "load_transformer", "load_experts", "prepare_experts", "resolve_dtype",
           "auto_float_dtype"]

CAUSALWAN_A14B_BOUNDARY = 875.0  # boundary_ratio 0.875 of CausalWan2.2-I2V-A14B, used when a pair ships no config
DEFAULT_SHIFT = 5.0
PAIR_FOLDERS = ("high_noise_model", "low_noise_model")
CONFIG_METADATA = "causalwan_config"  # safetensors metadata entry: the original-style config of a single file
DTYPE_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
               "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


# ----------------------------------------------------------------------------------------------- formats
def detect_format(path, src: TensorSource | None = None) -> str:
    """What kind of checkpoint `path` is, judged from its folder layout, config files and tensor names (those of
    `src` when the caller has opened it already, so no header is read twice)."""
    path = Path(path)
    if path.is_dir():
        fmt = _folder_format(path)
        if fmt is None:  # a plain folder of weights: its tensor names decide
            fmt = "diffusers_transformer" if _naming(src or open_folder(path)) == "diffusers" else "original_folder"
        return fmt
    if not path.exists():
        raise WeightsError(f"weights not found: '{path}' does not exist")
    name = path.name.lower()
    if name.endswith(".safetensors.index.json"):
        return "sharded_safetensors"
    if name.endswith(PICKLE_SUFFIXES):
        return "torch_checkpoint"
    return "diffusers_single_file" if _naming(src or open_file(path)) == "diffusers" else "comfy_single_file"


def _folder_format(path: Path) -> str | None:
    """A folder's format from its layout and config files alone; None when only its tensor names can tell."""
    if (path / "model_index.json").is_file():
        return "diffusers_folder"
    if all((path / d).is_dir() for d in PAIR_FOLDERS):
        return "original_folder"
    cfg = _read_json(path / "config.json") if (path / "config.json").is_file() else None
    if cfg is not None:
        return "original_folder" if _is_original_json(cfg) else "diffusers_transformer"
    if (path / "transformer").is_dir():
        raise WeightsError(f"'{path}' has a transformer/ folder but no model_index.json; point at "
                           f"'{path / 'transformer'}' or restore model_index.json")
    return None


def _naming(src: TensorSource) -> str:
    prefix = model_family.find_prefix(src.keys())
    if prefix is None:
        return "original"
    return model_family.naming([k[len(prefix):] for k in src.keys() if k.startswith(prefix)])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except Exception as e:
        raise WeightsError(f"could not read '{path}': {type(e).__name__}: {e}") from e


def _is_original_json(cfg: dict) -> bool:
    return cfg.get("_class_name") == "WanModel" or ("dim" in cfg and "num_attention_heads" not in cfg)


# ----------------------------------------------------------------------------------------------- one expert
def open_transformer(path, state_key: str | tuple | None = None) -> tuple[TensorSource, dict, str]:
    """(tensors under original Wan names, fields of a shipped config.json, format) of one expert's weights."""
    path = Path(path)
    shipped: dict = {}
    if path.is_dir():
        fmt = _folder_format(path)
        if fmt == "diffusers_folder":
            index = _read_json(path / "model_index.json")
            if _has_second_expert(path, index):
                raise WeightsError(f"'{path}' holds two experts (transformer/ and transformer_2/); load it with "
                                   "load_experts(folder=...) or point at one of the two subfolders")
            return open_transformer(path / "transformer", state_key)
        if fmt == "original_folder" and all((path / d).is_dir() for d in PAIR_FOLDERS):
            raise WeightsError(f"'{path}' holds two experts ({' and '.join(PAIR_FOLDERS)}); load it with "
                               "load_experts(folder=...) or point at one of the two subfolders")
        src = open_folder(path, stem="diffusion_pytorch_model" if any(path.glob("diffusion_pytorch_model*")) else None)
        fmt = fmt or detect_format(path, src)
        if (path / "config.json").is_file():
            raw = _read_json(path / "config.json")
            shipped = (infer_config.from_original_json(raw) if _is_original_json(raw)
                       else infer_config.from_diffusers_json(raw, str(path / "config.json")))
    else:
        src = open_file(path, state_key)
        fmt = detect_format(path, src)
        if src.metadata and CONFIG_METADATA in src.metadata:  # written by this pack's trainer (tiny shapes too)
            shipped = infer_config.from_original_json(json.loads(src.metadata[CONFIG_METADATA]))
    return to_original_names(src), shipped, fmt


def to_original_names(src: TensorSource) -> TensorSource:
    """Strip wrapper fragments and the prefix, and map diffusers names to original Wan names."""
    if any(f in k for k in src.keys() for f in model_family.WRAPPER_FRAGMENTS):
        src = src.rename(model_family.strip_wrappers)
    prefix = model_family.find_prefix(src.keys())
    if prefix is None:
        raise WeightsError(f"'{src.path}' is not a Wan video transformer: it looks like "
                           f"{model_family.describe(src.keys())} ({len(src)} tensors; first keys: "
                           f"{first(sorted(src.keys()))})")
    bundle = prefix == model_family.BUNDLE_PREFIX

    def strip(k: str):
        if k.startswith(prefix):
            return k[len(prefix):]
        return None if bundle else k  # a bundle's VAE / text encoder is not ours; stray keys elsewhere are errors

    src = src.rename(strip) if prefix or bundle else src
    if model_family.naming(src.keys()) == "diffusers":
        src = src.rename(keymap.to_original)
    return src


def auto_float_dtype(device) -> torch.dtype:
    """What a float32/float64 file computes in on `device` when no dtype is chosen: bf16 on CUDA (fp16 on GPUs
    without bf16: compute capability below 8, e.g. T4, V100), float32 elsewhere (CPUs have no fast half
    precision). Asks `device` itself, not the current one; torch.cuda.is_bf16_supported() is not used because it
    also says yes for bf16 that is only emulated (slowly) on older GPUs."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def resolve_dtype(dtype, src: TensorSource | None = None,
                  float_dtype: torch.dtype | None = None) -> tuple[torch.dtype, torch.dtype | None]:
    """(compute dtype, fp8 dtype to quantise to on load or None) for a `dtype` argument; `float_dtype`: what a
    float32/float64 file becomes when dtype is None (default float32)."""
    if isinstance(dtype, str):
        key = dtype.lower()
        if key in ("fp8", *FP8_NAMES):
            return torch.bfloat16, FP8_NAMES.get(key, torch.float8_e4m3fn)
        if key not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}, fp8_e4m3fn, fp8_e5m2 "
                             "or None (the file's own dtype)")
        return DTYPE_NAMES[key], None
    if isinstance(dtype, torch.dtype):
        if is_fp8(dtype):
            return torch.bfloat16, dtype
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        return dtype, None
    if dtype is not None:
        raise TypeError(f"dtype must be None, a torch dtype or a name such as 'bf16', got {type(dtype).__name__}")
    if src is None:
        return torch.bfloat16, None
    counts = Counter()
    for k, shape in src.shapes.items():
        if src.dtypes[k].is_floating_point:
            counts[src.dtypes[k]] += torch.Size(shape).numel()
    main = counts.most_common(1)[0][0] if counts else torch.bfloat16
    if is_fp8(main):
        return torch.bfloat16, None
    if main in (torch.float32, torch.float64):
        return float_dtype or torch.float32, None
    return main, None


def prepare(path, config=None, state_key: str | tuple | None = None) -> tuple[TensorSource, WanConfig, str]:
    """Everything short of reading tensor data: the source, its config, its format."""
    src, shipped, fmt = open_transformer(path, state_key)
    cfg = infer_config.combine(infer_config.from_shapes(src.shapes, src.path), shipped, config, src.path)
    return src, cfg, fmt


def build(src: TensorSource, cfg: WanConfig, fmt: str, dtype=None, device="cpu",
          float_dtype: torch.dtype | None = None) -> CausalWanModel:
    compute, quant = resolve_dtype(dtype, src, float_dtype)
    model = assemble.build(cfg, src, compute, device, quant)
    model.weights_info = {"path": src.path, "format": fmt, "dtype": compute,
                          "fp8_layers": sum(isinstance(m, FP8Linear) for m in model.modules())}
    return model


def load_transformer(path, dtype=None, device="cpu", config=None, state_key: str | None = None) -> CausalWanModel:
    """One Wan expert from any supported format (see the module docstring), in eval mode on `device`.

    config: a WanConfig (used as is) or a dict of WanConfig fields that override what the weights and a shipped
    config.json say (e.g. {"num_heads": 12} for a non-standard head dim, {"text_len": 256}).
    state_key: for .pt files, the entry that holds the weights (default: generator_ema, generator, model, ...);
    a tuple: the first of those entries present.
    """
    src, cfg, fmt = prepare(path, config, state_key)
    return build(src, cfg, fmt, dtype, device)


# ----------------------------------------------------------------------------------------------- expert pairs
def _has_second_expert(folder: Path, index: dict) -> bool:
    listed = index.get("transformer_2")
    listed = isinstance(listed, (list, tuple)) and any(x is not None for x in listed)
    return listed or index.get("boundary_ratio") is not None or (folder / "transformer_2").is_dir()


def _scheduler_shift(folder: Path) -> float | None:
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    if not cfg_path.is_file():
        return None
    cfg = _read_json(cfg_path)
    for k in ("shift", "flow_shift"):
        if cfg.get(k) is not None:
            return float(cfg[k])
    return None


def _pair_paths(folder: Path) -> tuple[Path | None, Path, float | None, float | None]:
    """(high, low, boundary, shift) of a release folder; high is None for a dense model."""
    fmt = _folder_format(folder) if folder.is_dir() else None
    if fmt == "diffusers_folder":
        index = _read_json(folder / "model_index.json")
        shift = _scheduler_shift(folder)
        if not (folder / "transformer").is_dir():
            raise WeightsError(f"diffusers folder '{folder}' has no transformer/ subfolder; the download is "
                               "incomplete")
        if not _has_second_expert(folder, index):
            return None, folder / "transformer", None, shift
        if not (folder / "transformer_2").is_dir():
            raise WeightsError(
                f"diffusers folder '{folder}' is a two-expert model (model_index.json lists transformer_2 / "
                "boundary_ratio) but has no transformer_2/ subfolder with the low-noise expert; download "
                "transformer_2/ too")
        ratio = index.get("boundary_ratio")  # absent: the caller's boundary, else the A14B release's
        return folder / "transformer", folder / "transformer_2", None if ratio is None else float(ratio) * 1000.0, shift
    if fmt == "original_folder" and all((folder / d).is_dir() for d in PAIR_FOLDERS):
        return folder / PAIR_FOLDERS[0], folder / PAIR_FOLDERS[1], None, None
    return None, folder, None, None


def _config_diff(a: WanConfig, b: WanConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    return ", ".join(f"{k} {da[k]} vs {db[k]}" for k in da if da[k] != db[k])


@dataclass
class PreparedExperts:
    """What load_experts learns from the headers and configs before reading any tensor: the expert files, the
    release folder's own boundary and shift, and {"low": (source, config, format)[, "high": ...]}. Made by
    prepare_experts (a caller that plans memory first keeps it and hands it to load_experts(prepared=...), so no
    header is read twice)."""

    folder: Path | None
    high: Path | None
    low: Path
    boundary: float | None  # the folder's boundary_ratio * 1000, if it ships one
    shift: float | None  # the folder's scheduler shift, if it ships one
    plans: dict

    @property
    def config(self) -> WanConfig:
        return self.plans["low"][1]

    @property
    def count(self) -> int:
        """1 for a dense model, 2 for an expert pair."""
        return len(self.plans)

    @property
    def defaults(self) -> ModelDefaults:
        """How the release is sampled by default, from its name and the low expert's metadata."""
        return releases.recognise(self.folder or self.low, self.plans["low"][0].metadata, self.high is not None)


def prepare_experts(high=None, low=None, folder=None, config=None) -> PreparedExperts:
    """Everything short of reading tensor data, from a release folder, two files or one dense file/folder (low=);
    a file that is no Wan model, or two experts that differ, raise here."""
    boundary = shift = None
    if folder is not None:
        if high is not None or low is not None:
            raise ValueError("give either folder= or high=/low= files, not both")
        folder = Path(folder)
        high, low, boundary, shift = _pair_paths(folder)
    elif low is None:
        if high is not None:
            raise ValueError("only a high-noise expert was given; add low= (the low-noise expert), or pass a dense "
                             "model as low=")
        raise ValueError("nothing to load: pass folder=, or high= and low=, or low= for a dense model")
    plans = {"low": _layout_hint(low, prepare, low, config, releases.entries_for(low))}
    if high is not None:
        plans["high"] = _layout_hint(high, prepare, high, config, releases.entries_for(high))
        h_src, h_cfg, _ = plans["high"]
        l_src, l_cfg, _ = plans["low"]
        if h_cfg != l_cfg:
            raise WeightsError(f"the experts do not match: high '{h_src.path}' and low '{l_src.path}' differ in "
                               f"{_config_diff(h_cfg, l_cfg)}; load the two experts of the same model")
    return PreparedExperts(folder, None if high is None else Path(high), Path(low), boundary, shift, plans)


def load_experts(high=None, low=None, folder=None, dtype=None, device="cpu", boundary=None, shift=None,
                 share_cross_cache: bool | None = None, config=None, float_dtype: torch.dtype | None = None,
                 prepared: PreparedExperts | None = None) -> ExpertPair:
    """An ExpertPair from a release folder, two files (high and low noise), or one dense file/folder (low=), or
    from what prepare_experts read of them (prepared=, instead of the files and config).

    boundary / shift: given values win; otherwise model_index.json boundary_ratio * 1000 and the scheduler's
    shift/flow_shift; a pair without a shipped boundary gets 875 (CausalWan2.2-I2V-A14B), shift defaults to 5.
    share_cross_cache: None means True for a pair, False for a dense model. CausalWan2.2-I2V-A14B was distilled
    and is sampled with one cross-attention cache shared by both experts (filled by the high-noise expert), so a
    pair reproduces the release by default; pass False for independent caches.
    """
    if prepared is None:
        prepared = prepare_experts(high, low, folder, config)
    elif any(x is not None for x in (high, low, folder, config)):
        raise ValueError("give either prepared= or the files (folder=, high=/low=, config=), not both")
    p = prepared
    paths = {"low": p.low, "high": p.high}
    models = {name: _layout_hint(paths[name], build, *p.plans[name], dtype=dtype, device=device,
                                 float_dtype=float_dtype) for name in p.plans}
    pair = p.high is not None
    if pair and boundary is None:
        boundary = p.boundary if p.boundary is not None else CAUSALWAN_A14B_BOUNDARY
    defaults = p.defaults
    if shift is None:
        shift = next(s for s in (p.shift, defaults.shift, DEFAULT_SHIFT) if s is not None)
    if share_cross_cache is None:
        share_cross_cache = default_share_cross_cache(pair)
    return ExpertPair(models["low"], models.get("high"), boundary=boundary, shift=float(shift),
                      share_cross_cache=share_cross_cache, defaults=defaults)


def default_share_cross_cache(pair: bool) -> bool:
    """How a model is sampled when nobody says otherwise: a pair with one cross-attention cache shared by both
    experts (filled by the high-noise expert), a dense model with its own. The trainer trains with this too, so a
    trained pair reloads and samples exactly as it was trained."""
    return pair


def _layout_hint(path, fn, *args, **kwargs):
    """fn(*args, **kwargs), with the layout of a release recognised from `path`'s name added to any error."""
    try:
        return fn(*args, **kwargs)
    except WeightsError as e:
        r = releases.by_name(path)
        if r is None:
            raise
        raise WeightsError(f"{e}. The file name says {r.defaults.name}: expected {r.layout}") from e
