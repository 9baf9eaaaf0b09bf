"""Text a node shows on itself in the graph editor, without any wiring: ComfyUI sends a node's "ui" dict to
the browser in the "executed" message (also when the output comes from its cache), and web/node_text.js puts
its "text" in a read-only panel on the node, as core's Preview Any does."""
from __future__ import annotations


def with_text(result: tuple, *lines: str) -> dict:
    """A node's return value: the outputs `result` plus `lines` (empty ones left out) shown on the node."""
    return {"ui": {"text": ["\n".join(line for line in lines if line)]}, "result": tuple(result)}
