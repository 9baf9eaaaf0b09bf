"""Stage 2: a tiny umT5 text encoder and its SentencePiece model, over the world's captions.

The encoder is transformers' UMT5EncoderModel with frozen seeded random weights (the DiT learns to read them);
the tokenizer is a SentencePiece model trained on the 32 captions. Both are written as a diffusers release
keeps them (text_encoder/ config.json + model.safetensors, tokenizer/spiece.model), so the pack's own loader
(causal/weights/text_encoder.py) reads them back.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from .world import all_captions

D_MODEL = 32


def train_spiece(sentences: list[str], vocab_size: int = 48) -> bytes:
    """umT5 ids: pad 0, eos 1, unk 2, no bos."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences * 10), model_writer=buf, vocab_size=vocab_size,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="word",
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2,
                                   normalization_rule_name="identity")
    return buf.getvalue()


def build_text_encoder(folder: Path, seed: int) -> None:
    """Write text_encoder/ and tokenizer/ under `folder`."""
    from transformers import UMT5Config, UMT5EncoderModel

    proto = train_spiece(all_captions())
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer" / "spiece.model").write_bytes(proto)
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
    torch.manual_seed(seed)
    cfg = UMT5Config(vocab_size=vocab, d_model=D_MODEL, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = UMT5EncoderModel(cfg).eval()
    model.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)


def encode_captions(folder: Path) -> dict[str, torch.Tensor]:
    """Every caption's embedding [tokens, d_model] (and the empty prompt's), through the pack's own loader."""
    from ..causal.weights.text_encoder import load_text_encoder

    enc = load_text_encoder(folder, dtype=torch.float32)
    caps = all_captions() + [""]
    return dict(zip(caps, enc.encode(caps)))
