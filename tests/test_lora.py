"""LoRAs: every key format in circulation gives the closed form W + s * up @ down * alpha / r; strength 0 and
removal give the base model bit for bit; fp8 experts and offload modes work; bad files give one clear error."""
import pytest
import torch
from safetensors.torch import save_file

from causalwan.causal.memory.offload import apply_offload
from causalwan.causal.model.fp8_storage import store_blocks_fp8
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.weights.checkpoint_files import WeightsError
from causalwan.causal.weights.lora import activate
from causalwan.causal.weights.lora_keys import read_lora
from weight_writers import (LORA_FORMATS, lora_factors, merged_reference, ref_like, ref_model, run, write_comfy,
                            write_lora)


@pytest.fixture
def model():
    return ref_model(seed=3)


def pair_of(model):
    return ExpertPair(low=model)


def bits(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_bits(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fmt", LORA_FORMATS)
def test_each_key_format_equals_the_closed_form(tmp_path, model, fmt):
    factors = lora_factors(model, rank=4, seed=1)
    alpha = 2.0 if fmt in ("original", "kohya") else None  # diffusers/peft files carry no alpha: scale 1
    lora = read_lora(write_lora(tmp_path / f"{fmt}.safetensors", factors, fmt, alpha=alpha))
    before = bits(model)
    experts = pair_of(model)
    summary = activate(experts, [(lora, 0.0, 0.7)])
    assert f"low: {len(factors)} tensors" in summary
    got = run(model)
    want = run(merged_reference(model, [(0.7, factors, alpha, None)]))
    base = run(ref_like(model))
    assert (want - base).abs().max() > 1e-2  # the LoRA changes the output
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    activate(experts, [])
    assert same_bits(bits(model), before)  # the weights were never written
    assert torch.equal(run(model), base)


def test_diff_and_diff_b_keys(tmp_path, model):
    g = torch.Generator().manual_seed(5)
    sd = model.state_dict()
    params = ["blocks.0.norm3.weight", "blocks.0.norm3.bias", "blocks.0.self_attn.norm_q.weight",
              "blocks.1.modulation", "blocks.1.ffn.0.bias", "head.modulation", "head.head.bias",
              "blocks.0.cross_attn.k.weight"]  # the last: a full delta on a Linear weight
    diffs = {k: torch.randn(sd[k].shape, generator=g) * 0.2 for k in params}
    lora = read_lora(write_lora(tmp_path / "diff.safetensors", {}, diffs=diffs))
    experts = pair_of(model)
    activate(experts, [(lora, 1.0, 1.5)])
    got = run(model)
    activate(experts, [])
    torch.testing.assert_close(got, run(merged_reference(model, [(1.5, {}, None, diffs)])), rtol=1e-4, atol=1e-4)


def test_strength_zero_is_the_base_bit_for_bit_and_stacking_adds(tmp_path, model):
    f1, f2 = lora_factors(model, rank=4, seed=1), lora_factors(model, rank=2, seed=2)
    a = read_lora(write_lora(tmp_path / "a.safetensors", f1, "original", alpha=4.0))
    b = read_lora(write_lora(tmp_path / "b.safetensors", f2, "kohya", alpha=1.0))
    experts = pair_of(model)
    base = run(model)
    activate(experts, [(a, 1.0, 0.0)])
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())
    assert torch.equal(run(model), base)
    activate(experts, [(a, 1.0, 0.5), (b, 1.0, -1.0)])
    want = run(merged_reference(model, [(0.5, f1, 4.0, None), (-1.0, f2, 1.0, None)]))
    torch.testing.assert_close(run(model), want, rtol=1e-4, atol=1e-4)
    activate(experts, [])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(run(model), base)


def test_high_and_low_experts_get_their_own_strength(tmp_path):
    high, low = ref_model(seed=1), ref_model(seed=2)
    factors = lora_factors(low, rank=3, seed=4)
    lora = read_lora(write_lora(tmp_path / "l.safetensors", factors, "diffusers"))
    experts = ExpertPair(low=low, high=high, boundary=875.0)
    activate(experts, [(lora, 0.25, 2.0)])
    for m, s in ((high, 0.25), (low, 2.0)):
        torch.testing.assert_close(run(m), run(merged_reference(m, [(s, factors, None, None)])), rtol=1e-4,
                                   atol=1e-4)
    activate(experts, [])


def test_fp8_expert_gets_the_delta_and_keeps_its_fp8_weights(tmp_path, model):
    fp8 = store_blocks_fp8(ref_like(model))
    before = bits(fp8)
    factors = lora_factors(model, rank=4, seed=1)
    lora = read_lora(write_lora(tmp_path / "l.safetensors", factors, "original"))
    base = run(fp8)
    experts = pair_of(fp8)
    activate(experts, [(lora, 0.0, 1.0)])
    got = run(fp8)
    activate(experts, [])
    assert same_bits(bits(fp8), before) and torch.equal(run(fp8), base)
    # the fp8 model's output moves by what the LoRA moves the float model's output (the delta is in fp32 here)
    delta_ref = run(merged_reference(model, [(1.0, factors, None, None)])) - run(model)
    torch.testing.assert_close(got - base, delta_ref, rtol=0.05, atol=0.05 * delta_ref.abs().max().item())


@pytest.mark.parametrize("mode", ["swap", "blocks"])
def test_offload_modes_give_the_resident_result(tmp_path, mode):
    high, low = ref_model(seed=1), ref_model(seed=2)
    factors = lora_factors(low, rank=3, seed=4)
    diffs = {"blocks.0.modulation": torch.randn(low.blocks[0].modulation.shape) * 0.2,
             "blocks.1.self_attn.norm_k.weight": torch.randn(low.config.dim) * 0.2}
    lora = read_lora(write_lora(tmp_path / "l.safetensors", factors, "kohya", alpha=1.5, diffs=diffs))
    want = run(merged_reference(low, [(0.8, factors, 1.5, diffs)]))
    experts = ExpertPair(low=low, high=high, boundary=875.0)
    policy = apply_offload(experts, mode, "cpu", blocks=1)
    activate(experts, [(lora, 1.0, 0.8)])
    experts.get("low")
    torch.testing.assert_close(run(low), want, rtol=1e-4, atol=1e-4)
    activate(experts, [])
    policy.remove()


def _err(path):
    with pytest.raises(WeightsError) as e:
        read_lora(path)
    return str(e.value)


def test_bad_files_give_one_clear_error(tmp_path, model):
    other = ref_model(seed=0, dim=128, num_heads=1)  # another model size
    lora = read_lora(write_lora(tmp_path / "small.safetensors", lora_factors(other, rank=2), "original"))
    with pytest.raises(WeightsError, match="does not fit this model.*another size.*pick a LoRA for this model"):
        activate(pair_of(model), [(lora, 1.0, 1.0)])
    assert not any(m._forward_hooks for m in model.modules())  # nothing half-applied

    extra = read_lora(write_lora(tmp_path / "x.safetensors", {"blocks.7.ffn.0.weight": lora_factors(
        model, rank=2, targets=["blocks.0.ffn.0.weight"])["blocks.0.ffn.0.weight"]}, "original"))
    with pytest.raises(WeightsError, match="layers that this model .* does not have .*blocks.7.ffn.0"):
        activate(pair_of(model), [(extra, 1.0, 1.0)])

    assert "is a full Wan model, not a LoRA" in _err(write_comfy(model, tmp_path / "full.safetensors"))
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3)}, str(tmp_path / "vae.safetensors"))
    assert "is not a LoRA" in _err(tmp_path / "vae.safetensors") and "VAE" in _err(tmp_path / "vae.safetensors")
    save_file({"diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(64, 2)}, str(tmp_path / "half.safetensors"))
    assert "has only its lora_up matrix" in _err(tmp_path / "half.safetensors")
    save_file({"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(2, 256),
               "diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(64, 2),
               "diffusion_model.blocks.0.ffn.0.dora_scale": torch.zeros(1, 256)}, str(tmp_path / "dora.safetensors"))
    assert "DoRA" in _err(tmp_path / "dora.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert "truncated or corrupt" in _err(tmp_path / "broken.safetensors")


def test_cli_lora_option_stacks_files_and_rejects_a_misfit(tmp_path, capsys):
    from causalwan import cli
    from causalwan.causal.weights.loader import load_transformer
    from causalwan.cli_checks import TINY_WORLD

    demo = load_transformer(TINY_WORLD / "transformer")  # the model the CLI runs when none is given
    a = write_lora(tmp_path / "a.safetensors", lora_factors(demo, rank=2, seed=1), "kohya", alpha=1.0)
    b = write_lora(tmp_path / "b.safetensors", lora_factors(demo, rank=2, seed=2), "diffusers")
    args = ["--chunks", "1", "--width", "64", "--height", "64"]
    cli.main(args + ["--lora", f"{a}:0.5", "--lora", str(b), "--out", str(tmp_path / "v.mp4")])
    text = capsys.readouterr().out
    assert "LoRA a.safetensors (high 0.5, low 0.5, rank 2) + b.safetensors (high 1, low 1, rank 2)" in text
    wide = write_lora(tmp_path / "w.safetensors", lora_factors(ref_model(seed=0), rank=2), "original")
    with pytest.raises(SystemExit) as e:
        cli.main(args + ["--lora", str(wide), "--out", str(tmp_path / "w.mp4")])
    assert e.value.code == 2 and "does not fit this model" in capsys.readouterr().err
    assert not (tmp_path / "w.mp4").exists()


def test_lightx2v_style_file_with_diff_m_and_image_branch_layers(tmp_path, model):
    """A lightx2v-style distill LoRA: lora_down/lora_up + alpha, diff_b on biases, diff on norms, diff_m on the
    block modulation; made for Wan2.1 I2V, so it also holds k_img/v_img/norm_k_img layers, which a model without
    the image branch skips (and says so) while everything else applies."""
    g = torch.Generator().manual_seed(9)
    sd = model.state_dict()
    factors = lora_factors(model, rank=4, seed=2, targets=["blocks.0.cross_attn.k.weight", "blocks.1.ffn.2.weight"])
    out = {}
    for k, (up, down) in factors.items():
        layer = "diffusion_model." + k[: -len(".weight")]
        out[f"{layer}.lora_down.weight"], out[f"{layer}.lora_up.weight"] = down, up
        out[f"{layer}.alpha"] = torch.tensor(2.0)
    diffs = {"blocks.0.cross_attn.k.bias": torch.randn(sd["blocks.0.cross_attn.k.bias"].shape, generator=g) * 0.2,
             "blocks.0.cross_attn.norm_k.weight": torch.randn(model.config.dim, generator=g) * 0.2,
             "blocks.1.modulation": torch.randn(sd["blocks.1.modulation"].shape, generator=g) * 0.2}
    out["diffusion_model.blocks.0.cross_attn.k.diff_b"] = diffs["blocks.0.cross_attn.k.bias"]
    out["diffusion_model.blocks.0.cross_attn.norm_k.diff"] = diffs["blocks.0.cross_attn.norm_k.weight"]
    out["diffusion_model.blocks.1.diff_m"] = diffs["blocks.1.modulation"]
    d = model.config.dim
    out["diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight"] = torch.randn(4, d, generator=g)
    out["diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight"] = torch.randn(d, 4, generator=g)
    out["diffusion_model.blocks.0.cross_attn.norm_k_img.diff"] = torch.randn(d, generator=g)
    save_file({k: v.contiguous() for k, v in out.items()}, str(tmp_path / "lightx2v.safetensors"))
    experts = pair_of(model)
    summary = activate(experts, [(read_lora(tmp_path / "lightx2v.safetensors"), 1.0, 0.6)])
    assert "low: 5 tensors" in summary and "2 image-branch layers skipped" in summary
    got = run(model)
    activate(experts, [])
    want = run(merged_reference(model, [(0.6, factors, 2.0, diffs)]))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
