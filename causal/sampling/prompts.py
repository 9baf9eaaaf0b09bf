"""A prompt schedule: which text conditions the stream from which chunk on, and how each switch happens."""
from __future__ import annotations

from dataclasses import dataclass

import torch

SWITCH_MODES = ("cut", "recache", "blend")


@dataclass
class PromptChange:
    """Text that takes over at `chunk` (counted from the first chunk of a run, starting at 0).

    mode: "cut" changes only the cross-attention cache; "recache" also re-runs the cached clean frames under
    the new text (LongLive's KV re-cache); "blend" moves linearly from the previous text to this one over
    `blend_chunks` chunks.
    """

    chunk: int
    context: torch.Tensor
    mode: str = "cut"
    clip_fea: torch.Tensor | None = None
    blend_chunks: int = 2

    def __post_init__(self):
        if self.mode not in SWITCH_MODES:
            raise ValueError(f"unknown prompt switch mode {self.mode!r}; choose one of {SWITCH_MODES}")
        if self.chunk < 0:
            raise ValueError(f"a prompt cannot start at chunk {self.chunk}; chunks are counted from 0")
        if self.mode == "blend" and self.blend_chunks < 1:
            raise ValueError(f"blend_chunks must be at least 1, got {self.blend_chunks}")


class PromptSchedule:
    """Ordered prompt changes of one run; the first one may start at chunk 0 (the initial prompt)."""

    def __init__(self, changes):
        changes = sorted(changes, key=lambda c: c.chunk)
        if not changes:
            raise ValueError("the prompt list is empty; connect at least one prompt (CONDITIONING)")
        seen = [c.chunk for c in changes]
        if len(set(seen)) != len(seen):
            raise ValueError(f"two prompts start at the same chunk ({seen}); give each prompt its own chunk")
        self.changes = changes

    @classmethod
    def single(cls, context: torch.Tensor, clip_fea: torch.Tensor | None = None) -> "PromptSchedule":
        return cls([PromptChange(0, context, clip_fea=clip_fea)])

    def check(self, num_chunks: int) -> None:
        """Raise when a switch would never happen in a run of `num_chunks` chunks."""
        late = [(i + 1, c.chunk) for i, c in enumerate(self.changes) if c.chunk >= num_chunks]
        if late:
            which, chunk = late[0]
            raise ValueError(f"prompt {which} starts at chunk {chunk}, but this run makes only {num_chunks} chunks "
                             f"(0 to {num_chunks - 1}): that switch never comes; make more chunks or lower that "
                             f"prompt's start chunk")

    def at(self, chunk: int) -> PromptChange | None:
        return next((c for c in self.changes if c.chunk == chunk), None)
