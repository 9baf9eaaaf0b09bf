"""The Wan DiT against diffusers' WanTransformer3DModel, and its input checks."""
import pytest
import torch
import torch.nn.functional as F

from causalwan.causal.weights import keymap
from tiny_models import tiny_config, tiny_model
from weight_writers import diffusers_twin

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("in_dim", [16, 36])
def test_parity_with_diffusers_one_chunk(in_dim):
    m = tiny_model(in_dim=in_dim)
    d = diffusers_twin(m)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 3, 8, 12, generator=g)
    y = torch.randn(1, in_dim - 16, 3, 8, 12, generator=g) if in_dim > 16 else None
    ctx = torch.randn(1, 16, 32, generator=g)
    for t in (999.0, 421.5, 0.0):
        tt = torch.tensor([t])
        with torch.no_grad():
            ours = m(x, tt, ctx, y=y)
            ref = d(x if y is None else torch.cat([x, y], 1), tt, ctx, return_dict=False)[0]
        assert ours.shape == (1, 16, 3, 8, 12)
        assert (ours - ref).abs().max().item() <= 1e-4
        assert ours.abs().mean() > 0.1  # a real signal, not zeros on both sides


def test_parity_with_diffusers_wan21_image_branch():
    # diffusers assumes 512 text tokens when it splits image from text context, so pad to 512 here.
    m = tiny_model(in_dim=36, image_branch=True, clip_dim=24, text_len=512)
    d = diffusers_twin(m)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 36, 2, 8, 8, generator=g)
    ctx, clip = torch.randn(1, 10, 32, generator=g), torch.randn(1, 257, 24, generator=g)
    with torch.no_grad():
        ours = m(x[:, :16], torch.tensor([500.0]), ctx, y=x[:, 16:], clip_fea=clip)
        ref = d(x, torch.tensor([500.0]), F.pad(ctx, (0, 0, 0, 502)), encoder_hidden_states_image=clip,
                return_dict=False)[0]
        without_img = m(x[:, :16], torch.tensor([500.0]), ctx, y=x[:, 16:], clip_fea=torch.zeros_like(clip))
    assert (ours - ref).abs().max().item() <= 1e-4
    assert (ours - without_img).abs().max().item() > 1e-3  # the image branch changes the output


def test_keymap_round_trip_and_detection():
    m = tiny_model(in_dim=36, image_branch=True, clip_dim=24)
    keys = list(m.state_dict())
    conv = [keymap.to_diffusers(k) for k in keys]
    assert [keymap.to_original(k) for k in conv] == keys
    assert keymap.is_diffusers(conv) and not keymap.is_diffusers(keys)
    assert "blocks.0.norm2.weight" in conv and "blocks.0.norm3.weight" in keys  # the norm2/norm3 swap


def test_per_frame_timesteps_match_single_frame_calls():
    m = tiny_model()
    g = torch.Generator().manual_seed(3)
    x, ctx = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 5, 32, generator=g)
    t = torch.tensor([[900.0, 100.0]])
    mask = torch.eye(2, dtype=torch.bool).repeat_interleave(4, 0).repeat_interleave(4, 1)
    with torch.no_grad():
        both = m(x, t, ctx, attn_mask=mask)
        first = m(x[:, :, :1], torch.tensor([900.0]), ctx)
        second = m(x[:, :, 1:], torch.tensor([100.0]), ctx, start_frame=1)
    assert (both[:, :, :1] - first).abs().max() <= 1e-5
    assert (both[:, :, 1:] - second).abs().max() <= 1e-5


def test_one_timestep_for_all_tokens_equals_the_per_frame_and_batched_paths():
    """Batch 1 at one timestep takes the fused path (the modulation as the layer norm's affine weights); the same
    timestep given per frame, and the same sample inside a batch of two, take the general norm-then-modulate
    path: all three agree."""
    m = tiny_model()
    g = torch.Generator().manual_seed(4)
    x, ctx = torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 5, 32, generator=g)
    other = torch.randn(1, 16, 3, 4, 6, generator=g)
    with torch.no_grad():
        fused = m(x, torch.tensor([640.0]), ctx)
        per_frame = m(x, torch.full((1, 3), 640.0), ctx)
        batched = m(torch.cat([x, other]), torch.tensor([640.0, 120.0]), ctx.expand(2, -1, -1))
    assert fused.abs().mean() > 0.1
    assert (fused - per_frame).abs().max() <= 1e-5
    assert (fused - batched[:1]).abs().max() <= 1e-5


