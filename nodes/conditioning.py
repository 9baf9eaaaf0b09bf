"""Text conditioning from ComfyUI sockets to the engine: CONDITIONING or a PromptList -> PromptSchedule.

ComfyUI's Wan text encoder (CLIPLoader type "wan" + CLIPTextEncode, ComfyUI 0.3.64) returns
CONDITIONING = [[tensor [B, L, 4096], {"pooled_output": None, ...}]] with L = max(512, tokens incl. the end
token): umT5 runs with an attention mask and the padded positions are zeroed. The original Wan pipeline trims
the text to its real tokens and zero-pads to 512, which the engine does too (CausalWanModel.pad_text), so here
the trailing zero rows are dropped and text longer than the model's text_len is cut, like Wan's tokenizer does.
"""
from __future__ import annotations

import logging

import torch

from ..causal.sampling.prompts import PromptChange, PromptSchedule
from .values import PromptEntry, PromptList

log = logging.getLogger("causalwan")


def conditioning_tensor(conditioning) -> torch.Tensor:
    """The text tensor [B, L, D] of a ComfyUI CONDITIONING, with a readable error for anything else."""
    if isinstance(conditioning, torch.Tensor):
        return conditioning
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError("expected a CONDITIONING (from CLIPTextEncode with a CLIPLoader of type 'wan'), got "
                         f"{type(conditioning).__name__}")
    if len(conditioning) > 1:
        raise ValueError(f"this CONDITIONING holds {len(conditioning)} prompts (from Conditioning Combine?); "
                         "CausalWan takes one text per CONDITIONING: use CausalWan Prompt Switch to change "
                         "prompts across chunks, or Conditioning Concat to join texts")
    entry = conditioning[0]
    tensor = entry[0] if isinstance(entry, (list, tuple)) else None
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
        raise ValueError("the CONDITIONING does not hold a text tensor [batch, tokens, channels]")
    return tensor


def to_context(text: torch.Tensor, text_len: int, batch: int = 1) -> torch.Tensor:
    """[B, L, D] -> [batch, n, D]: trailing zero (padding) rows dropped, cut to `text_len` tokens."""
    if text.dim() != 3:
        raise ValueError(f"text conditioning must be [batch, tokens, channels], got {list(text.shape)}")
    if not torch.isfinite(text).all():
        raise ValueError(f"the text conditioning holds {int((~torch.isfinite(text)).sum())} NaN or infinite values; "
                         "the text encoder (or a node after it) produced broken numbers: check its weights and dtype")
    used = (text.detach().abs().amax(dim=(0, 2)) > 0).nonzero()
    n = int(used[-1]) + 1 if len(used) else 1
    if n > text_len:
        log.warning("CausalWan: the prompt has %d tokens; the model reads the first %d", n, text_len)
        n = text_len
    text = text[:, :n]
    if text.shape[0] != batch:
        if text.shape[0] != 1:
            raise ValueError(f"the text has batch {text.shape[0]} but the video has batch {batch}")
        text = text.expand(batch, -1, -1)
    return text


def as_prompt_list(prompts) -> PromptList:
    """A PromptList, or a single CONDITIONING made into one (used from chunk 0 on)."""
    if isinstance(prompts, PromptList):
        return prompts
    return PromptList([PromptEntry(0, conditioning_tensor(prompts))])


def to_schedule(prompts: PromptList, text_len: int, batch: int, num_chunks: int,
                first_mode: str | None = None) -> PromptSchedule:
    """The engine's PromptSchedule for a run of `num_chunks`; raises if a switch would never happen.

    first_mode: override the switch mode of the chunk-0 prompt ("cut" for a fresh stream, where nothing but
    the start frame is cached yet).
    """
    changes = []
    for i, e in enumerate(prompts.entries):
        mode = first_mode if (i == 0 and first_mode) else e.mode
        changes.append(PromptChange(e.chunk, to_context(e.text, text_len, batch), mode=mode,
                                    blend_chunks=prompts.blend_chunks))
    schedule = PromptSchedule(changes)
    schedule.check(num_chunks)
    return schedule
