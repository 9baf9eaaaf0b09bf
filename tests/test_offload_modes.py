"""Offload modes on CPU: bit-identical streams, and the residency promise checked two ways (the policy's own log
and, independently, which weights the Linear layers actually read when they run)."""
import pytest
import torch
import torch.nn as nn

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.model.fp8_storage import store_blocks_fp8
from causalwan.causal.memory.memory_plan import plan_memory
from causalwan.causal.memory.offload import apply_offload
from causalwan.causal.sampling.stream import Stream, StreamOptions
from tiny_models import tiny_model

LAYERS = 4


def pair(fp8=False):
    low, high = tiny_model(1, num_layers=LAYERS), tiny_model(2, num_layers=LAYERS)
    if fp8:
        store_blocks_fp8(low), store_blocks_fp8(high)
    return ExpertPair(low=low, high=high, boundary=875.0)


def run(experts, chunks=3, window=None):
    s = Stream(experts, seed=0, options=StreamOptions(window=window, sink=1 if window else 0))
    s.set_prompt(torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(9)))
    s.prime(torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(5)))
    out = torch.cat(list(s.chunks(chunks)), 2)
    s.set_prompt(torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3)), mode="recache")
    return torch.cat([out, s.next_chunk()], 2)


class Watch:
    """Independent of the policy: before every Linear inside a block runs, check it reads a loaded copy (not the
    storage master) and count the blocks whose weights are loaded copies at that moment."""

    def __init__(self, experts):
        self.masters = {}
        self.blocks = []
        for name, model in experts.modules().items():
            for i, blk in enumerate(model.blocks):
                self.blocks.append((name, blk))
                for lin in blk.modules():
                    if isinstance(lin, nn.Linear) or hasattr(lin, "scale_weight"):
                        self.masters[id(lin)] = lin.weight.data_ptr()
        self.max_blocks = self.max_experts = self.linear_calls = self.master_reads = 0
        self.handles = []

    def attach(self):
        for _, blk in self.blocks:
            for lin in blk.modules():
                if id(lin) in self.masters:
                    self.handles.append(lin.register_forward_pre_hook(self.check))

    def loaded(self, blk):
        return any(m.weight.data_ptr() != self.masters[id(m)] for m in blk.modules() if id(m) in self.masters)

    def check(self, lin, args):
        self.linear_calls += 1
        self.master_reads += lin.weight.data_ptr() == self.masters[id(lin)]
        on = [name for name, blk in self.blocks if self.loaded(blk)]
        self.max_blocks = max(self.max_blocks, len(on))
        self.max_experts = max(self.max_experts, len(set(on)))


@pytest.fixture(scope="module")
def reference():
    return run(pair())


@pytest.mark.parametrize("mode,kw,max_blocks,max_experts", [
    ("swap", {}, LAYERS, 1),
    ("swap", {"prefetch": 0}, LAYERS, 1),
    ("blocks", {"blocks": 1}, 1, 1),
    ("blocks", {"blocks": 2}, 2, 1),
    ("blocks", {"blocks": 3}, 3, 1),
])
def test_mode_is_bit_identical_and_keeps_its_promise(reference, mode, kw, max_blocks, max_experts):
    experts = pair()
    watch = Watch(experts)
    policy = apply_offload(experts, mode, "cpu", **kw)
    watch.attach()
    out = run(experts)
    assert torch.equal(out, reference)
    log = policy.log
    assert policy.mode == mode
    assert log.peak_blocks == max_blocks and log.peak_experts == max_experts
    assert watch.master_reads == 0 and watch.linear_calls > 0  # every Linear ran on a loaded copy
    assert watch.max_blocks == max_blocks and watch.max_experts == max_experts
    steps = log.compute_snapshots()
    assert len(steps) == log.compute_steps + 2 * 2 * LAYERS  # + two set_prompt calls x 2 experts x cross_kv
    for s in steps:  # at every step the running block is there, and nothing beyond the promise
        assert (s.expert, s.block) in s.blocks
        assert len(s.blocks) <= max_blocks and {e for e, _ in s.blocks} == {s.expert}


