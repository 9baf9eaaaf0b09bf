"""Big node outputs are released when the same node runs again.

ComfyUI keeps every node's last output until that node runs again, and the new output is made while the old one
is still held: a re-queued model loader would hold two copies of a 14B expert, a re-queued sampler two sets of
KV caches. With ComfyUI's default cache a node's old output is obsolete as soon as the node runs again, so each
node here releases what it returned last time (per node id) before it builds the new one. Without a node id
(plain Python, tests, the CLI) nothing is tracked. Under ComfyUI's --cache-lru / --cache-ram caches an older
output can be served again to a later prompt, so nothing is released there (the cache itself evicts).

Outputs are remembered by weak reference: once ComfyUI drops a stale output (at the start of a prompt it drops
every output the new prompt cannot reuse, e.g. a Continue's after its upstream sampler got a new seed), nothing
here keeps it, so its caches are gone before the upstream node runs again.
"""
from __future__ import annotations

import weakref

from . import comfy_adapter as adapter

_held: dict[tuple[str, str], weakref.ref] = {}


def release_previous(kind: str, node_id) -> None:
    """Release the object this node returned last time (its `release()`), if any."""
    if node_id is None or adapter.keeps_old_outputs():
        return
    ref = _held.pop((kind, str(node_id)), None)
    old = ref() if ref is not None else None
    if old is not None:
        old.release()


def remember(kind: str, node_id, obj) -> None:
    if node_id is not None:
        _held[(kind, str(node_id))] = weakref.ref(obj)

