"""fp8 storage: the KV cache with one scale per token row (and why not a plain cast), fp8 block weights."""
import pytest
import torch
import torch.nn.functional as F

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.model.fp8 import FP8Linear
from causalwan.causal.model.fp8 import dequantize
from causalwan.causal.model.fp8_storage import FP8, quantize_rows, store_blocks_fp8
from causalwan.causal.model.kv_cache import KVCache
from causalwan.causal.sampling.stream import Stream, StreamOptions
from tiny_models import tiny_model


def rows(seed=0):
    """Rows whose magnitudes span 1e-5 .. 1e4 (one magnitude per row)."""
    g = torch.Generator().manual_seed(seed)
    mags = 10.0 ** torch.linspace(-5, 4, 64)
    return torch.randn(1, 2, 64, 32, generator=g) * mags[None, None, :, None]


def test_row_quantisation_error_is_bounded_at_every_magnitude():
    x = rows()
    q, scale = quantize_rows(x)
    assert q.dtype == FP8 and scale.shape == (1, 2, 64, 1) and scale.dtype == torch.float32
    err = (dequantize(q, scale, torch.float32) - x).abs()
    bound = 2 ** -4 * x.abs() + 2 ** -10 * scale  # 3 mantissa bits; subnormal spacing 2^-9 of the row scale
    assert (err <= bound * (1 + 1e-6)).all()
    assert torch.equal(q.float().abs().amax(-1), torch.full((1, 2, 64), 448.0))  # every row uses the full range
    zero_q, zero_s = quantize_rows(torch.zeros(2, 4))
    assert torch.equal(dequantize(zero_q, zero_s, torch.float32), torch.zeros(2, 4))


def test_plain_cast_fails_where_row_scales_hold():
    x = rows()
    plain = (x.to(FP8).float() - x).abs() / x.abs().clamp(min=1e-30)
    assert plain[..., :16, :].median() == 1.0  # magnitudes below ~1e-3 flush to zero
    assert plain[..., -8:, :].max() > 0.9  # magnitudes above 448 saturate


@pytest.mark.parametrize("v_scale", [1e-3, 1e-2, 1.0, 1e3])
def test_attention_error_with_fp8_cache_stays_under_5_percent(v_scale):
    """Keys are RMS-normalised; values come at any magnitude. Per-row scales keep the attention output within
    5% (relative L2) at every value magnitude; a plain cast does not."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 96, 64, generator=g)
    k = torch.randn(1, 4, 480, 64, generator=g)
    k = k / k.pow(2).mean(-1, keepdim=True).sqrt()
    v = torch.randn(1, 4, 480, 64, generator=g) * v_scale
    ref = F.scaled_dot_product_attention(q, k, v)
    rel = lambda out: ((out - ref).norm() / ref.norm()).item()  # noqa: E731
    scaled = F.scaled_dot_product_attention(q, dequantize(*quantize_rows(k), torch.float32),
                                            dequantize(*quantize_rows(v), torch.float32))
    plain = F.scaled_dot_product_attention(q, k.to(FP8).float(), v.to(FP8).float())
    assert rel(scaled) < 0.05
    if v_scale in (1e-3, 1e3):
        assert rel(plain) > 0.3


def pair():
    return ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0)


def stream_out(cache_dtype, chunks=3):
    s = Stream(pair(), seed=0, options=StreamOptions(cache_dtype=cache_dtype))
    s.set_prompt(torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(9)))
    s.prime(torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(5)))
    return torch.cat(list(s.chunks(chunks)), 2), s


def test_fp8_cache_stream_is_close_to_float32_and_half_the_bytes_of_bf16():
    ref, s32 = stream_out(None)
    fp8, s8 = stream_out(torch.float8_e4m3fn)
    bf16, s16 = stream_out(torch.bfloat16)
    rel = lambda out: ((out - ref).norm() / ref.norm()).item()  # noqa: E731
    assert torch.isfinite(fp8).all()
    assert rel(fp8) < 0.01 and rel(bf16) < 0.001
    c8, c16 = s8.caches["low"], s16.caches["low"]
    assert c8.k[0].dtype == FP8 and c8.k_scale[0].dtype == torch.float32
    head_dim = c8.k[0].shape[-1]
    assert c8.nbytes() == c16.nbytes() // 2 + c16.nbytes() // (2 * head_dim) * 4  # 1 byte + a 4-byte row scale


def test_fp8_cache_survives_fork_and_recache():
    _, s = stream_out(torch.float8_e4m3fn, chunks=1)
    f = s.fork()
    assert torch.equal(s.next_chunk(), f.next_chunk())
    s.set_prompt(torch.randn(1, 4, 32), mode="recache")
    assert torch.isfinite(s.next_chunk()).all()


def test_cache_rows_round_trip_through_attend():
    cache = KVCache(1, dtype=torch.float8_e4m3fn)
    plan = cache.plan(0, 2, 1, 2, 16, 2, 3, "cpu", torch.float32)
    k = torch.randn(1, 2, 12, 16) * 1e-3  # tiny keys: a plain cast would flush them to zero
    v = torch.randn(1, 2, 12, 16) * 1e3
    cache.attend(0, plan, torch.randn(1, 2, 12, 16), k, v)
    got = dequantize(cache.v[0][:, :, :12], cache.v_scale[0][:, :, :12], torch.float32)
    assert ((got - v).abs() <= 2 ** -4 * v.abs() + 2 ** -10 * cache.v_scale[0][:, :, :12]).all()
    assert cache.k[0][:, :, :12].float().abs().amax() == 448.0


def test_fp8_block_weights_halve_the_blocks_and_stay_close():
    model = tiny_model(3)
    x, t, ctx = torch.randn(1, 16, 3, 4, 6), torch.full((1,), 500.0), torch.randn(1, 6, 32)
    ref = model(x, t, ctx)
    before = sum(v.numel() * v.element_size() for v in model.blocks.state_dict().values())
    store_blocks_fp8(model)
    linears = [m for m in model.blocks.modules() if isinstance(m, FP8Linear)]
    assert len(linears) == 2 * 10  # q k v o of self and cross attention + 2 FFN, per block
    assert all(m.weight.dtype == FP8 and m.compute_dtype == torch.float32 for m in linears)
    after = sum(v.numel() * v.element_size() for v in model.blocks.state_dict().values())
    matrices = sum(m.weight.numel() for m in linears)
    assert before - after == 3 * matrices - 4 * len(linears)  # 4 -> 1 byte each, plus one float32 scale
    out = model(x, t, ctx)
    assert ((out - ref).norm() / ref.norm()) < 0.03