def test_resident_mode_keeps_everything_and_copies_nothing_on_cpu(reference):
    experts = pair()
    policy = apply_offload(experts, "resident", "cpu")
    assert torch.equal(run(experts), reference)
    assert policy.log.peak_blocks == 2 * LAYERS and policy.log.bytes_copied == 0


def after_one_chunk(mode, **kw):
    """An offloaded pair and a stream that made one chunk (it ends with the high expert's context pass)."""
    experts = pair()
    policy = apply_offload(experts, mode, "cpu", **kw)
    s = Stream(experts, seed=0)
    s.set_prompt(torch.randn(1, 6, 32))
    s.prime(torch.randn(1, 16, 1, 4, 6))
    s.next_chunk()
    return experts, policy, s


def test_swap_moves_an_expert_twice_per_chunk():
    experts, policy, s = after_one_chunk("swap", prefetch=1)  # leaves the high expert resident
    before = policy.log.loads
    s.next_chunk()  # 3 high steps, 5 low, context low then high: high -> low -> high
    assert policy.log.loads - before == 2 * LAYERS
    assert policy.log.bytes_copied > 0


def test_fp8_weights_offloaded_equal_fp8_resident():
    a, b = pair(fp8=True), pair(fp8=True)
    apply_offload(b, "blocks", "cpu", blocks=2)
    assert torch.equal(run(a, chunks=2), run(b, chunks=2))


def test_window_stream_is_bit_identical_under_blocks_mode():
    ref = run(pair(), chunks=4, window=5)
    experts = pair()
    apply_offload(experts, "blocks", "cpu", blocks=2)
    assert torch.equal(run(experts, chunks=4, window=5), ref)


@pytest.mark.parametrize("free_gib,mode", [(1, "resident"), (None, "swap"), (None, "blocks")])
def test_auto_picks_from_free_memory(free_gib, mode):
    experts = pair()
    kw = dict(height=32, width=48, frames=10)
    plans = {m: plan_memory(experts.config, 32, 48, frames=10, mode=m, experts=2, weight_dtype=torch.float32,
                            blocks=2) for m in ("resident", "swap", "blocks")}
    assert plans["resident"].weights > plans["swap"].weights > plans["blocks"].weights
    free = (free_gib or 0) * 2 ** 30 or plans[mode].needed() + 1
    policy = apply_offload(experts, "auto", "cpu", free_bytes=free, blocks=2, **kw)
    assert policy.mode == mode and policy.plan.mode == mode and policy.plan.needed() <= free
    assert mode in policy.describe()


def test_auto_without_cuda_is_resident():
    policy = apply_offload(pair(), "auto", "cpu")
    assert policy.mode == "resident" and policy.plan is None


def test_remove_restores_the_plain_models(reference):
    experts = pair()
    masters = [p.data_ptr() for p in experts.low.parameters()]
    policy = apply_offload(experts, "blocks", "cpu", blocks=1)
    run(experts, chunks=1)
    policy.remove()
    assert experts.placement is None
    assert all(not blk._forward_pre_hooks and not blk._forward_hooks and "kv" not in blk.cross_attn.__dict__
               for m in experts.modules().values() for blk in m.blocks)
    assert [p.data_ptr() for p in experts.low.parameters()] == masters
    assert torch.equal(run(experts), reference)
    apply_offload(experts, "swap", "cpu").remove(torch.device("meta"))  # release: weights dropped
    assert {p.device.type for p in experts.high.parameters()} == {"meta"}


def test_errors_are_readable():
    experts = pair()
    with pytest.raises(ValueError, match="unknown offload mode 'disk'"):
        apply_offload(experts, "disk", "cpu")
    with pytest.raises(ValueError, match="at least 1 block"):
        apply_offload(experts, "blocks", "cpu", blocks=0)
    apply_offload(experts, "swap", "cpu")
    with pytest.raises(RuntimeError, match="already has an offload policy"):
        apply_offload(experts, "blocks", "cpu")
    same = tiny_model(1)
    with pytest.raises(ValueError, match="same module"):
        apply_offload(ExpertPair(low=same, high=same, boundary=875.0), "swap", "cpu")


