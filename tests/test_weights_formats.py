"""Every weights format users have, written from a tiny expert, loads through one entry point to the same model."""
import json

from safetensors.torch import save_file

import pytest
import torch

from causalwan.causal.weights import loader as weights
from causalwan.causal.weights.checkpoint_files import open_file
from causalwan.causal.model.config import A14B, WAN_1_3B, WanConfig
from causalwan.causal.weights.infer_config import from_shapes, combine
from causalwan.causal.model.transformer import CausalWanModel
from causalwan.causal.weights.loader import detect_format, load_experts, load_transformer
from weight_writers import (REF, ref_model, run, write_comfy, write_diffusers_transformer, write_original_expert,
                            write_pt, write_release)

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def pair():
    return ref_model(seed=0), ref_model(seed=1)  # high, low


def same(a, b, tol=0.0):
    out_a, out_b = run(a), run(b)
    assert out_a.shape == (1, 16, 3, 8, 8)
    assert out_a.abs().mean() > 0.1
    assert (out_a - out_b).abs().max().item() <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_comfy_single_file(tmp_path, pair, dtype, prefix):
    m = pair[0]
    path = write_comfy(m, tmp_path / "wan.safetensors", dtype=dtype, prefix=prefix)
    assert detect_format(path) == "comfy_single_file"
    loaded = load_transformer(path)
    assert loaded.config == m.config  # every size inferred from shapes, heads from the 128 head dim
    assert loaded.dtype == dtype and all(p.dtype == dtype for p in loaded.parameters())
    assert not any(p.is_meta for p in loaded.parameters())
    ref = CausalWanModel(m.config).eval()
    ref.load_state_dict({k: v.to(dtype).float() for k, v in m.state_dict().items()})
    # same weights; a bf16/fp16 model computes its linears in that dtype, so compare against fp32 loosely
    same(load_transformer(path, dtype=torch.float32), ref)
    if dtype != torch.float32:
        rel = (run(loaded) - run(ref)).norm() / run(ref).norm()
        assert rel < 0.03


def test_diffusers_transformer_folder_single_and_sharded(tmp_path, pair):
    m = pair[0]
    one = write_diffusers_transformer(m, tmp_path / "one")
    many = write_diffusers_transformer(m, tmp_path / "many", shard=True)
    assert (many / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list(many.glob("*.safetensors"))) > 1
    for folder in (one, many):
        assert detect_format(folder) == "diffusers_transformer"
        loaded = load_transformer(folder)
        assert loaded.config == m.config
        same(loaded, m)
    index = many / "diffusion_pytorch_model.safetensors.index.json"
    assert detect_format(index) == "sharded_safetensors"
    same(load_transformer(index), m)


def test_diffusers_release_folder_pair(tmp_path, pair):
    high, low = pair
    folder = write_release(tmp_path / "CausalWan2.2-I2V-A14B-Diffusers", high, low, boundary_ratio=0.875,
                           shift_key="flow_shift", shift=12.0)
    assert detect_format(folder) == "diffusers_folder"
    experts = load_experts(folder=folder)
    assert experts.boundary == 875.0 and experts.shift == 12.0
    assert experts.share_cross_cache is True  # the release samples with one shared cross-attention cache
    same(experts.high, high)  # transformer/ is the high-noise expert
    same(experts.low, low)
    assert (run(experts.high) - run(experts.low)).abs().max() > 1e-2
    # explicit arguments win over the shipped config
    experts = load_experts(folder=folder, boundary=900, shift=5, share_cross_cache=False)
    assert (experts.boundary, experts.shift, experts.share_cross_cache) == (900, 5.0, False)


def test_pair_folder_without_boundary_ratio_takes_the_given_boundary_or_the_release_one(tmp_path, pair):
    high, low = pair
    folder = write_release(tmp_path / "pair", high, low, boundary_ratio=None)
    assert load_experts(folder=folder, boundary=900).boundary == 900.0  # --boundary / the node's boundary
    experts = load_experts(folder=folder)
    assert experts.high is not None and experts.boundary == 875.0  # as for two files: the A14B release's
    same(experts.high, high)