def test_cpu_tanh_gelu_equals_torchs_and_keeps_its_gradient():
    from causalwan.causal.model.transformer import TanhGELU

    x = torch.randn(64, 96, generator=torch.Generator().manual_seed(5)) * 4
    with torch.no_grad():
        plain = TanhGELU()(x)
    assert (plain - F.gelu(x, approximate="tanh")).abs().max() <= 1e-6
    live = x.clone().requires_grad_()
    out = TanhGELU()(live)
    assert torch.equal(out.detach(), plain)  # under autograd the very same values
    grad = torch.randn_like(x)
    out.backward(grad)
    ref = x.clone().requires_grad_()
    F.gelu(ref, approximate="tanh").backward(grad)
    assert torch.equal(live.grad, ref.grad)
    assert torch.equal(TanhGELU()(x.bfloat16()), F.gelu(x.bfloat16(), approximate="tanh"))  # torch's kernel


def test_in_place_gelu_rmsnorm_and_rope_give_the_out_of_place_values():
    from causalwan.causal.model.rope import apply_rope, rope_table
    from causalwan.causal.model.transformer import RMSNorm, TanhGELU

    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 50, 1536, generator=g) * 3  # 100 rows: slices of 42, 42 and 16 rows
    with torch.no_grad():
        plain = TanhGELU()(x)
        y = x.clone()
        out = TanhGELU(inplace=True)(y)
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, plain)
    assert not torch.equal(plain, x)  # the out-of-place form left its input as it was
    assert (plain - F.gelu(x, approximate="tanh")).abs().max() <= 1e-6

    norm = RMSNorm(64, 1e-6)
    with torch.no_grad():
        norm.weight.normal_(1, 0.5, generator=g)
    x = torch.randn(3, 40, 64, generator=g)
    ref = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * norm.weight
    kept = x.clone()
    with torch.no_grad():
        plain = norm(x)
        assert torch.equal(x, kept)
        norm.inplace = True
        inplace = norm(x)
    assert inplace.data_ptr() == x.data_ptr() and torch.equal(inplace, plain) and not torch.equal(x, kept)
    assert (plain - ref).abs().max() <= 1e-5

    rot = rope_table(range(2), 4, 5, 16)
    q = torch.randn(1, 40, 3, 16, generator=g).transpose(1, 2)  # [B, H, L, D] view of token-major rows
    kept = q.clone()
    plain = apply_rope(q, rot)
    assert torch.equal(q, kept)
    with torch.no_grad():
        rotated = apply_rope(q, rot, inplace=True)
    assert rotated.data_ptr() == q.data_ptr() and torch.equal(rotated, plain)
    assert torch.equal(apply_rope(kept.bfloat16(), rot), apply_rope(kept.bfloat16(), rot, inplace=True))


def test_forward_under_autograd_gives_the_values_of_one_without():
    m = tiny_model().requires_grad_(True)
    g = torch.Generator().manual_seed(7)
    x, ctx, t = torch.randn(1, 16, 3, 8, 12, generator=g), torch.randn(1, 16, 32, generator=g), torch.tensor([500.0])
    with torch.no_grad():
        plain = m(x, t, ctx)
    live = m(x, t, ctx)
    assert torch.equal(live.detach(), plain)
    live.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in m.named_parameters() if n.startswith("blocks.0."))


def test_bad_inputs_get_clear_errors():
    m = tiny_model()
    ctx = torch.randn(1, 4, 32)
    with pytest.raises(ValueError, match="patch size"):
        m(torch.randn(1, 16, 1, 5, 4), torch.tensor([1.0]), ctx)
    with pytest.raises(ValueError, match="16 input channels"):
        m(torch.randn(1, 8, 1, 4, 4), torch.tensor([1.0]), ctx)
    with pytest.raises(ValueError, match="RoPE table"):
        m(torch.randn(1, 16, 1, 4, 4), torch.tensor([1.0]), ctx, start_frame=1024)
    with pytest.raises(ValueError, match=r"\[batch, tokens, 32\]"):
        m(torch.randn(1, 16, 1, 4, 4), torch.tensor([1.0]), torch.randn(1, 4, 64))
    with pytest.raises(ValueError, match="no image branch"):
        m(torch.randn(1, 16, 1, 4, 4), torch.tensor([1.0]), ctx, clip_fea=torch.randn(1, 257, 1280))
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(dim=30, num_heads=4)
