"""The loaders list the tiny model files and folders of the models folder."""
import pytest
import torch

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


@pytest.mark.parametrize("bf16,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_weight_dtype_computes_fp32_files_in_half_precision_on_cuda(models, monkeypatch, bf16, expected):
    from causalwan.causal.weights import loader

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)  # a GPU with or without bf16
    assert loader.auto_float_dtype("cuda") == expected and loader.auto_float_dtype("cpu") == torch.float32
    path = adapter.get_full_path("diffusion_models", "tiny_dense.safetensors")  # a float32 file
    assert loader.load_experts(low=path).low.dtype == torch.float32
    assert loader.load_experts(low=path, float_dtype=expected).low.dtype == expected
    assert loader.load_experts(low=path, dtype="fp32", float_dtype=expected).low.dtype == torch.float32

    class Seen(Exception):
        pass

    def fake_load(**kw):  # what the node asks for on a CUDA machine (nothing is loaded onto a real GPU here)
        raise Seen(kw["float_dtype"], kw["dtype"])

    monkeypatch.setattr(loader, "load_experts", fake_load)
    monkeypatch.setattr(adapter, "torch_device", lambda: torch.device("cuda", 0))
    with pytest.raises(Seen) as seen:
        CausalWanModelLoader().load("none", "tiny_dense.safetensors", "none", "auto", offload="swap")
    assert seen.value.args == (expected, None)
