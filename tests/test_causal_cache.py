"""KV-cached chunk-by-chunk forwards equal one masked forward over the whole clip."""
import pytest
import torch

from causalwan.causal.model.kv_cache import KVCache
from causalwan.causal.model.masks import block_causal_mask, chunk_starts, token_mask
from tiny_models import tiny_model

CHUNKS = [1, 3, 3, 3, 2]


def clip_inputs(frames=12, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, frames, h, w, generator=g)
    t = torch.rand(1, frames, generator=g) * 1000
    t[:, 0] = 0.0
    return x, t, torch.randn(1, 7, 32, generator=g)


def cached_rollout(m, x, t, ctx, chunks, cache):
    outs = []
    for s, n in zip(chunk_starts(chunks), chunks):
        with torch.no_grad():
            outs.append(m(x[:, :, s:s + n], t[:, s:s + n], ctx, cache=cache, start_frame=s))
    return torch.cat(outs, 2)


def masked_forward(m, x, t, ctx, chunks, window=None, sink=0):
    mask = token_mask(block_causal_mask(chunks, window, sink), x.shape[3] * x.shape[4] // 4)
    with torch.no_grad():
        return m(x, t, ctx, attn_mask=mask)


@pytest.mark.parametrize("window,sink", [(None, 0), (7, 1), (5, 2), (3, 0)])
def test_cached_rollout_equals_block_causal_forward(window, sink):
    m = tiny_model()
    x, t, ctx = clip_inputs()
    cache = KVCache(m.config.num_layers, window, sink, "absolute")
    a = cached_rollout(m, x, t, ctx, CHUNKS, cache)
    b = masked_forward(m, x, t, ctx, CHUNKS, window, sink)
    assert (a - b).abs().max().item() <= 1e-5
    if window is not None:  # the window really cut something: a full-context forward differs
        full = masked_forward(m, x, t, ctx, CHUNKS)
        assert (a - full).abs().max().item() > 1e-4
        assert len(cache.slot_frame) == window  # memory bounded by the window


def test_rerunning_a_chunk_overwrites_its_slots():
    m = tiny_model()
    x, t, ctx = clip_inputs()
    cache = KVCache(m.config.num_layers)
    ref = cached_rollout(m, x, t, ctx, CHUNKS, KVCache(m.config.num_layers))
    outs = []
    for s, n in zip(chunk_starts(CHUNKS), CHUNKS):
        with torch.no_grad():
            m(torch.randn_like(x[:, :, s:s + n]), t[:, s:s + n], ctx, cache=cache, start_frame=s)  # stale pass
            outs.append(m(x[:, :, s:s + n], t[:, s:s + n], ctx, cache=cache, start_frame=s))
    assert torch.equal(torch.cat(outs, 2), ref)
    assert cache.frames == list(range(12))


def test_window_policy_without_sinks_equals_absolute_positions():
    # Without sinks the window policy keeps every frame at its index, exactly like absolute positions.
    m = tiny_model()
    x, t, ctx = clip_inputs(frames=18)
    chunks = [3] * 6
    a = cached_rollout(m, x, t, ctx, chunks, KVCache(2, 6, 0, "absolute"))
    b = cached_rollout(m, x, t, ctx, chunks, KVCache(2, 6, 0, "window"))
    assert torch.equal(a, b)


def test_window_policy_moves_the_sinks_along():
    # Sinks sit right before the oldest recent frame: their keys are the unrotated keys rotated at offset + i.
    from causalwan.causal.model.rope import apply_rope, rope_table

    m = tiny_model()
    x, t, ctx = clip_inputs(frames=16)
    cache = KVCache(2, 7, 2, "window")
    cached_rollout(m, x, t, ctx, [1, 3, 3, 3, 3, 3], cache)
    offset = 16 - (7 - 2) - 2  # chunk end - recent slots - sinks
    assert cache.frames == [0, 1, 11, 12, 13, 14, 15] and cache.sink_offset == [offset, offset]
    tpf = 6
    for layer in range(2):
        rot = rope_table(range(offset, offset + 2), 2, 3, 16, None)
        expected = apply_rope(cache.sink_raw[layer], rot)
        assert (cache.k[layer][:, :, : 2 * tpf] - expected).abs().max() <= 1e-6
    assert cache.nbytes() == sum(b.numel() * 4 for b in cache.k + cache.v + cache.sink_raw)


def test_window_policy_goes_past_the_rope_table():
    m = tiny_model()
    x, t, ctx = clip_inputs(frames=3)
    for policy, ok in (("window", True), ("absolute", False)):
        cache = KVCache(2, 6, 1, policy)
        with torch.no_grad():
            m(x[:, :, :1], t[:, :1], ctx, cache=cache, start_frame=0)
            if ok:
                out = m(x, t, ctx, cache=cache, start_frame=2000)
                assert torch.isfinite(out).all()
                assert cache.frames == [0, 2000, 2001, 2002]
            else:
                with pytest.raises(ValueError, match="beyond the RoPE table"):
                    m(x, t, ctx, cache=cache, start_frame=2000)


@pytest.mark.parametrize("window,sink,chunk,msg", [
    (2, 0, 3, "cannot hold a chunk of 3"),
    (4, 4, 1, "sink_frames 4 must be smaller than window_frames 4"),
    (5, 3, 3, "use window_frames 6 or more"),
])
def test_bad_windows(window, sink, chunk, msg):
    m = tiny_model()
    x, t, ctx = clip_inputs(frames=chunk)
    with pytest.raises(ValueError, match=msg):
        m(x, t, ctx, cache=KVCache(2, window, sink), start_frame=0)


def test_window_less_cache_is_sized_once_for_a_known_length():
    m = tiny_model()
    x, t, ctx = clip_inputs(frames=12)
    sized, unsized = KVCache(2, capacity=13), KVCache(2)
    a = cached_rollout(m, x, t, ctx, CHUNKS, sized)
    b = cached_rollout(m, x, t, ctx, CHUNKS, unsized)
    assert torch.equal(a, b)
    assert len(sized.slot_frame) == 13 and len(unsized.slot_frame) == 16  # doubling: 1, 4, 8, 16


def test_a_reserved_cache_grows_once_to_the_new_length():
    m = tiny_model()
    x, t, ctx = clip_inputs(frames=12)
    cache = KVCache(2, capacity=4)
    cached_rollout(m, x[:, :, :4], t[:, :4], ctx, [1, 3], cache)
    assert len(cache.slot_frame) == 4
    cache.capacity = 12  # Stream.reserve: the continued stream's new length
    with torch.no_grad():
        m(x[:, :, 4:7], t[:, 4:7], ctx, cache=cache, start_frame=4)
    assert len(cache.slot_frame) == 12 and cache.frames == list(range(7))
