"""fp8 files (plain, ComfyUI scaled, comfy_quant) stay fp8 in memory and compute what their weights say.

Tolerances: against the exact dequantised weights the loaded model must agree to float32 rounding (1e-5); against
the full-precision model it was written from, e4m3fn (3 mantissa bits) costs a relative L2 error of a few percent:
<= 6% with scales on the block Linear weights only, <= 15% when every tensor (norms, modulation, biases too) is a
plain fp8 cast.
"""
import pytest
import torch
from safetensors.torch import save_file

from causalwan.causal.model.fp8 import FP8Linear, quantize
from causalwan.causal.weights.loader import load_transformer
from weight_writers import block_linears, fp8_reference, ref_model, run, write_comfy


@pytest.fixture(scope="module")
def model():
    m = ref_model(seed=3)
    m.out = run(m)  # computed once: the full-precision output every fp8 load is compared with
    return m


def rel(a, b):
    return ((run(a) - b.out).norm() / b.out.norm()).item()


def fp8_layers(m):
    return {n: mod for n, mod in m.named_modules() if isinstance(mod, FP8Linear)}


@pytest.mark.parametrize("kind", ["scaled", "comfy_quant"])
def test_scaled_fp8_file(tmp_path, model, kind):
    path = write_comfy(model, tmp_path / f"wan_fp8_{kind}.safetensors", dtype=torch.float32, fp8=kind)
    loaded = load_transformer(path, dtype=torch.float32)
    layers = fp8_layers(loaded)
    expected = {k[: -len(".weight")] for k in block_linears(model.state_dict())}
    assert set(layers) == expected and len(layers) == 20  # 2 blocks x (4 self + 4 cross + 2 ffn)
    for mod in layers.values():
        assert mod.weight.dtype == torch.float8_e4m3fn and mod.scale_weight.dtype == torch.float32
        assert mod.weight.element_size() == 1
    first = layers["blocks.0.self_attn.q"]
    assert first.scale_weight.shape == (256, 1)  # the per-row scaled layer
    assert layers["blocks.0.self_attn.k"].scale_weight.shape == ()
    assert (run(loaded) - run(fp8_reference(model))).abs().max().item() <= 1e-5
    assert 0.005 < rel(loaded, model) <= 0.06  # really quantised, and close


def test_plain_fp8_file_every_tensor_fp8(tmp_path, model):
    path = write_comfy(model, tmp_path / "wan_fp8_e4m3fn.safetensors", fp8="plain")
    loaded = load_transformer(path)  # dtype None: compute in bf16, weights stay fp8
    assert loaded.dtype == torch.bfloat16
    layers = fp8_layers(loaded)
    # every Linear but head.head (the model reads its output dtype there) stays fp8
    assert "head.head" not in layers and "blocks.1.ffn.2" in layers and "text_embedding.0" in layers
    assert all(float(m.scale_weight) == 1.0 for m in layers.values())
    assert loaded.blocks[0].modulation.dtype == torch.bfloat16  # non-Linear fp8 tensors are dequantised
    exact = load_transformer(path, dtype=torch.float32)
    assert (run(exact) - run(fp8_reference(model, plain=True))).abs().max().item() <= 1e-5
    assert rel(exact, model) <= 0.15
    assert rel(loaded, model) <= 0.15


def test_quantise_on_load(tmp_path, model):
    path = write_comfy(model, tmp_path / "wan_bf16.safetensors", dtype=torch.float32)
    loaded = load_transformer(path, dtype="fp8_e4m3fn")
    layers = fp8_layers(loaded)
    assert set(layers) == {k[: -len(".weight")] for k in block_linears(model.state_dict())}
    # embeddings, time projection (modulation), norms and head stay in the compute dtype
    assert loaded.text_embedding[0].weight.dtype == torch.bfloat16
    assert loaded.time_projection[1].weight.dtype == torch.bfloat16
    assert loaded.blocks[0].norm3.weight.dtype == torch.bfloat16
    q, s = quantize(model.blocks[0].ffn[0].weight)
    assert torch.equal(layers["blocks.0.ffn.0"].weight.float(), q.float()) and torch.equal(
        layers["blocks.0.ffn.0"].scale_weight, s)
    assert rel(loaded, model) <= 0.06


def test_fp8_layers_survive_casts_and_round_trip_as_comfy_scaled(tmp_path, model):
    path = write_comfy(model, tmp_path / "s.safetensors", dtype=torch.float32, fp8="scaled")
    loaded = load_transformer(path, dtype=torch.float32)
    before = run(loaded)
    # state_dict() uses ComfyUI's scaled fp8 names, so what we save loads back unchanged
    assert "blocks.0.ffn.0.scale_weight" in loaded.state_dict()
    sd = {"model.diffusion_model." + k: v.contiguous() for k, v in loaded.state_dict().items()}
    save_file(sd, str(tmp_path / "again.safetensors"))
    again = load_transformer(tmp_path / "again.safetensors", dtype=torch.float32)
    assert torch.equal(run(again), before)
    w = loaded.blocks[0].ffn[0].weight.clone()
    loaded.to(torch.float16)
    layer = loaded.blocks[0].ffn[0]
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.compute_dtype == torch.float16
    assert layer.bias.dtype == torch.float16 and layer.scale_weight.dtype == torch.float32
    assert torch.equal(layer.weight.view(torch.uint8), w.view(torch.uint8))  # fp8 -> fp16 -> fp8 is exact
    loaded.to(torch.float32)
    assert torch.equal(layer.weight.view(torch.uint8), w.view(torch.uint8)) and layer.compute_dtype == torch.float32


def test_fp8_linear_math():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q, s = quantize(lin.weight)
    f = FP8Linear(64, 48, fp8_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    f.weight, f.scale_weight, f.bias = q, s, torch.nn.Parameter(lin.bias.detach(), requires_grad=False)
    x = torch.randn(5, 64)
    want = x @ (q.float() * s).T + lin.bias
    assert torch.allclose(f(x), want, atol=1e-5)
    err = (f(x) - lin(x)).norm() / lin(x).norm()
    assert 0 < err < 0.05
    assert list(dict(f.named_parameters())) == ["bias"]  # the fp8 weight is a buffer: no optimiser touches it
    with pytest.raises(ValueError, match="fp8_dtype"):
        FP8Linear(4, 4, fp8_dtype=torch.bfloat16)
