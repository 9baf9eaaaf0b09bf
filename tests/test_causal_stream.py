"""The streaming loop: step warping and expert choice, determinism, continuing, priming."""
import pytest
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.schedule import CAUSALWAN_A14B_STEPS, boundary_sigma, plan_steps, warp
from causalwan.causal.sampling.stream import Stream, StreamOptions
from live_tensor_bytes import LiveTensorBytes
from tiny_models import tiny_model


def pair(**kw):
    return ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0, **kw)


def start_latent(seed=5, h=4, w=6):
    return torch.randn(1, 16, 1, h, w, generator=torch.Generator().manual_seed(seed))


def new_stream(experts, seed=0, **opts):
    s = Stream(experts, seed=seed, options=StreamOptions(**opts))
    s.set_prompt(torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(9)))
    s.prime(start_latent())
    return s


def test_step_warping_self_forcing():
    ts = [s.t for s in plan_steps([1000, 750, 500, 250], 5.0)]
    assert ts == pytest.approx([1000, 937.5, 833.333, 625], abs=1e-3)
    assert warp(1000, 12) == 1000
    assert boundary_sigma(875, 5) == pytest.approx(0.8748499, abs=1e-7)


@pytest.mark.parametrize("shift,high", [(5.0, 3), (12.0, 4)])
def test_eight_steps_split_between_experts(shift, high):
    s = new_stream(pair(), shift=shift, steps=CAUSALWAN_A14B_STEPS)
    s.expert_calls.clear()
    s.next_chunk()
    calls = s.expert_calls
    denoise, context = calls[:8], calls[8:]
    assert [e for e, _ in denoise] == ["high"] * high + ["low"] * (8 - high)
    assert [t for _, t in denoise] == pytest.approx([st.t for st in plan_steps(CAUSALWAN_A14B_STEPS, shift)])
    assert context == [("low", 0.0), ("high", 0.0)]  # clean re-run: low expert's cache first


def test_priming_runs_both_experts_at_t0():
    s = Stream(pair())
    s.set_prompt(torch.randn(1, 6, 32))
    s.prime(start_latent())
    assert s.expert_calls == [("high", 0.0), ("low", 0.0)]
    assert s.next_frame == 1 and s.caches["high"].frames == [0] and s.caches["low"].frames == [0]


def test_same_seed_same_output_bit_for_bit():
    a = torch.cat(list(new_stream(pair(), seed=3).chunks(3)), 2)
    b = torch.cat(list(new_stream(pair(), seed=3).chunks(3)), 2)
    c = torch.cat(list(new_stream(pair(), seed=4).chunks(3)), 2)
    assert a.shape == (1, 16, 9, 4, 6)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("window", [None, 7])
def test_stopped_and_continued_stream_equals_uninterrupted(window):
    whole = torch.cat(list(new_stream(pair(), seed=1, window=window, sink=1).chunks(5)) if window else
                      list(new_stream(pair(), seed=1).chunks(5)), 2)
    opts = dict(window=window, sink=1) if window else {}
    s = new_stream(pair(), seed=1, **opts)
    first = list(s.chunks(2))
    saved = s.fork()
    del s
    rest = list(saved.chunks(3))
    assert torch.equal(torch.cat(first + rest, 2), whole)


def test_fork_is_independent():
    s = new_stream(pair(), seed=2)
    s.next_chunk()
    f = s.fork()
    a, b = s.next_chunk(), f.next_chunk()
    assert torch.equal(a, b)  # same state, same next chunk
    s.next_chunk()
    assert f.next_frame == 7 and s.next_frame == 10


def cache_storages(stream):
    return {t.untyped_storage().data_ptr() for c in stream.caches.values()
            for t in c.k + c.v + c.k_scale + c.v_scale + c.sink_raw}