@pytest.mark.parametrize("mode", ["swap", "blocks"])
def test_only_the_running_experts_kv_cache_is_on_the_device(mode, monkeypatch):
    reference = run(pair(), window=7)
    experts = pair()
    apply_offload(experts, mode, "cpu")
    seen, place = [], Stream._place_caches

    def spy(self, active):
        place(self, active)
        seen.append((active, [n for n, c in self.caches.items() if not c.parked],
                     sum(c.nbytes() for c in self.caches.values() if not c.parked), self))

    monkeypatch.setattr(Stream, "_place_caches", spy)
    assert torch.equal(run(experts, window=7), reference)  # parking changes nothing in the video
    assert {a for a, _, _, _ in seen} == {"high", "low"} and all(live == [a] for a, live, _, _ in seen)
    s = seen[-1][3]
    plan = plan_memory(experts.config, 32, 48, frames=13, window=7, sink=1, experts=2, mode=mode,
                       weight_dtype=torch.float32)
    assert max(b for _, _, b, _ in seen) == plan.kv_cache  # one expert's cache on the device, as planned
    assert plan.host == sum(c.nbytes() for c in s.caches.values() if c.parked) > 0  # the other one on the host


@pytest.mark.parametrize("mode,fp8", [("swap", False), ("blocks", True)])
def test_pinned_masters_fill_one_arena_per_expert_of_the_weights_size(mode, fp8, monkeypatch):
    from causalwan.causal.memory import host_arena

    pinned = {}  # what a CUDA machine would page-lock: address -> bytes
    monkeypatch.setattr(host_arena, "_register", lambda ptr, n: pinned.__setitem__(ptr, n))
    monkeypatch.setattr(host_arena, "_unregister", lambda ptr: pinned.pop(ptr))
    reference = run(pair(fp8))
    experts = pair(fp8)
    weights = {n: sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
               for n, m in experts.modules().items()}
    count = {n: len([*m.parameters(), *m.buffers()]) for n, m in experts.modules().items()}
    policy = apply_offload(experts, mode, "cpu", pin=True)
    for name, arena in policy.arenas.items():
        masters = [t for s in [policy.base[name], *policy.slots[name]] for t in s.masters]
        assert {t.untyped_storage().data_ptr() for t in masters} == {arena.buffer.data_ptr()}  # views, one block
        assert weights[name] <= arena.nbytes == arena.used <= weights[name] + host_arena.ALIGN * count[name]
        assert pinned[arena.buffer.data_ptr()] == arena.nbytes
    assert len(pinned) == 2
    assert torch.equal(run(experts), reference)  # the masters are the weights
    policy.remove()
    assert pinned == {}  # unpinned on release


def test_an_arena_dropped_without_release_is_unpinned(monkeypatch):
    import gc

    from causalwan.causal.memory import host_arena

    pinned = {}
    monkeypatch.setattr(host_arena, "_register", lambda ptr, n: pinned.__setitem__(ptr, n))
    monkeypatch.setattr(host_arena, "_unregister", lambda ptr: pinned.pop(ptr))
    arena = host_arena.HostArena(host_arena.arena_bytes(torch.ones(10)))
    view = arena.take(torch.arange(10.0))
    arena.pin()
    assert arena.pinned and len(pinned) == 1
    del arena  # e.g. a load that failed after pinning: nobody calls release()
    gc.collect()
    assert pinned == {}
    assert torch.equal(view, torch.arange(10.0))  # the view stays valid as ordinary host memory


def test_blocks_mode_copies_the_first_blocks_of_the_next_forward_while_the_last_run():
    experts, policy, s = after_one_chunk("blocks", blocks=3)
    assert policy._loaded_blocks() == [("high", 0), ("high", 1)]  # already there for its next forward
    loads = policy.log.loads
    with torch.no_grad():
        experts.get("high")(torch.randn(1, 16, 3, 4, 6), torch.zeros(1), cross_kv=s.cross["high"])
    assert policy.log.loads - loads == LAYERS - 2 + 2  # blocks 2.. of this forward, then 0 and 1 of the next
    assert policy.log.peak_blocks == 3
