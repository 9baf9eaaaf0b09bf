"""CausalWan Stream: a ComfyUI node pack for streaming video with causal (chunk-autoregressive) Wan models.

Loaded by ComfyUI as a custom node folder, or imported as the ``causalwan`` package for tests and the CLI. The
node mappings are imported when first read (ComfyUI reads them right after importing the pack), so the command
line and the engine start without the nodes, and the command line sees every import it makes (a Ctrl-C while
torch loads ends in its own one line).
"""
WEB_DIRECTORY = "./web"
_MAPPINGS = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")

__all__ = [*_MAPPINGS, "WEB_DIRECTORY"]


def __getattr__(name: str):
    if name not in _MAPPINGS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    except ImportError as err:  # a dependency is missing; the engine stays importable
        import logging

        logging.getLogger(__name__).warning("CausalWan nodes unavailable: %s", err)
        NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
    globals().update(NODE_CLASS_MAPPINGS=NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS=NODE_DISPLAY_NAME_MAPPINGS)
    return globals()[name]
