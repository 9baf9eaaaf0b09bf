"""umT5 text encoder (transformers UMT5EncoderModel) loaded from the files users have.

    enc = TextEncoder.load(path, tokenizer=None, dtype=None, device="cpu")
    embeddings = enc.encode(["a cat", "a dog at sunset"])   # list of [tokens_i, d_model] (4096 for umT5-XXL)

`path` may be:
- a diffusers release folder (text_encoder/ + tokenizer/) or its text_encoder/ folder;
- the original Wan `models_t5_umt5-xxl-enc-bf16.pth` (a plain state dict with Wan's own T5 names, mapped below;
  tokenizer from `google/umt5-xxl/` beside it), or the original release folder that holds both;
- a ComfyUI umT5 `.safetensors` (transformers names, the SentencePiece model embedded as `spiece_model`; fp8 or
  scaled fp8 weights are dequantised to the compute dtype on load).
The prompt is cleaned (ftfy when installed, HTML entities, whitespace) as the Wan pipelines do, tokenized to 512
ids (text + </s>, padded), encoded with the padding masked, and each output trimmed to its real token count.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .assemble import key_problems
from .checkpoint_files import TensorSource, WeightsError, first, open_file, open_folder
from ..model.fp8 import AUX_SUFFIXES, MARKER, SCALE_SUFFIXES, dequantize, is_fp8, normalize_scale
from .umt5_tokenizer import UMT5Tokenizer

TEXT_LEN = 512
ORIGINAL_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
ORIGINAL_TOKENIZER = Path("google") / "umt5-xxl"
SPIECE_KEY = "spiece_model"
FINAL_NORM = "encoder.final_layer_norm.weight"
# Original Wan t5.py (T5Encoder) names -> transformers UMT5 names; {i} is a block index. Wan's gated FFN is
# fc2(fc1(x) * gelu_tanh(gate(x))): gate.0 is wi_0 (the activated branch), fc1 is wi_1, fc2 is wo. Every umT5
# layer has its own relative position bias (Wan: pos_embedding, shared_pos=False).
_WAN_T5_RULES = [
    ("token_embedding.weight", "shared.weight"),
    ("norm.weight", FINAL_NORM),
    ("blocks.{i}.norm1.weight", "encoder.block.{i}.layer.0.layer_norm.weight"),
    ("blocks.{i}.attn.q.weight", "encoder.block.{i}.layer.0.SelfAttention.q.weight"),
    ("blocks.{i}.attn.k.weight", "encoder.block.{i}.layer.0.SelfAttention.k.weight"),
    ("blocks.{i}.attn.v.weight", "encoder.block.{i}.layer.0.SelfAttention.v.weight"),
    ("blocks.{i}.attn.o.weight", "encoder.block.{i}.layer.0.SelfAttention.o.weight"),
    ("blocks.{i}.pos_embedding.embedding.weight",
     "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"),
    ("blocks.{i}.norm2.weight", "encoder.block.{i}.layer.1.layer_norm.weight"),
    ("blocks.{i}.ffn.gate.0.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight"),
    ("blocks.{i}.ffn.fc1.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight"),
    ("blocks.{i}.ffn.fc2.weight", "encoder.block.{i}.layer.1.DenseReluDense.wo.weight"),
]


def _compile(src: str, dst: str):
    return re.compile("^" + re.escape(src).replace(re.escape("{i}"), r"(\d+)") + "$"), dst


_TO_HF = [_compile(a, b) for a, b in _WAN_T5_RULES]
_TO_WAN = [_compile(b, a) for a, b in _WAN_T5_RULES]


def _rename(key: str, rules) -> str | None:
    for pat, dst in rules:
        m = pat.match(key)
        if m:
            return dst.replace("{i}", m.group(1)) if m.groups() else dst
    return None


def wan_to_hf(key: str) -> str | None:
    """Original Wan T5 key -> transformers UMT5 key (None if not a T5 weight)."""
    return _rename(key, _TO_HF)


def hf_to_wan(key: str) -> str | None:
    return _rename(key, _TO_WAN)


def clean_prompt(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


# ----------------------------------------------------------------------------------------------- weights
def _hf_names(src: TensorSource) -> TensorSource:
    """Strip a prefix and map Wan names, giving transformers UMT5 names (aux keys kept)."""
    keys = src.keys()
    if any(k.endswith("token_embedding.weight") for k in keys):
        prefix = next(k for k in keys if k.endswith("token_embedding.weight"))[: -len("token_embedding.weight")]
        return src.rename(lambda k: wan_to_hf(k[len(prefix):]) or k if k.startswith(prefix) else k)
    hits = [k[: -len(FINAL_NORM)] for k in keys if k.endswith(FINAL_NORM)]
    if not hits:
        from .model_family import describe, looks_like_wan

        what = "a Wan video transformer" if looks_like_wan(keys) else describe(keys)
        raise WeightsError(f"'{src.path}' is not a umT5 text encoder: it looks like {what} "
                           f"(first keys: {first(sorted(keys))})")
    prefix = min(hits, key=len)
    return src.rename(lambda k: k[len(prefix):] if k.startswith(prefix) else k)


def infer_umt5_config(src: TensorSource):
    from transformers import UMT5Config

    s = src.shapes
    need = ["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    if any(k not in s for k in need):
        raise WeightsError(f"'{src.path}' lacks the umT5 tensors {first(k for k in need if k not in s)}; it is not "
                           "a complete umT5 encoder")
    layers = {int(m[1]) for k in s for m in [re.match(r"encoder\.block\.(\d+)\.", k)] if m}
    buckets, heads = s["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in s
    ff_key = "encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"
    return UMT5Config(vocab_size=s["shared.weight"][0], d_model=s["shared.weight"][1],
                      d_kv=s["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // heads, d_ff=s[ff_key][0],
                      num_layers=len(layers), num_heads=heads, relative_attention_num_buckets=buckets,
                      feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0)


def build_umt5(src: TensorSource, config, dtype: torch.dtype, device="cpu"):
    """UMT5EncoderModel on the meta device, checked, then filled tensor by tensor (fp8 dequantised)."""
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = "encoder.embed_tokens.weight"
    aux = {k for k in src.keys() if k in (MARKER, SPIECE_KEY) or k.rsplit(".", 1)[-1] in SCALE_SUFFIXES + AUX_SUFFIXES}
    found = set(src.keys()) - aux
    problems = key_problems(expected, src, found, optional={tied})
    if problems:
        raise WeightsError(f"'{src.path}' does not match a umT5 encoder with d_model {config.d_model}, "
                           f"{config.num_layers} layers: " + "; ".join(problems))
    sd = {}
    for k in expected:
        if k == tied and k not in found:
            continue
        t = src.get(k)
        if is_fp8(t.dtype):
            base = k[: -len("weight")]
            scale_key = next((base + s for s in SCALE_SUFFIXES if base + s in src), None)
            scale = normalize_scale(src.get(scale_key), t.shape[0], f"'{src.path}' {k}") if scale_key else None
            t = dequantize(t, scale, dtype)
        sd[k] = t.to(device=device, dtype=dtype)
    sd.setdefault(tied, sd["shared.weight"])
    model.load_state_dict(sd, strict=True, assign=True)
    model.encoder.embed_tokens.weight = model.shared.weight  # one tensor, as in the checkpoint
    left = [k for k, v in list(model.named_parameters()) + list(model.named_buffers()) if v.is_meta]
    if left:
        raise WeightsError(f"'{src.path}': {len(left)} umT5 tensors were not filled (first: {first(left)})")
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------- locating files
def _locate(path: Path, tokenizer) -> tuple[TensorSource, dict | None, object]:
    """(weights, config.json or None, tokenizer source: folder / bytes tensor / None) for a user path."""
    config = None
    if path.is_dir():
        if (path / "text_encoder").is_dir():  # diffusers release folder
            return _locate(path / "text_encoder", tokenizer if tokenizer is not None else path / "tokenizer")
        if (path / ORIGINAL_FILE).is_file():  # original Wan release folder
            return _locate(path / ORIGINAL_FILE, tokenizer if tokenizer is not None else path / ORIGINAL_TOKENIZER)
        src = open_folder(path)
        if (path / "config.json").is_file():
            import json

            config = json.loads((path / "config.json").read_text())
        guess = path.parent / "tokenizer"
    elif path.exists():
        src = open_file(path)
        guess = path.parent / ORIGINAL_TOKENIZER
    else:
        raise WeightsError(f"text encoder not found: '{path}' does not exist")
    if tokenizer is None:
        tokenizer = src.get(SPIECE_KEY) if SPIECE_KEY in src else guess
    return src, config, tokenizer


def _tokenizer(spec, weights_path) -> UMT5Tokenizer:
    if isinstance(spec, torch.Tensor):
        return UMT5Tokenizer.from_sentencepiece(spec, f"'{weights_path}' (embedded spiece_model)")
    spec = Path(spec)
    if spec.is_file():
        return UMT5Tokenizer.from_sentencepiece(spec.read_bytes(), str(spec))
    if spec.is_dir():
        return UMT5Tokenizer.from_folder(spec)
    raise WeightsError(f"no tokenizer for the text encoder '{weights_path}': '{spec}' does not exist and the weights "
                       f"embed no {SPIECE_KEY}. Pass tokenizer=<folder with tokenizer.json or spiece.model> "
                       f"(the release's tokenizer/ or {ORIGINAL_TOKENIZER}/)")


@dataclass
class PreparedTextEncoder:
    """Everything short of reading the weights: the weights under HF names, the UMT5Config, the tokenizer built.
    Made by prepare_text_encoder; a caller that checks the encoder first (the command line) keeps it and hands it
    to TextEncoder.load(prepared=...), so no header is read twice and the tokenizer is built once."""

    weights: TensorSource
    config: object  # transformers UMT5Config
    tokenizer: UMT5Tokenizer

    @property
    def width(self) -> int:
        """The width (d_model) of the text the encoder gives."""
        return self.config.d_model


def prepare_text_encoder(path, tokenizer=None) -> PreparedTextEncoder:
    """The headers and configs read and the tokenizer built, so a wrong or incomplete encoder is found before
    anything big is loaded."""
    from transformers import UMT5Config

    src, config_json, tok_spec = _locate(Path(path), tokenizer)
    src = _hf_names(src)
    config = UMT5Config.from_dict({**config_json, "dropout_rate": 0.0}) if config_json else infer_umt5_config(src)
    return PreparedTextEncoder(src, config, _tokenizer(tok_spec, src.path))


# ----------------------------------------------------------------------------------------------- the encoder
class TextEncoder:
    """umT5 encoder + tokenizer; `encode` gives one [tokens, d_model] tensor per prompt."""

    def __init__(self, model, tokenizer: UMT5Tokenizer, max_length: int = TEXT_LEN):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    @classmethod
    def load(cls, path=None, tokenizer=None, dtype=None, device="cpu", max_length: int = TEXT_LEN,
             prepared: PreparedTextEncoder | None = None) -> "TextEncoder":
        """From `path` (and `tokenizer`), or from what prepare_text_encoder read of them (prepared=)."""
        from .loader import resolve_dtype

        if prepared is None:
            if path is None:
                raise ValueError("nothing to load: pass the text encoder's path, or prepared=")
            prepared = prepare_text_encoder(path, tokenizer)
        elif path is not None or tokenizer is not None:
            raise ValueError("give either prepared= or the path (and tokenizer), not both")
        compute = resolve_dtype(dtype, prepared.weights)[0]  # None: the file's main dtype (fp8: bf16)
        model = build_umt5(prepared.weights, prepared.config, compute, device)
        return cls(model, prepared.tokenizer, max_length)

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts; wrap a single prompt in a list")
        ids, mask = self.tokenizer([clean_prompt(p) for p in prompts], self.max_length)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return [h[: int(n)] for h, n in zip(hidden, mask.sum(dim=1))]


def load_text_encoder(path=None, tokenizer=None, dtype=None, device="cpu",
                      prepared: PreparedTextEncoder | None = None) -> TextEncoder:
    return TextEncoder.load(path, tokenizer=tokenizer, dtype=dtype, device=device, prepared=prepared)