@pytest.mark.parametrize("opts", [{}, dict(window=7, sink=1), dict(cache_dtype=torch.float8_e4m3fn)])
def test_fork_takes_over_the_caches_and_parks_one_copy(opts):
    s = new_stream(pair(), seed=3, **opts)
    s.next_chunk()
    held, size = cache_storages(s), s.cache_bytes()
    with LiveTensorBytes() as count:
        f = s.fork()
    assert cache_storages(f) == held  # the very buffers on the compute device, no second copy there
    assert s.parked and not f.parked and not cache_storages(s) & held
    assert count.peak == count.current == size == s.cache_bytes()  # one allocation: the parked copy
    expected = f.next_chunk()
    del f  # a re-queue: its node releases the last continuation before forking again
    with LiveTensorBytes() as count:
        g = s.fork()
    assert count.current == 0 and g.parked and s.parked  # the fork reads the parked copy until it runs
    assert torch.equal(g.next_chunk(), expected)
    assert not g.parked and not cache_storages(g) & cache_storages(s)  # copied back to the device once
    assert torch.equal(s.next_chunk(), expected) and not s.parked  # the parked stream itself can still run


@pytest.mark.parametrize("opts", [{}, dict(window=7, sink=1), dict(cache_dtype=torch.float8_e4m3fn)])
def test_fork_parks_its_copy_in_host_memory_not_on_the_compute_device(opts, monkeypatch):
    # on a CPU the host is the compute device; "meta" stands in for host memory so a copy left on the compute
    # device shows (the parked half only: a meta copy holds no values to run from)
    from causalwan.causal.sampling import stream as stream_module

    reference = new_stream(pair(), seed=3, **opts)
    reference.next_chunk()
    expected = reference.fork().next_chunk()
    s = new_stream(pair(), seed=3, **opts)
    s.next_chunk()
    held = cache_storages(s)
    monkeypatch.setattr(stream_module, "HOST", torch.device("meta"))
    f = s.fork()
    parked = [t for c in s.caches.values() for t in c.k + c.v + c.k_scale + c.v_scale + c.sink_raw]
    assert s.parked and parked and {t.device.type for t in parked} == {"meta"}  # every parked tensor off device
    assert cache_storages(f) == held and {t.device.type for c in f.caches.values() for t in c.k + c.v} == {"cpu"}
    assert torch.equal(f.next_chunk(), expected)  # the fork runs on the buffers it took over


def test_dense_single_expert_and_text_to_video():
    s = Stream(ExpertPair(low=tiny_model(1)), seed=0, latent_hw=(4, 6))
    s.set_prompt(torch.randn(1, 6, 32))
    out = s.next_chunk()
    assert out.shape == (1, 16, 3, 4, 6)
    assert [e for e, _ in s.expert_calls] == ["low"] * 5  # 4 Self-Forcing steps + the context pass


def test_text_to_video_with_a_pair_makes_frame_zero_alone_first():
    s = Stream(pair(), seed=0, latent_hw=(4, 6))
    s.set_prompt(torch.randn(1, 6, 32))
    assert s.next_chunk().shape[2] == 1
    assert s.next_chunk().shape[2] == 3 and s.next_frame == 4


def test_bad_stream_inputs():
    with pytest.raises(ValueError, match="at least 1"):
        Stream(pair(), options=StreamOptions(chunk_frames=0))
    with pytest.raises(ValueError, match="do not match"):
        ExpertPair(low=tiny_model(1), high=tiny_model(2, num_layers=3), boundary=875)
    with pytest.raises(ValueError, match="boundary"):
        ExpertPair(low=tiny_model(1), high=tiny_model(2))
    with pytest.raises(ValueError, match="strictly decreasing"):
        plan_steps([500, 750], 5)
    s = Stream(pair())
    with pytest.raises(RuntimeError, match="set a prompt"):
        s.prime(start_latent())
    s = Stream(pair())
    s.set_prompt(torch.randn(1, 6, 32))
    with pytest.raises(ValueError, match="no latent size"):
        s.next_chunk()


def test_the_prompt_in_force_is_not_encoded_again(monkeypatch):
    from causalwan.causal.sampling.prompts import PromptChange, PromptSchedule

    experts = pair()
    calls = []
    for name, m in experts.modules().items():
        orig = m.cross_kv
        monkeypatch.setattr(m, "cross_kv", lambda *a, _o=orig, _n=name: calls.append(_n) or _o(*a))
    text = torch.randn(1, 6, 32)
    s = Stream(experts)
    s.set_prompt(text)
    s.prime(start_latent())
    list(s.run(1, PromptSchedule([PromptChange(0, text)])))  # chunk 0's prompt is the one already set
    assert calls == ["high", "low"]
    s.set_prompt(text, mode="recache")  # an explicit re-cache still runs
    assert calls == ["high", "low", "high", "low"]
