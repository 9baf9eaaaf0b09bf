"""What an offload policy has on the compute device, recorded at every load, eviction and compute step.

The log is how an offload mode proves its promise: `peak_blocks` is the most transformer blocks that were on
(or being copied to) the compute device at once, `peak_experts` the most experts with blocks there at once, and
`peak_bytes` the most weight bytes. It works the same on CPU, where compute and storage are one device and only
the bookkeeping (plus a real copy of every loaded tensor) tells the two apart.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    event: str  # "load", "evict", "compute" (a block forward) or "cross" (a block's cross-attention cache)
    expert: str
    block: int  # -1: the expert's non-block weights (embeddings, head)
    blocks: tuple  # ((expert, block), ...) block weights on the compute device after the event
    nbytes: int  # weight bytes on the compute device after the event


class ResidencyLog:
    """Peaks since creation plus the most recent `keep` snapshots."""

    def __init__(self, keep: int = 10_000):
        self.snapshots: deque[Snapshot] = deque(maxlen=keep)
        self.peak_blocks = 0
        self.peak_experts = 0
        self.peak_bytes = 0
        self.loads = 0
        self.bytes_copied = 0
        self.compute_steps = 0

    def record(self, event: str, expert: str, block: int, blocks, nbytes: int) -> None:
        blocks = tuple(sorted(blocks))
        self.snapshots.append(Snapshot(event, expert, block, blocks, nbytes))
        self.peak_blocks = max(self.peak_blocks, len(blocks))
        self.peak_experts = max(self.peak_experts, len({e for e, _ in blocks}))
        self.peak_bytes = max(self.peak_bytes, nbytes)
        if event == "compute":
            self.compute_steps += 1

    def count_load(self, nbytes: int) -> None:
        self.loads += 1
        self.bytes_copied += nbytes

    def compute_snapshots(self) -> list[Snapshot]:
        return [s for s in self.snapshots if s.event in ("compute", "cross")]

    def summary(self) -> dict:
        return {"peak_blocks": self.peak_blocks, "peak_experts": self.peak_experts, "peak_bytes": self.peak_bytes,
                "loads": self.loads, "bytes_copied": self.bytes_copied, "compute_steps": self.compute_steps}
