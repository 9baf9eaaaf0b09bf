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
    assert spec["diffusers_folder"][0] == ["none", FOLDER, "tinyworld/"]
    assert CausalWanVAELoader.INPUT_TYPES()["required"]["vae_name"][0] == ["tiny_vae.safetensors", FOLDER,
                                                                          "tinyworld/"]
    assert adapter.get_full_path("diffusion_models", FOLDER) == str(models / "diffusion_models" / FOLDER[:-1])
    with pytest.raises(FileNotFoundError, match="'gone.safetensors' was not found in the vae folders"):
        adapter.get_full_path("vae", "gone.safetensors")


@pytest.mark.parametrize("major,expected", [(8, torch.bfloat16), (7, torch.float16)])
def test_auto_weight_dtype_computes_fp32_files_in_half_precision_on_cuda(models, monkeypatch, major, expected):
    from causalwan.causal.weights import loader

    # device 0 has (major, 0); device 1 is a T4 (7.5), device 2 an A100 (8.0); torch's is_bf16_supported says yes
    # on all of them (it counts emulated bf16), so it must not decide
    capability = {0: (major, 0), 1: (7, 5), 2: (8, 0)}
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability[
        torch.device(d).index if d is not None and torch.device(d).index is not None else 0])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert loader.auto_float_dtype("cuda") == expected and loader.auto_float_dtype("cpu") == torch.float32
    assert loader.auto_float_dtype("cuda:1") == torch.float16 and loader.auto_float_dtype("cuda:2") == torch.bfloat16
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
