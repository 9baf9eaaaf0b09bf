"""The umT5 tokenizer, from wherever the user's files keep it.

The tokenizer is not on any package registry; it ships with the weights:
- a folder with `tokenizer.json` (diffusers `tokenizer/`, the original release's `google/umt5-xxl/`): read by
  transformers' AutoTokenizer, as the Wan and diffusers pipelines do;
- a SentencePiece model: `spiece.model` in such a folder, or the `spiece_model` uint8 tensor that ComfyUI's umT5
  files embed; read by sentencepiece directly, as ComfyUI does (ids + end-of-sequence, no start token).
Both give ids of the text followed by </s> (id 1), padded with <pad> (id 0) to `max_length`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint_files import WeightsError


class UMT5Tokenizer:
    """prompts -> (input_ids [B, max_length], attention_mask [B, max_length])."""

    def __init__(self, encode_batch, source: str):
        self._encode_batch = encode_batch
        self.source = source

    def __call__(self, prompts: list[str], max_length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode_batch(list(prompts), max_length)

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_folder(cls, folder) -> "UMT5Tokenizer":
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(str(folder))
            except Exception as e:
                raise WeightsError(f"could not read the tokenizer in '{folder}': {type(e).__name__}: {e}") from e

            def encode(prompts, max_length):
                out = tok(prompts, padding="max_length", max_length=max_length, truncation=True,
                          add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
                return out["input_ids"], out["attention_mask"]

            return cls(encode, str(folder))
        if (folder / "spiece.model").is_file():
            return cls.from_sentencepiece((folder / "spiece.model").read_bytes(), str(folder / "spiece.model"))
        raise WeightsError(f"'{folder}' holds no tokenizer (neither tokenizer.json nor spiece.model)")

    @classmethod
    def from_sentencepiece(cls, model_proto: bytes | torch.Tensor, source: str = "spiece_model") -> "UMT5Tokenizer":
        import sentencepiece

        if isinstance(model_proto, torch.Tensor):
            model_proto = model_proto.to(torch.uint8).numpy().tobytes()
        try:
            sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except Exception as e:
            raise WeightsError(f"could not read the SentencePiece model {source}: {type(e).__name__}: {e}") from e
        pad, eos = max(sp.pad_id(), 0), sp.eos_id()
        if eos < 0:
            raise WeightsError(f"the SentencePiece model {source} has no end-of-sequence token; it is not umT5's")

        def encode(prompts, max_length):
            ids = torch.full((len(prompts), max_length), pad, dtype=torch.long)
            mask = torch.zeros((len(prompts), max_length), dtype=torch.long)
            for i, p in enumerate(prompts):
                row = sp.encode(p)[: max_length - 1] + [eos]
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            return ids, mask

        return cls(encode, source)