def test_diffusers_release_folder_dense_and_scheduler_shift(tmp_path, pair):
    folder = write_release(tmp_path / "dense", pair[0], None, boundary_ratio=None, shift_key="shift", shift=3.0)
    experts = load_experts(folder=folder)
    assert experts.high is None and experts.boundary is None and experts.shift == 3.0
    assert experts.share_cross_cache is False
    same(experts.low, pair[0])
    same(load_transformer(folder), pair[0])  # a one-expert release folder is also a transformer


def test_original_folder_pair_sharded(tmp_path, pair):
    high, low = pair
    root = tmp_path / "orig"
    write_original_expert(high, root / "high_noise_model")
    write_original_expert(low, root / "low_noise_model")
    assert detect_format(root) == "original_folder"
    assert detect_format(root / "high_noise_model") == "original_folder"
    experts = load_experts(folder=root, dtype=torch.float32)
    assert experts.boundary == weights.CAUSALWAN_A14B_BOUNDARY == 875.0 and experts.shift == 5.0
    for got, want in ((experts.high, high), (experts.low, low)):
        ref = CausalWanModel(want.config).eval()
        ref.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in want.state_dict().items()})
        same(got, ref)


def test_original_folder_config_json_gives_heads_and_text_len(tmp_path):
    # dim 32 is not a multiple of 128: the heads come from the shipped config.json, as do text_len
    m = ref_model(dim=32, num_heads=4, text_len=16)
    folder = write_original_expert(m, tmp_path / "dense", shards=1)
    loaded = load_transformer(folder, dtype=torch.float32)
    assert loaded.config.num_heads == 4 and loaded.config.text_len == 16
    ref = CausalWanModel(m.config).eval()
    ref.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in m.state_dict().items()})
    same(loaded, ref)


def test_torch_checkpoint_generator_ema_with_model_prefix(tmp_path, pair):
    ema, gen = pair
    path = write_pt(tmp_path / "self_forcing_dmd.pt", generator=gen, generator_ema=ema)
    assert detect_format(path) == "torch_checkpoint"
    same(load_transformer(path), ema)  # generator_ema wins over generator
    same(load_transformer(path, state_key="generator"), gen)
    experts = load_experts(low=path)  # a dense Self-Forcing checkpoint
    assert experts.high is None and experts.boundary is None
    same(experts.low, ema)


def test_two_single_files_make_a_pair(tmp_path, pair):
    high, low = pair
    h = write_comfy(high, tmp_path / "high.safetensors", dtype=torch.float32)
    lo = write_comfy(low, tmp_path / "low.safetensors", dtype=torch.float32, prefix="")
    experts = load_experts(high=h, low=lo)
    assert experts.boundary == 875.0 and experts.shift == 5.0 and experts.share_cross_cache is True
    same(experts.high, high)
    same(experts.low, low)
    experts = load_experts(high=h, low=lo, boundary=900.0, shift=8.0)
    assert (experts.boundary, experts.shift) == (900.0, 8.0)


def test_diffusers_named_single_file(tmp_path, pair):
    from safetensors.torch import save_file

    from causalwan.causal.weights import keymap
    m = pair[0]
    path = tmp_path / "diffusers_named.safetensors"
    save_file({keymap.to_diffusers(k): v.contiguous() for k, v in m.state_dict().items()}, str(path))
    assert detect_format(path) == "diffusers_single_file"
    same(load_transformer(path), m)


