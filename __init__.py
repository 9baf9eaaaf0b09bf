"""CausalWan Stream: a ComfyUI node pack for streaming video with causal (chunk-autoregressive) Wan models.

Loaded by ComfyUI as a custom node folder, or imported as the ``causalwan`` package for tests and the CLI.
"""
try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as _err:  # nodes/ not built yet or a dependency is missing; the engine stays importable
    import logging as _logging

    _logging.getLogger(__name__).warning("CausalWan nodes unavailable: %s", _err)
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
