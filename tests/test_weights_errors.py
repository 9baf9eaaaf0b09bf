"""Bad weights get errors that name the file, what was expected, what was found, and the fix; nothing loads
half-way."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from causalwan.causal.weights import loader as weights
from causalwan.causal.weights.checkpoint_files import WeightsError, open_file
from causalwan.causal.weights.loader import load_experts, load_transformer
from weight_writers import ref_model, write_comfy, write_pt, write_release


@pytest.fixture(scope="module")
def model():
    return ref_model(seed=5)


@pytest.fixture()
def good(tmp_path, model):
    return write_comfy(model, tmp_path / "good.safetensors")


def test_truncated_and_garbage_safetensors(tmp_path, good):
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as e:
        load_transformer(cut)
    assert str(cut) in str(e.value) and "download it again" in str(e.value)
    html = tmp_path / "page.safetensors"
    html.write_bytes(b"<!DOCTYPE html><html>rate limited</html>" * 4)
    with pytest.raises(WeightsError, match="page.safetensors.* is a web page or an error message, not weights"):
        load_transformer(html)


def test_truncated_torch_checkpoint(tmp_path, model):
    path = write_pt(tmp_path / "ckpt.pt", generator_ema=model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match=r"could not read '.*ckpt.pt' as a torch checkpoint.*truncated or corrupt"):
        load_transformer(path)


class Payload:
    """A pickle that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_would_run_code_is_refused(tmp_path, model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"generator": {k: v for k, v in model.state_dict().items()}, "hook": Payload(marker)}, str(path))
    with pytest.raises(WeightsError, match="refused to load") as e:
        load_transformer(path)
    assert "could run code" in str(e.value) and "safetensors" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("keys, looks_like", [
    ({"input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.1.0.in_layers.0.weight": (320,),
      "middle_block.0.in_layers.0.weight": (1280,), "out.2.weight": (4, 320, 3, 3)}, "Stable Diffusion style UNet"),
    ({"encoder.conv1.weight": (96, 3, 3, 3, 3), "decoder.conv1.weight": (384, 16, 3, 3, 3),
      "conv2.weight": (16, 16, 1, 1, 1)}, "a VAE"),
    ({"encoder.block.0.layer.0.SelfAttention.q.weight": (64, 64), "shared.weight": (100, 64),
      "encoder.final_layer_norm.weight": (64,)}, "text encoder"),
    ({"patch_embedding.proj.weight": (64, 16, 1, 2, 2), "blocks.0.to_q.weight": (64, 64)}, "FastVideo's internal"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": (8, 64),
      "diffusion_model.blocks.0.self_attn.q.lora_B.weight": (64, 8)}, "a LoRA"),
])
def test_file_of_another_model_family(tmp_path, keys, looks_like):
    path = tmp_path / "other.safetensors"
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(path))
    with pytest.raises(WeightsError, match="is not a Wan video transformer") as e:
        load_transformer(path)
    assert looks_like in str(e.value) and "other.safetensors" in str(e.value)


