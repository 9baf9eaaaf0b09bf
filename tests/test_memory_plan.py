"""The memory planner against real tensor bytes: weights and caches exact, activations within a stated bound."""
import pytest
import torch

from causalwan.causal.model.config import A14B, WanConfig
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.model.fp8_storage import store_blocks_fp8
from causalwan.causal.memory.memory_plan import GIB, cache_slots, choose_mode, plan_memory, replace_plan
from causalwan.causal.memory.offload import apply_offload
from causalwan.causal.sampling.stream import Stream, StreamOptions
from live_tensor_bytes import LiveTensorBytes
from tiny_models import tiny_model


def nbytes(module):
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def stream(experts, chunks, hw=(4, 6), **opts):
    s = Stream(experts, seed=0, options=StreamOptions(**opts))
    s.set_prompt(torch.randn(1, 6, experts.config.text_dim, generator=torch.Generator().manual_seed(9)))
    s.prime(torch.randn(1, 16, 1, *hw, generator=torch.Generator().manual_seed(5)))
    for _ in range(chunks):
        s.next_chunk()
    return s


@pytest.mark.parametrize("kw", [{}, {"image_branch": True, "clip_dim": 24}, {"cross_attn_norm": False}])
def test_weight_bytes_exact(kw):
    model = tiny_model(1, **kw)
    plan = plan_memory(model.config, 32, 48, experts=1, weight_dtype=torch.float32)
    assert plan.weights == nbytes(model)
    assert plan_memory(model.config, 32, 48, experts=1, weight_dtype=torch.bfloat16).weights == nbytes(model) // 2


def test_fp8_weight_bytes_exact():
    model = tiny_model(1).to(torch.bfloat16)
    store_blocks_fp8(model)
    assert plan_memory(model.config, 32, 48, experts=1, weight_dtype=torch.float8_e4m3fn).weights == nbytes(model)


@pytest.mark.parametrize("mode,kw", [("swap", {}), ("blocks", {"blocks": 2}), ("blocks", {"blocks": 1})])
def test_offloaded_weight_bytes_equal_the_measured_peak(mode, kw):
    experts = ExpertPair(low=tiny_model(1, num_layers=3), high=tiny_model(2, num_layers=3), boundary=875.0)
    policy = apply_offload(experts, mode, "cpu", **kw)
    stream(experts, 2)
    plan = plan_memory(experts.config, 32, 48, experts=2, mode=mode, weight_dtype=torch.float32, **kw)
    assert policy.log.peak_bytes == plan.weights


