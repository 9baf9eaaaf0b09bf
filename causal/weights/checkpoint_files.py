"""Reading checkpoint files lazily: one safetensors file, a sharded safetensors index, or a torch pickle.

A `TensorSource` knows every tensor's name, shape and dtype from the file headers before any data is read, and
reads one tensor at a time on request, so a loader can check a whole checkpoint first and then materialise it
tensor by tensor. safetensors tensors come back memory-mapped (no copy until a dtype conversion); torch pickles
are opened with `weights_only=True` (and memory-mapped when the file format allows it), so no pickled code runs.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable, Iterator

import torch

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Where training code nests the generator's weights in a .pt (Self-Forcing: generator_ema / generator; CausVid:
# generator; plain trainers: model / state_dict / module). The first one present wins.
WRAPPER_KEYS = ("generator_ema", "generator", "model_ema", "ema", "state_dict", "model", "module", "net",
                "transformer", "generator_lora")  # generator_lora: LongLive's LoRA .pt
SHOW = 5  # offending keys named in an error message
CHUNK_BYTES = 16 << 20  # staging buffer of chunked reads


class WeightsError(ValueError):
    """Weights could not be read, or do not match the model they are loaded into."""


def first(items, n: int = SHOW) -> str:
    items = list(items)
    more = f", ... ({len(items) - n} more)" if len(items) > n else ""
    return ", ".join(repr(i) for i in items[:n]) + more


class TensorSource:
    """Names, shapes and dtypes of a checkpoint's tensors, and readers for one tensor at a time.

    get(key): the tensor, possibly a memory-mapped view of the file (no copy; for tensors kept as they are).
    read_into(key, out): copy-convert into a preallocated tensor of any dtype/device through a small staging
        buffer, so neither the file's pages nor a full-size temporary stay resident beside the result.
    chunks(key): the tensor as flat pieces of at most CHUNK_BYTES (each valid until the next one is produced).
    """

    def __init__(self, path, shapes: dict, dtypes: dict, read: Callable[[str], torch.Tensor], metadata=None,
                 chunks: Callable[[str], Iterator[tuple[int, torch.Tensor]]] | None = None):
        self.path = str(path)
        self.shapes = {k: tuple(s) for k, s in shapes.items()}
        self.dtypes = dict(dtypes)
        self._read = read
        self._chunks = chunks or (lambda k: iter([(0, read(k).reshape(-1))]))
        self.metadata = metadata or {}

    def keys(self) -> list[str]:
        return list(self.shapes)

    def __contains__(self, key) -> bool:
        return key in self.shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def _check(self, key):
        if key not in self.shapes:
            raise KeyError(f"'{self.path}' has no tensor {key!r}")

    def get(self, key: str, owned: bool = False) -> torch.Tensor:
        """The tensor `key`; owned=True gives a copy in process memory (read through the staging buffer)."""
        self._check(key)
        if owned:
            return self.read_into(key, torch.empty(self.shapes[key], dtype=self.dtypes[key]))
        return self._read(key)

    def chunks(self, key: str) -> Iterator[tuple[int, torch.Tensor]]:
        """(element offset, flat piece in the file's dtype) for successive pieces of the tensor."""
        self._check(key)
        return self._chunks(key)

    def read_into(self, key: str, out: torch.Tensor) -> torch.Tensor:
        if tuple(out.shape) != self.shapes[key] or not out.is_contiguous():
            raise ValueError(f"read_into {key!r}: out must be contiguous with shape {list(self.shapes[key])}")
        flat = out.view(-1)
        for off, piece in self.chunks(key):
            flat[off: off + piece.numel()].copy_(piece)
        return out

    def nbytes(self) -> int:
        return sum(_numel(s) * _itemsize(self.dtypes[k]) for k, s in self.shapes.items())

    def rename(self, fn: Callable[[str], str | None]) -> "TensorSource":
        """A view with keys renamed by `fn` (None drops a key); reads still go to the original names."""
        names: dict[str, str] = {}
        for k in self.shapes:
            new = fn(k)
            if new is None:
                continue
            if new in names:
                raise WeightsError(f"'{self.path}': keys {names[new]!r} and {k!r} both map to {new!r}; "
                                   "the file mixes two naming schemes or two models")
            names[new] = k
        return TensorSource(self.path, {n: self.shapes[o] for n, o in names.items()},
                            {n: self.dtypes[o] for n, o in names.items()}, lambda n: self._read(names[n]),
                            self.metadata, lambda n: self._chunks(names[n]))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def corrupt(path, kind: str, err: Exception) -> WeightsError:
    return WeightsError(f"could not read '{path}' as {kind}: {type(err).__name__}: {err}. The file is truncated or "
                        "corrupt (an interrupted download?) or is not a weights file; download it again.")


# ----------------------------------------------------------------------------------------------- safetensors
def open_safetensors(path) -> TensorSource:
    """safe_open validates the file and gives memory-mapped tensors; chunked reads use the header's byte offsets
    (8-byte little-endian header length, JSON header, then the data) and plain file I/O into a staging buffer."""
    from safetensors import safe_open

    path = Path(path)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        shapes, dtypes = {}, {}
        for k in handle.keys():
            sl = handle.get_slice(k)
            shapes[k], dtypes[k] = sl.get_shape(), _st_dtype(sl.get_dtype(), path, k)
        metadata = handle.metadata()
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        base = 8 + n
        offsets = {k: v["data_offsets"] for k, v in header.items() if k != "__metadata__"}
    except WeightsError:
        raise
    except Exception as e:  # SafetensorError is not exported as a class we can import reliably
        raise corrupt(path, "safetensors", e) from e

    def read(key):
        try:
            return handle.get_tensor(key)
        except Exception as e:
            raise corrupt(path, "safetensors", e) from e

    staging: list[torch.Tensor] = []  # one buffer per file, allocated on first use and reused

    def chunks(key):
        start, end = offsets[key]
        dtype = dtypes[key]
        size = _itemsize(dtype)
        if not staging:
            staging.append(torch.empty(CHUNK_BYTES, dtype=torch.uint8))
        buf = staging[0]
        step = CHUNK_BYTES // size * size
        with open(path, "rb") as f:
            f.seek(base + start)
            for pos in range(start, end, step):
                n = min(step, end - pos)
                if f.readinto(memoryview(buf.numpy())[:n]) != n:
                    raise corrupt(path, "safetensors", EOFError(f"tensor {key!r} ends past the end of the file"))
                yield (pos - start) // size, buf[:n].view(dtype)

    return TensorSource(path, shapes, dtypes, read, metadata, chunks)


def _st_dtype(name: str, path, key) -> torch.dtype:
    if name not in SAFETENSORS_DTYPES:
        raise WeightsError(f"'{path}': tensor {key!r} has dtype {name}, which this loader does not read "
                           f"(supported: {', '.join(SAFETENSORS_DTYPES)})")
    return SAFETENSORS_DTYPES[name]


def open_sharded(index_path) -> TensorSource:
    """`*.safetensors.index.json` (`weight_map`: tensor name -> shard file) and its shards."""
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except Exception as e:
        raise WeightsError(f"could not read the shard index '{index_path}': {type(e).__name__}: {e}") from e
    shards: dict[str, TensorSource] = {}
    for name in sorted(set(weight_map.values())):
        shard = index_path.parent / name
        if not shard.is_file():
            raise WeightsError(f"'{index_path}' lists the shard '{name}', which is missing from {index_path.parent}; "
                               "the download is incomplete")
        shards[name] = open_safetensors(shard)
    absent = [k for k, n in weight_map.items() if k not in shards[n]]
    if absent:
        raise WeightsError(f"'{index_path}' places {len(absent)} tensors in shards that do not hold them "
                           f"(first: {first(absent)}); the index and the shards come from different downloads")
    return TensorSource(index_path, {k: shards[n].shapes[k] for k, n in weight_map.items()},
                        {k: shards[n].dtypes[k] for k, n in weight_map.items()},
                        lambda k: shards[weight_map[k]].get(k), None, lambda k: shards[weight_map[k]].chunks(k))


# ----------------------------------------------------------------------------------------------- torch pickle
def open_pickle(path, state_key: str | tuple | None = None) -> TensorSource:
    """A .pt/.pth/.bin checkpoint, loaded with weights_only=True; the state dict may sit under WRAPPER_KEYS."""
    path = Path(path)
    obj = _torch_load(path)
    entries: list[str] = []
    sd = find_state_dict(obj, path, state_key, entries=entries)
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    # which entry held the weights, and what else the checkpoint holds (for recognising the release)
    meta = {"entry": ".".join(entries), "top_level": ",".join(map(str, obj)) if isinstance(obj, dict) else ""}
    return TensorSource(path, {k: v.shape for k, v in tensors.items()}, {k: v.dtype for k, v in tensors.items()},
                        tensors.__getitem__, meta)


def _torch_load(path: Path):
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped; read them whole
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise WeightsError(
                f"refused to load '{path}': the pickle holds Python objects other than tensors and plain "
                "containers, and unpickling them could run code. Only weights-only checkpoints are loaded; convert "
                "it to .safetensors where you trust its origin, or get a safetensors release. Detail: "
                f"{str(e).splitlines()[-1] if str(e) else type(e).__name__}") from e
        raise corrupt(path, "a torch checkpoint", e) from e
    except Exception as e:
        raise corrupt(path, "a torch checkpoint", e) from e


def find_state_dict(obj, path, state_key: str | tuple | None = None, depth: int = 0,
                    entries: list | None = None) -> dict:
    """The dict of tensors inside a loaded checkpoint (maybe nested under a wrapper key); the keys descended
    through are appended to `entries`."""
    entries = [] if entries is None else entries
    if not isinstance(obj, dict):
        raise WeightsError(f"'{path}' holds a {type(obj).__name__}, not a dict of tensors")
    if isinstance(state_key, tuple):  # entries in order of preference: the first one present, else the default search
        state_key = next((k for k in state_key if isinstance(obj.get(k), dict)), None)
    if state_key is not None:
        if state_key not in obj:
            raise WeightsError(f"'{path}' has no entry {state_key!r}; its top-level keys are {first(obj, 12)}")
        entries.append(state_key)
        return find_state_dict(obj[state_key], path, None, depth + 1, entries)
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if depth < 3:
        for k in WRAPPER_KEYS:
            if isinstance(obj.get(k), dict):
                entries.append(k)
                return find_state_dict(obj[k], path, None, depth + 1, entries)
    raise WeightsError(f"'{path}' holds no tensors at its top level nor under any of {', '.join(WRAPPER_KEYS)}; "
                       f"its keys are {first(obj, 12)}. Pass the entry that holds the weights (state_key=...)")


# ----------------------------------------------------------------------------------------------- any of them
def not_weights(path) -> str | None:
    """What a file plainly is when it is no weights file at all (empty, a web page, a git-lfs pointer), said
    with the fix; None when its first bytes could be weights."""
    with open(path, "rb") as f:
        head = f.read(256)
    if not head:
        return "is empty (0 bytes): the download did not finish; download it again"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"{\"error")):
        return ("is a web page or an error message, not weights (the download saved a login or error page); "
                "download the file itself again")
    if text.startswith(b"version https://git-lfs"):
        return "is a git-lfs pointer, not the weights; run 'git lfs pull' in its repository or download the file"
    return None