def test_missing_unexpected_and_misshapen_keys(tmp_path, model):
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    del sd["blocks.1.ffn.2.bias"]
    sd["blocks.0.self_attn.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.safetensors"
    save_file(sd, str(path))
    with pytest.raises(WeightsError) as e:
        load_transformer(path)
    msg = str(e.value)
    assert "broken.safetensors" in msg and "dim 256, 2 layers, 2 heads, ffn 64" in msg
    assert "1 missing keys (first: 'blocks.1.ffn.2.bias')" in msg
    assert "1 unexpected keys (first: 'blocks.0.self_attn.extra.weight')" in msg
    good = tmp_path / "ok.safetensors"
    write_comfy(model, good)
    # an explicit config wins, then the shapes disagree
    with pytest.raises(WeightsError, match=r"6 wrong shapes \(first: 'blocks.0.ffn.0.weight \[64, 256\] "
                                           r"\(expected \[128, 256\]\)'"):
        load_transformer(good, config={"ffn_dim": 128})


def test_nothing_is_read_when_the_check_fails(tmp_path, model, monkeypatch):
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    del sd["head.modulation"]
    path = tmp_path / "partial.safetensors"
    save_file(sd, str(path))
    reads = []
    real = open_file

    def counting(*a, **kw):
        src = real(*a, **kw)
        inner, inner_chunks = src._read, src._chunks
        src._read = lambda k: reads.append(k) or inner(k)
        src._chunks = lambda k: reads.append(k) or inner_chunks(k)
        return src

    monkeypatch.setattr(weights, "open_file", counting)
    with pytest.raises(WeightsError, match="missing keys.*head.modulation"):
        load_transformer(path)
    assert reads == []  # the whole checkpoint is checked from its header before any tensor data is read


def test_pair_with_different_shapes_names_both_files(tmp_path):
    a = write_comfy(ref_model(seed=0), tmp_path / "wan_high.safetensors")
    b = write_comfy(ref_model(seed=1, num_layers=3, ffn_dim=128), tmp_path / "wan_low.safetensors")
    with pytest.raises(WeightsError) as e:
        load_experts(high=a, low=b)
    msg = str(e.value)
    assert "wan_high.safetensors" in msg and "wan_low.safetensors" in msg
    assert "ffn_dim 64 vs 128" in msg and "num_layers 2 vs 3" in msg


def test_release_folder_missing_transformer_2(tmp_path, model):
    folder = write_release(tmp_path / "release", model, model)
    import shutil
    shutil.rmtree(folder / "transformer_2")
    with pytest.raises(WeightsError, match="no transformer_2/ subfolder with the low-noise expert"):
        load_experts(folder=folder)
    with pytest.raises(WeightsError, match="holds two experts"):
        load_transformer(folder)


def test_release_folder_missing_shard(tmp_path, model):
    folder = write_release(tmp_path / "release", model, None, boundary_ratio=None, shard=True)
    shard = sorted((folder / "transformer").glob("*-00002-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(WeightsError, match=f"lists the shard '{shard.name}', which is missing"):
        load_experts(folder=folder)


def test_heads_cannot_be_inferred_without_a_config(tmp_path):
    m = ref_model(dim=32, text_len=16)  # 2 heads of 16: not the released head dim
    path = write_comfy(m, tmp_path / "small.safetensors", dtype=torch.float32)
    with pytest.raises(WeightsError, match=r"dim 32 is not a multiple of the head dim 128.*config=\{'num_heads': N\}"):
        load_transformer(path)
    loaded = load_transformer(path, config={"num_heads": 2, "text_len": 16})
    assert loaded.config == m.config


def test_config_json_that_contradicts_the_weights(tmp_path, model):
    folder = write_release(tmp_path / "r", model, None, boundary_ratio=None)
    cfg_path = folder / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_layers"] = 4
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="config says num_layers=4 but the tensors have num_layers=2"):
        load_transformer(folder)


def test_bad_arguments(tmp_path, good, model):
    with pytest.raises(WeightsError, match="does not exist"):
        load_transformer(tmp_path / "nope.safetensors")
    gguf = tmp_path / "wan-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(WeightsError, match="GGUF quantisation is not supported"):
        load_transformer(gguf)
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        load_transformer(good, dtype="int4")
    with pytest.raises(ValueError, match="only a high-noise expert was given"):
        load_experts(high=good)
    with pytest.raises(ValueError, match="either folder= or high=/low="):
        load_experts(folder=tmp_path, low=good)
    pt = tmp_path / "other.pt"
    torch.save({"optimizer": {"lr": 1e-5}, "step": 3}, str(pt))
    with pytest.raises(WeightsError, match=r"holds no tensors.*'optimizer', 'step'.*state_key"):
        load_transformer(pt)
    with pytest.raises(WeightsError, match="has no entry 'generator_ema'"):
        load_transformer(write_pt(tmp_path / "g.pt", generator=model), state_key="generator_ema")
