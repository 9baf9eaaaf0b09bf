"""The loaders list the tiny model files and folders of the models folder."""
import pytest

from causalwan.nodes import comfy_adapter as adapter
from causalwan.nodes.model_loader import CausalWanModelLoader
from causalwan.nodes.vae_loader import CausalWanVAELoader
from node_models import FOLDER


def test_loaders_list_the_files_and_folders(models):
    spec = CausalWanModelLoader.INPUT_TYPES()["required"]
    files = spec["high_noise_model"][0]
    assert files == ["none", "not_a_model.safetensors", "tiny_dense.safetensors", "tiny_high.safetensors",
                     "tiny_low.safetensors", "tiny_wide_low.safetensors"]  # nothing from inside the folder
    assert spec["diffusers_folder"][0] == ["none", FOLDER]
    assert CausalWanVAELoader.INPUT_TYPES()["required"]["vae_name"][0] == ["tiny_vae.safetensors", FOLDER]
    assert adapter.get_full_path("diffusion_models", FOLDER) == str(models / "diffusion_models" / FOLDER[:-1])
    with pytest.raises(FileNotFoundError, match="'gone.safetensors' was not found in the vae folders"):
        adapter.get_full_path("vae", "gone.safetensors")
