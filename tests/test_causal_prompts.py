"""Long streams with a window, prompt switching (cut, re-cache, blend) and continuing a finished stream."""
import pytest
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.prompts import PromptChange, PromptSchedule
from causalwan.causal.sampling.stream import Stream, StreamOptions
from tiny_models import tiny_model


def text(seed):
    return torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(seed))


A, B = text(11), text(12)


def pair():
    return ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0)


def stream(seed=0, prompt=A, **opts):
    s = Stream(pair(), seed=seed, options=StreamOptions(**opts))
    s.set_prompt(prompt)
    s.prime(torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(5)))
    return s


def run(s, n, schedule=None):
    return list(s.run(n, schedule))


@pytest.mark.parametrize("mode", ["cut", "recache", "blend"])
def test_switch_leaves_earlier_chunks_bit_identical(mode):
    plain = run(stream(window=7, sink=1), 5)
    switched = run(stream(window=7, sink=1), 5, PromptSchedule([PromptChange(0, A), PromptChange(3, B, mode)]))
    for k in range(3):
        assert torch.equal(plain[k], switched[k])
    assert (plain[3] - switched[3]).abs().max() > 1e-3  # the new prompt does change what follows


def test_recache_rewrites_the_window_as_a_fresh_stream_would():
    s = stream(window=7, sink=1)
    run(s, 4)  # frames 0..12; window keeps sink 0 and frames 7..12
    s.set_prompt(B, mode="recache")
    fresh = Stream(pair(), options=StreamOptions(window=7, sink=1))
    fresh.set_prompt(B)
    for start, chunk in s.history:
        fresh.prime(chunk, start_frame=start)
    assert [st for st, _ in s.history] == [0, 7, 10]
    for name in ("high", "low"):
        a, b = s.caches[name], fresh.caches[name]
        assert a.frames == b.frames == [0, 7, 8, 9, 10, 11, 12]
        for layer in range(2):
            for buf_a, buf_b in ((a.k[layer], b.k[layer]), (a.v[layer], b.v[layer])):
                order_a = [a.slot_frame.index(f) for f in a.frames]
                order_b = [b.slot_frame.index(f) for f in b.frames]
                ta = buf_a.view(1, 2, len(a.slot_frame), 16, -1)[:, :, order_a]
                tb = buf_b.view(1, 2, len(b.slot_frame), 16, -1)[:, :, order_b]
                assert (ta - tb).abs().max().item() <= 1e-5
    cut = stream(window=7, sink=1)
    run(cut, 4)
    cut.set_prompt(B, mode="cut")
    assert not torch.allclose(cut.caches["low"].k[1], s.caches["low"].k[1])  # re-cache really rewrote keys


@pytest.mark.parametrize("change", [False, True])
def test_continued_stream_equals_uninterrupted(change):
    sched = PromptSchedule([PromptChange(0, A)] + ([PromptChange(3, B, "recache")] if change else []))
    whole = run(stream(seed=4, window=7, sink=1), 6, sched)
    s = stream(seed=4, window=7, sink=1)
    first = run(s, 3)
    cont = s.fork()
    if change:
        cont.set_prompt(B, mode="recache")
    rest = run(cont, 3)
    assert torch.equal(torch.cat(first + rest, 2), torch.cat(whole, 2))
    again = run(s.fork(), 3, PromptSchedule([PromptChange(0, B, "recache")]) if change else None)
    assert torch.equal(torch.cat(again, 2), torch.cat(rest, 2))  # the saved state was not consumed


def test_window_memory_is_constant_and_positions_stay_in_table():
    s = stream(window=7, sink=1, rope_policy="window")
    sizes = []
    for _ in range(25):
        s.next_chunk()
        sizes.append(s.cache_bytes())
    assert len(set(sizes)) == 1  # allocated once, never grows
    assert len(s.history) <= 4
    assert s.caches["low"].frames == [0] + list(range(70, 76))
    s.next_frame = 5000  # far past the 1024-entry RoPE table: window positions keep working
    assert torch.isfinite(s.next_chunk()).all()


def test_blend_moves_between_texts():
    sched = PromptSchedule([PromptChange(0, A), PromptChange(1, B, "blend", blend_chunks=2)])
    s = stream()
    run(s, 3, sched)
    assert torch.equal(s.prompt, B)


def test_bad_schedules_and_windows():
    with pytest.raises(ValueError, match="never comes"):
        run(stream(), 3, PromptSchedule([PromptChange(0, A), PromptChange(5, B)]))
    with pytest.raises(ValueError, match="prompt list is empty"):
        PromptSchedule([])
    with pytest.raises(ValueError, match="cannot hold a chunk"):
        stream(window=2)
    with pytest.raises(ValueError, match="must be smaller than window_frames"):
        stream(window=4, sink=4)
    with pytest.raises(ValueError, match="same chunk"):
        PromptSchedule([PromptChange(1, A), PromptChange(1, B)])
    with pytest.raises(ValueError, match="goes past the 1024-frame RoPE table"):
        Stream(pair(), options=StreamOptions(max_frames=1100))
    Stream(pair(), options=StreamOptions(max_frames=1100, window=12, sink=3))  # window positions: any length
    with pytest.raises(ValueError, match="unknown prompt switch mode"):
        PromptChange(0, A, "fade")
