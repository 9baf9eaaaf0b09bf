"""What a training rollout is conditioned on: encoded prompts, the negative prompt, optional start latents."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F


def read_prompts(path) -> list[str]:
    """Prompts of a UTF-8 text file, one per non-empty line; a clear error for a missing, empty or binary file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file '{path}' does not exist")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise ValueError(f"prompts file '{path}' is not text (it holds binary data); give a UTF-8 text file with "
                         "one prompt per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"prompts file '{path}' is not UTF-8 text; save it as UTF-8 with one prompt per line") \
            from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompts file '{path}' has no prompts; write one prompt per line")
    return prompts


class PromptSet:
    """Encoded prompts [tokens, text_dim] each, the negative prompt, and start latents [1, C, 1, h, w] (image-to-
    video). Prompts and start images are drawn independently, so every pairing occurs."""

    def __init__(self, contexts: list[torch.Tensor], negative: torch.Tensor, starts: list[torch.Tensor] | None = None):
        if not contexts:
            raise ValueError("no prompts to train on; give at least one prompt")
        dims = {c.shape[-1] for c in contexts} | {negative.shape[-1]}
        if len(dims) != 1 or any(c.dim() != 2 for c in [*contexts, negative]):
            raise ValueError(f"prompt embeddings must all be [tokens, text_dim] with one text_dim, got "
                             f"{sorted({tuple(c.shape) for c in [*contexts, negative]})}")
        self.contexts, self.negative, self.starts = contexts, negative, starts or None
        self.text_dim = dims.pop()

    def __len__(self) -> int:
        return len(self.contexts)

    @staticmethod
    def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
        if x.shape[0] > n:
            raise ValueError(f"a prompt has {x.shape[0]} tokens; the model takes at most {n}")
        return F.pad(x.float(), (0, 0, 0, n - x.shape[0]))

    def batch(self, indices: list[int], text_len: int, device=None, start_indices: list[int] | None = None):
        """(contexts [B, text_len, D], negative [B, text_len, D], start latents [B, C, 1, h, w] or None): prompt
        indices[b] and start image start_indices[b] (each taken modulo its count; default: the prompt indices)."""
        ctx = torch.stack([self._pad(self.contexts[i % len(self)], text_len) for i in indices]).to(device)
        neg = self._pad(self.negative, text_len).expand(len(indices), -1, -1).to(device)
        start = None
        if self.starts:
            picks = indices if start_indices is None else start_indices
            start = torch.cat([self.starts[i % len(self.starts)] for i in picks]).to(device, torch.float32)
        return ctx, neg, start


def encode_prompt_set(encoder, prompts: list[str], negative_prompt: str,
                      starts: list[torch.Tensor] | None = None) -> PromptSet:
    """A PromptSet of `prompts` and the negative prompt encoded by `encoder` (TextEncoder), kept fp32 on the CPU
    (a batch moves to the device when drawn), with optional start latents."""
    contexts = [c.float().cpu() for c in encoder.encode(prompts)]
    negative = encoder.encode([negative_prompt])[0].float().cpu()
    return PromptSet(contexts, negative, starts)