@pytest.mark.parametrize("opts,frames", [
    ({}, 10), ({"window": 5, "sink": 1}, 13), ({"cache_dtype": torch.float8_e4m3fn}, 13),
    ({"cache_dtype": torch.bfloat16, "window": 7}, 10), ({"chunk_frames": 2}, 9),
])
def test_cache_bytes_exact(opts, frames):
    experts = ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0, share_cross_cache=True)
    chunk = opts.get("chunk_frames", 3)
    s = stream(experts, (frames - 1) // chunk, max_frames=frames, **opts)
    assert s.next_frame == frames
    plan = plan_memory(experts.config, 32, 48, frames=frames, experts=2, weight_dtype=torch.float32,
                       shared_cross=True, window=opts.get("window"), sink=opts.get("sink", 0), chunk_frames=chunk,
                       cache_dtype=opts.get("cache_dtype"))
    assert plan.kv_cache == s.cache_bytes() and plan.host == 0
    cross = {id(t): t for kvs in s.cross.values() for layer in kvs for t in layer.values()}
    assert plan.cross_cache == sum(t.numel() * t.element_size() for t in cross.values())
    s.fork()  # a continue: the upstream parks its caches in host memory, which the planner counts
    parked = replace_plan(plan, parked_frames=frames)
    assert s.parked and parked.host == s.cache_bytes() and parked.total == plan.total
    assert "host memory" in parked.describe()


def test_cache_growth_rule():
    unsized = [cache_slots(f, 3, None, sized=False) for f in (1, 4, 7, 10, 13, 16, 19, 22)]
    assert unsized == [1, 4, 8, 16, 16, 16, 32, 32]
    assert cache_slots(21, 3, None) == 21
    assert cache_slots(100, 3, 21) == 21


CONFIGS = [
    dict(dim=128, ffn_dim=352, num_heads=2),  # A14B-like ffn/dim ratio 2.7
    dict(dim=96, ffn_dim=560, num_heads=1),  # 1.3B-like ratio 5.8
]


@pytest.mark.parametrize("cfg_kw", CONFIGS)
@pytest.mark.parametrize("opts", [{}, {"window": 7}, {"cache_dtype": torch.float8_e4m3fn}, {"dtype": torch.bfloat16}])
def test_activation_prediction_bounds_the_measured_peak(cfg_kw, opts):
    """measured <= predicted <= 1.5 x measured, for one forward of the last chunk over the full cache."""
    opts = dict(opts)
    dtype = opts.pop("dtype", torch.float32)
    kw = dict(cfg_kw, text_dim=32, text_len=16, freq_dim=32, num_layers=2)
    low = tiny_model(1, **kw).to(dtype)
    experts = ExpertPair(low=low)
    hw = (8, 12)
    s = stream(experts, 3, hw=hw, **opts)
    x = torch.randn(1, 16, 3, *hw)
    with torch.no_grad(), LiveTensorBytes() as live:  # the last chunk again: same slots, nothing allocated
        low(x, torch.full((1,), 500.0), cross_kv=s.cross["low"], cache=s.caches["low"], start_frame=s.next_frame - 3)
    plan = plan_memory(low.config, 8 * hw[0], 8 * hw[1], frames=s.next_frame, experts=1, weight_dtype=dtype, **opts)
    assert live.peak <= plan.activations <= 1.5 * live.peak


def test_a14b_figures_match_the_facts_sheet():
    plan = plan_memory(A14B, 480, 832, window=21, experts=2)
    params = (plan.weights / 2) / 2
    assert abs(params - 14.29e9) / 14.29e9 < 0.005
    assert plan.kv_cache == 2 * 2 * 40 * 21 * 1560 * 5120 * 2  # experts x (k, v) x layers x tokens x dim x bf16
    assert 24 * GIB < plan.kv_cache / 2 < 26 * GIB
    assert plan.cross_cache == 2 * 2 * 40 * 512 * 5120 * 2
    assert 0.5 * GIB < plan.activations < 4 * GIB  # the window policy re-rotates only the sink keys
    line = plan.describe()
    assert line.startswith("resident (all weights resident) at 480x832, window 21: peak ")
    assert "KV cache 50.0 (bfloat16)" in line


@pytest.mark.parametrize("free_gib,weights,cache,mode", [
    (80, torch.bfloat16, None, "swap"),
    (48, torch.bfloat16, None, "blocks"),
    (80, torch.bfloat16, torch.float8_e4m3fn, "swap"),
    (80, torch.float8_e4m3fn, torch.float8_e4m3fn, "resident"),
    (139, torch.bfloat16, None, "resident"),
])
def test_choose_mode_for_real_gpus(free_gib, weights, cache, mode):
    plan = choose_mode(free_gib * GIB, A14B, 480, 832, window=21, weight_dtype=weights, cache_dtype=cache)
    assert plan.mode == mode and plan.fits(free_gib * GIB)


def test_choose_mode_falls_back_to_the_smallest_plan():
    plan = choose_mode(10 * GIB, A14B, 480, 832, window=21, blocks=3)
    assert plan.mode == "blocks" and plan.blocks == 1 and not plan.fits(10 * GIB)


def test_planner_errors():
    cfg = WanConfig()
    with pytest.raises(ValueError, match="unknown offload mode 'disk'"):
        plan_memory(cfg, 480, 832, mode="disk")
    with pytest.raises(ValueError, match="multiples of 16, got 480x830"):
        plan_memory(cfg, 480, 830)


def test_a14b_pair_fits_a_16_gib_card_with_fp8_and_a_12_frame_window():
    kw = dict(frames=12, window=12, sink=3, experts=2, weight_dtype=torch.float8_e4m3fn,
              cache_dtype=torch.float8_e4m3fn, shared_cross=True)
    blocks = plan_memory(A14B, 480, 832, mode="blocks", **kw)
    assert blocks.total < 14 * GIB and blocks.host == blocks.kv_cache  # the idle expert's cache waits on the host
    resident = plan_memory(A14B, 480, 832, mode="resident", **kw)
    assert resident.kv_cache == 2 * blocks.kv_cache and resident.host == 0
    free = 15.5 * GIB  # what a 16 GB card leaves free
    chosen = choose_mode(free, A14B, 480, 832, **kw)
    assert chosen.mode == "blocks" and chosen.fits(free)
    assert not plan_memory(A14B, 480, 832, mode="swap", **kw).fits(free)