def test_bundle_checkpoint_keeps_only_the_transformer(tmp_path, pair):
    m = pair[0]
    sd = {"model.diffusion_model." + k: v.contiguous() for k, v in m.state_dict().items()}
    sd["first_stage_model.encoder.conv1.weight"] = torch.zeros(8, 3, 3, 3, 3)  # the bundled VAE
    sd["cond_stage_model.shared.weight"] = torch.zeros(10, 4)  # and text encoder
    save_file(sd, str(tmp_path / "all_in_one.safetensors"))
    same(load_transformer(tmp_path / "all_in_one.safetensors"), m)
    # a stray key beside the DiT under another prefix is not silently dropped
    sd = {"model." + k: v.contiguous() for k, v in m.state_dict().items()}
    sd["ema.decay"] = torch.tensor(0.99)
    save_file(sd, str(tmp_path / "stray.safetensors"))
    with pytest.raises(weights.WeightsError, match="1 unexpected keys \\(first: 'ema.decay'\\)"):
        load_transformer(tmp_path / "stray.safetensors")


def test_config_inferred_from_shapes_of_released_models():
    for cfg in (A14B, WAN_1_3B, WanConfig(in_dim=36, image_branch=True, clip_dim=1280, num_layers=2)):
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in CausalWanModel(cfg).state_dict().items()}
        assert combine(from_shapes(shapes, "x"), None, None, "x") == cfg
    got = combine(from_shapes(shapes, "x"), None, {"num_heads": 20, "text_len": 256}, "x")
    assert got.num_heads == 20 and got.text_len == 256  # an explicit config wins over the head-dim rule


def test_load_reads_each_tensor_once_and_assigns_without_copy(tmp_path, pair):
    m = pair[0]
    path = write_comfy(m, tmp_path / "w.safetensors", dtype=torch.float32)
    src = weights.to_original_names(open_file(path))
    reads = {}
    inner = src._read

    def counting(k):
        assert k not in reads, f"{k} read twice"
        reads[k] = inner(k)
        return reads[k]

    src._read = counting
    from causalwan.causal.weights import assemble
    cfg = combine(from_shapes(src.shapes, src.path), None, None, src.path)
    model = assemble.build(cfg, src, torch.float32)
    assert sorted(reads) == sorted(m.state_dict())
    # with the file's dtype the parameter IS the (memory-mapped) tensor the reader returned: no second copy
    w = model.blocks[0].ffn[0].weight
    assert w.data_ptr() == reads["blocks.0.ffn.0.weight"].data_ptr()
    assert not model.blocks[0].ffn[0].weight.requires_grad


def test_chunked_reads_equal_whole_reads(tmp_path, monkeypatch):
    from causalwan.causal.weights import checkpoint_files
    monkeypatch.setattr(checkpoint_files, "CHUNK_BYTES", 40)  # many pieces per tensor, odd sizes at the ends
    tensors = {"bf16": torch.randn(7, 9).bfloat16(), "f32": torch.randn(3, 5, 2), "fp8": torch.randn(6, 11).to(
        torch.float8_e4m3fn), "u8": torch.arange(50, dtype=torch.uint8), "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0)}
    save_file(tensors, str(tmp_path / "mixed.safetensors"))
    src = open_file(tmp_path / "mixed.safetensors")
    for k, t in tensors.items():
        assert src.shapes[k] == tuple(t.shape) and src.dtypes[k] == t.dtype
        got = src.get(k, owned=True)
        assert got.dtype == t.dtype and got.shape == t.shape
        assert torch.equal(got.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
        assert torch.equal(src.read_into(k, torch.empty(t.shape, dtype=torch.float64)), t.double())
    pieces = list(src.chunks("f32"))
    assert [off for off, _ in pieces] == [0, 10, 20] and pieces[-1][1].numel() == 10


def test_metadata_and_format_names(tmp_path, pair):
    path = write_comfy(pair[0], tmp_path / "w.safetensors")
    model = load_transformer(path, dtype="fp16")
    assert model.weights_info["format"] == "comfy_single_file" and model.weights_info["dtype"] == torch.float16
    assert json.loads(json.dumps(str(model.weights_info["path"]))).endswith("w.safetensors")
    assert REF["dim"] == model.config.dim
