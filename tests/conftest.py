"""Test-session settings and shared fixtures.

Tiny models run fastest on one thread (threading overhead outweighs the work)."""
import pytest
import torch

from causalwan.nodes import comfy_adapter as adapter
from node_models import write_models

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def models(models_root):
    """The tiny models folder as the adapter's folders; listeners and interrupts are reset around each test."""
    adapter.set_models_dir(models_root)
    adapter.clear_listeners()
    adapter._interrupt.clear()
    yield models_root
    adapter.set_model_folders(None)
    adapter.clear_listeners()
    adapter._interrupt.clear()