def open_file(path, state_key: str | tuple | None = None) -> TensorSource:
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights not found: '{path}' does not exist")
    what = not_weights(path) if path.is_file() else None
    if what:
        raise WeightsError(f"'{path}' {what}")
    name = path.name.lower()
    if name.endswith(".safetensors.index.json"):
        return open_sharded(path)
    if name.endswith(".safetensors"):
        return open_safetensors(path)
    if name.endswith(PICKLE_SUFFIXES):
        return open_pickle(path, state_key)
    if name.endswith(".gguf"):
        raise WeightsError(f"'{path}' is a GGUF file; GGUF quantisation is not supported. Use a .safetensors "
                           "file (bf16, fp16 or fp8) or a diffusers folder")
    raise WeightsError(f"'{path}': unknown weights file type '{path.suffix}'; expected .safetensors, "
                       ".safetensors.index.json, .pt, .pth, .bin or .ckpt")


def open_folder(folder, stem: str | None = None) -> TensorSource:
    """The weights in a model folder: a shard index, else safetensors file(s), else one pickle."""
    folder = Path(folder)
    pick = (lambda p: p.name.startswith(stem)) if stem else (lambda p: True)
    indexes = sorted(p for p in folder.glob("*.safetensors.index.json") if pick(p))
    if len(indexes) == 1:
        return open_sharded(indexes[0])
    if len(indexes) > 1:
        raise WeightsError(f"'{folder}' has several shard indexes ({first(p.name for p in indexes)}); "
                           "point at the one to load")
    files = sorted(p for p in folder.glob("*.safetensors") if pick(p))
    if len(files) == 1:
        return open_safetensors(files[0])
    if files:
        return merge([open_safetensors(f) for f in files], folder)
    pickles = sorted(p for p in folder.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES) and pick(p))
    if len(pickles) == 1:
        return open_pickle(pickles[0])
    what = f"several ({first(p.name for p in pickles)})" if pickles else "no"
    raise WeightsError(f"'{folder}' has no .safetensors weights and {what} .pt/.pth/.bin files; "
                       "point at the weights file to load")


def merge(sources: list[TensorSource], name) -> TensorSource:
    owner: dict[str, TensorSource] = {}
    for s in sources:
        for k in s.keys():
            if k in owner:
                raise WeightsError(f"'{name}': tensor {k!r} is in both '{owner[k].path}' and '{s.path}'")
            owner[k] = s
    return TensorSource(name, {k: s.shapes[k] for k, s in owner.items()}, {k: s.dtypes[k] for k, s in owner.items()},
                        lambda k: owner[k].get(k), None, lambda k: owner[k].chunks(k))
