"""Write a tiny Wan expert in every file format users have (for the weights-loading tests)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from causalwan.causal.weights import keymap
from causalwan.causal.model.fp8 import quantize
from tiny_models import tiny_model

COMFY_PREFIX = "model.diffusion_model."
# dim 256 = 2 heads of 128: the head count is inferred like for released models, no config needed.
REF = dict(dim=256, num_heads=2, ffn_dim=64, text_len=512)


def ref_model(seed=0, **kw):
    return tiny_model(seed=seed, **{**REF, **kw})


def block_linears(sd: dict) -> list[str]:
    """Weight keys of the Linear layers inside the blocks (the layers fp8 files quantise)."""
    return [k for k, v in sd.items() if k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2]


def write_comfy(model, path, dtype=torch.bfloat16, prefix=COMFY_PREFIX, fp8=None) -> Path:
    """ComfyUI single file: original names under `prefix`; fp8 None / "plain" / "scaled" / "comfy_quant"."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {k: v.to(dtype) for k, v in sd.items()}
    if fp8 == "plain":  # every floating tensor cast to fp8, no scales
        out = {k: v.float().to(torch.float8_e4m3fn) for k, v in sd.items()}
    elif fp8 in ("scaled", "comfy_quant"):
        for i, k in enumerate(block_linears(sd)):
            base = k[: -len(".weight")]
            if i == 0:  # one layer with a scale per output row, the rest per tensor
                scale = sd[k].abs().amax(dim=1, keepdim=True).float() / 448
                q = (sd[k].float() / scale).to(torch.float8_e4m3fn)
            else:
                q, scale = quantize(sd[k])
            out[k] = q
            if fp8 == "scaled":
                out[f"{base}.scale_weight"] = scale
            else:
                out[f"{base}.weight_scale"] = scale
                out[f"{base}.comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
                out[f"{base}.input_scale"] = torch.ones(())
        if fp8 == "scaled":
            out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file({prefix + k: v.contiguous() for k, v in out.items()}, str(path))
    return Path(path)


def fp8_reference(model, plain=False):
    """The model with the weights an fp8 file of it holds, dequantised back to float32 (the exact target)."""
    ref = ref_like(model)
    sd = model.state_dict()
    if plain:
        new = {k: v.float().to(torch.float8_e4m3fn).float() for k, v in sd.items()}
    else:
        new = dict(sd)
        for i, k in enumerate(block_linears(sd)):
            if i == 0:
                scale = sd[k].abs().amax(dim=1, keepdim=True).float() / 448
                new[k] = (sd[k].float() / scale).to(torch.float8_e4m3fn).float() * scale
            else:
                q, s = quantize(sd[k])
                new[k] = q.float() * s
    ref.load_state_dict(new)
    return ref


def ref_like(model):
    m = type(model)(model.config).eval()
    m.load_state_dict(model.state_dict())
    return m


def diffusers_twin(model):
    import diffusers

    c = model.config
    d = diffusers.WanTransformer3DModel(
        patch_size=c.patch_size, num_attention_heads=c.num_heads, attention_head_dim=c.head_dim,
        in_channels=c.in_dim, out_channels=c.out_dim, text_dim=c.text_dim, freq_dim=c.freq_dim,
        ffn_dim=c.ffn_dim, num_layers=c.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=c.eps, image_dim=c.clip_dim if c.image_branch else None,
        added_kv_proj_dim=c.dim if c.image_branch else None).eval()
    d.load_state_dict({keymap.to_diffusers(k): v for k, v in model.state_dict().items()}, strict=True)
    return d


def write_diffusers_transformer(model, folder, shard=False) -> Path:
    diffusers_twin(model).save_pretrained(str(folder), safe_serialization=True,
                                          max_shard_size="200KB" if shard else "10GB")
    return Path(folder)


def write_release(folder, high, low=None, boundary_ratio=0.875, shift_key="shift", shift=5.0, shard=False) -> Path:
    """A diffusers release folder: model_index.json, transformer/ (high noise), transformer_2/ (low noise)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "WanPipeline", "_diffusers_version": "0.42.1",
             "transformer": ["diffusers", "WanTransformer3DModel"],
             "transformer_2": ["diffusers", "WanTransformer3DModel"] if low is not None else [None, None],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    if boundary_ratio is not None:
        index["boundary_ratio"] = boundary_ratio
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({shift_key: shift}))
    write_diffusers_transformer(high, folder / "transformer", shard)
    if low is not None:
        write_diffusers_transformer(low, folder / "transformer_2", shard)
    return folder


def write_original_expert(model, folder, shards=2) -> Path:
    """An original Wan expert folder: config.json (WanModel) + sharded safetensors with an index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "_diffusers_version": "0.33.0", "dim": c.dim, "ffn_dim": c.ffn_dim,
        "freq_dim": c.freq_dim, "in_dim": c.in_dim, "model_type": "t2v", "num_heads": c.num_heads,
        "num_layers": c.num_layers, "out_dim": c.out_dim, "text_len": c.text_len, "eps": c.eps}))
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    keys = list(sd)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: sd[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def write_pt(path, prefix="model.", **entries) -> Path:
    """A training checkpoint: {entry: {prefix + key: tensor}} for each model given, e.g. generator_ema=model."""
    obj = {name: {prefix + k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in entries.items()}
    obj["step"] = 1200
    torch.save(obj, str(path))
    return Path(path)


def run(model, seed=1, frames=3, start_frame=0):
    """A fixed forward pass; returns the velocity (float32)."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    x = torch.randn(1, c.in_dim, frames, 8, 8, generator=g)
    ctx = torch.randn(1, 7, c.text_dim, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([[700.0] * frames]), ctx, start_frame=start_frame).float()


def tiny_spiece(words: list[str], vocab_size: int) -> bytes:
    """A SentencePiece model trained in-process on rotations of `words` (umT5 ids: pad 0, eos 1, unk 2, no bos)."""
    import io

    import sentencepiece as spm

    sents = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sents), model_writer=buf, vocab_size=vocab_size, pad_id=0,
                                   eos_id=1, unk_id=2, bos_id=-1, model_type="unigram", hard_vocab_limit=False,
                                   minloglevel=2)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- LoRA files
LORA_FORMATS = ("original", "kohya", "diffusers", "peft")


def lora_factors(model, rank=4, seed=0, targets=None, scale=0.3) -> dict:
    """{param name: (up, down)} random factors for every Linear weight in the blocks, the head and the text
    embedding (or `targets`), plus the patch-embedding conv."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    names = targets or [k for k, v in sd.items() if k.endswith(".weight") and v.dim() == 2 and not
                        k.startswith("time_")] + ["patch_embedding.weight"]
    out = {}
    for k in names:
        shape = sd[k].shape
        up = torch.randn(shape[0], rank, generator=g) * scale
        down = torch.randn(rank, *shape[1:], generator=g) * scale
        out[k] = (up, down)
    return out


def write_lora(path, factors: dict, fmt="original", alpha=None, diffs=None, dtype=torch.float32) -> Path:
    """A LoRA file in one of the key formats in circulation for Wan.

    original: diffusion_model.<layer>.lora_down/lora_up.weight + .alpha; kohya: lora_unet_<layer with _>... +
    .alpha; diffusers: transformer.<diffusers layer>.lora_A/lora_B.weight (no alpha); peft:
    base_model.model.<layer>.lora_A.default.weight. diffs: {param: tensor} written as <layer>.diff / .diff_b."""
    out = {}
    for param, (up, down) in factors.items():
        layer = param[: -len(".weight")]
        if fmt == "original":
            base, a, b = f"diffusion_model.{layer}", "lora_down.weight", "lora_up.weight"
        elif fmt == "kohya":
            base, a, b = "lora_unet_" + layer.replace(".", "_"), "lora_down.weight", "lora_up.weight"
        elif fmt == "diffusers":
            base, a, b = "transformer." + keymap.to_diffusers(layer + ".")[:-1], "lora_A.weight", "lora_B.weight"
        elif fmt == "peft":
            base, a, b = f"base_model.model.{layer}", "lora_A.default.weight", "lora_B.default.weight"
        else:
            raise ValueError(fmt)
        out[f"{base}.{a}"], out[f"{base}.{b}"] = down.to(dtype), up.to(dtype)
        if alpha is not None and fmt in ("original", "kohya"):
            out[f"{base}.alpha"] = torch.tensor(float(alpha))
    for param, d in (diffs or {}).items():
        layer, _, name = param.rpartition(".")
        key = {"weight": f"{layer}.diff", "bias": f"{layer}.diff_b"}.get(name, f"{param}.diff")
        out[f"diffusion_model.{key}"] = d.to(dtype)
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return Path(path)


def merged_reference(model, uses) -> "torch.nn.Module":
    """The closed form: a copy of `model` with W + s * (alpha / r) * up @ down (+ s * diff) for each
    (strength, factors, alpha, diffs) in `uses`, computed in float64."""
    ref = ref_like(model)
    sd = {k: v.double() for k, v in model.state_dict().items()}
    for s, factors, alpha, diffs in uses:
        for k, (up, down) in factors.items():
            r = down.shape[0]
            sc = (alpha if alpha is not None else r) / r
            sd[k] = sd[k] + s * sc * (up.double() @ down.double().flatten(1)).reshape(sd[k].shape)
        for k, d in (diffs or {}).items():
            sd[k] = sd[k] + s * d.double().reshape(sd[k].shape)
    ref.load_state_dict({k: v.float() for k, v in sd.items()})
    return ref


def write_tiny_umt5(path, words: list[str], text_dim: int, vocab: int = 48) -> Path:
    """A ComfyUI-style umT5 file (no embed_tokens copy, SentencePiece model embedded as `spiece_model`)."""
    from transformers import UMT5Config, UMT5EncoderModel

    proto = tiny_spiece(words, vocab)
    torch.manual_seed(0)
    cfg = UMT5Config(vocab_size=vocab, d_model=text_dim, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0)
    sd = {k: v.contiguous() for k, v in UMT5EncoderModel(cfg).state_dict().items()
          if k != "encoder.embed_tokens.weight"}
    sd["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    save_file(sd, str(path))
    return Path(path)
