"""Swap/blocks offload: how a stream moves its KV caches between device and host (what the CUDA side-stream
copies rely on), checked on the CPU with a recording copier that keeps every brought-back cache "in flight"
until the stream waits for it, as the CUDA copier's event does; and the bytes a switch of expert holds."""
import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef

from causalwan.causal.memory.memory_plan import plan_memory
from causalwan.causal.memory.offload import apply_offload
from causalwan.causal.sampling.cache_copier import CacheCopier
from causalwan.causal.sampling.stream import Stream
from live_tensor_bytes import LiveTensorBytes
from test_offload_modes import LAYERS, pair, run


class RecordingCopier(CacheCopier):
    """Logs ("in"|"out"|"wait", expert) for whole-cache moves and ("layer", from, to, i) for each layer of a
    hand-over; copies for real (synchronously, on the CPU)."""

    def __init__(self, stream, log):
        super().__init__("cpu")
        self.s, self.log = stream, log

    def owner(self, cache):
        return next(n for n, c in self.s.caches.items() if c is cache)

    def move(self, cache, to_host):
        self.log.append(("out" if to_host else "in", self.owner(cache)))
        moved = super().move(cache, to_host)
        moved.event = None if to_host else "in flight"
        return moved

    def handover(self, out, into):
        h = super().handover(out, into)
        a, b, layer = self.owner(out), self.owner(into), h.layer

        def logged(i):
            if i not in h.done:
                self.log.append(("layer", a, b, i))
            layer(i)

        out.layer_done = h.layer = logged
        finish = h.finish

        def finished():
            finish()
            if h.reuse:
                into.event = "in flight"
        h.finish = finished
        return h

    def ready(self, cache):
        if cache.event is not None:
            self.log.append(("wait", self.owner(cache)))
            cache.event = None


def recording(experts, monkeypatch):
    """Every Stream gets a RecordingCopier; every forward logs ("start"/"end", expert), every block
    ("block", expert, i), and checks at its start that its expert's cache is on the device and no copy of it is
    in flight. Returns the log and the list of streams."""
    log, streams = [], []
    init = Stream.__init__

    def patched(self, *a, **k):
        init(self, *a, **k)
        self.copier = RecordingCopier(self, log)
        streams.append(self)

    monkeypatch.setattr(Stream, "__init__", patched)
    for name, model in experts.modules().items():
        def start(module, args, kwargs, name=name):
            c = kwargs["cache"]
            assert c is streams[-1].caches[name] and not c.parked and c.event is None, f"{name} used before wait"
            log.append(("start", name))
        model.register_forward_pre_hook(start, with_kwargs=True)
        model.register_forward_hook(lambda m, a, o, name=name: log.append(("end", name)))
        for i, blk in enumerate(model.blocks):
            blk.register_forward_pre_hook(lambda m, a, name=name, i=i: log.append(("block", name, i)))
    return log, streams


@pytest.mark.parametrize("mode", ["swap", "blocks"])
def test_the_caches_trade_places_layer_by_layer_during_the_last_call_before_a_switch(mode, monkeypatch):
    reference = run(pair(), window=7)
    experts = pair()
    apply_offload(experts, mode, "cpu")
    log, _ = recording(experts, monkeypatch)
    assert torch.equal(run(experts, window=7), reference)  # bit for bit, moves and all
    calls = [(i, log.index(("end", n), i), n) for i, (e, n, *_) in enumerate(log) if e == "start"]
    switches = early = 0
    for (s_a, e_a, a), (s_b, _, b) in zip(calls, calls[1:]):
        during, after = log[s_a:e_a], log[e_a + 1:s_b]
        handed = [m for m in during if m[0] == "layer"]
        if a == b:  # no switch: nothing moves
            assert not handed and not [m for m in after if m[0] in ("in", "out")]
            continue
        switches += 1
        # A's layer i leaves right after A's block i ran and before block i + 1: the copies overlap A's call
        assert handed == [("layer", a, b, i) for i in range(LAYERS)]
        for i in range(LAYERS - 1):
            assert during.index(("block", a, i)) < during.index(handed[i]) < during.index(("block", a, i + 1))
        assert not [m for m in after if m[0] == "out"]  # A left during its call
        moves = [m for m in after if m[0] in ("in", "wait")]
        assert moves in ([("wait", b)], [("in", b), ("wait", b)])  # B came in during A's call, or only now
        early += moves == [("wait", b)]
    assert switches >= 8  # high -> low in the steps, low -> high in the context writes, and the recache
    assert early >= switches - 2  # only the first switch to each expert finds no cache of it to bring in
    assert ("in", "high") not in log[:log.index(("start", "high"))]  # the first call finds its cache in place


def storages(caches) -> set:
    return {StorageWeakRef(t.untyped_storage()) for c in caches for t in c.buffers()}


@pytest.mark.parametrize("opts", [dict(window=7), dict(window=7, cache_dtype=torch.float8_e4m3fn)])
def test_a_switch_holds_one_cache_on_the_device_and_allocates_none(opts, monkeypatch):
    """Bytes, not the copier's word: at the start of every call the caches on the device add up to one cache;
    across a switch the incoming cache lives in the storages the outgoing one left (nothing is allocated on the
    device for it); what a switching call allocates and keeps is the outgoing cache's copy in host memory."""
    from causalwan.causal.sampling.stream import StreamOptions

    experts = pair()
    apply_offload(experts, "swap", "cpu")
    one = plan_memory(experts.config, 32, 48, frames=13, window=7, sink=1, experts=2, mode="swap",
                      weight_dtype=torch.float32, cache_dtype=opts.get("cache_dtype")).kv_cache
    seen, checks, streams = [], [], []
    call = Stream._call

    def device_bytes(module, args):  # at the start of every forward: the bytes of the caches on the device
        held = {StorageWeakRef(t.untyped_storage()): t.untyped_storage().nbytes()
                for c in streams[0].caches.values() if not c.parked for t in c.buffers()}
        checks.append(sum(held.values()))

    for model in experts.modules().values():
        model.register_forward_pre_hook(device_bytes)

    def watched(self, name, x, t, start, grad=False, then=None):
        streams[:] = [self]
        before = storages(c for c in self.caches.values() if not c.parked)
        with LiveTensorBytes() as live:
            out = call(self, name, x, t, start, grad, then)
        new = dict(live.live)  # storages allocated during the call and still alive, with their bytes
        on_device = [c for c in self.caches.values() if not c.parked]
        parked = [c for c in self.caches.values() if c.parked]
        seen.append((name, then, before, storages(on_device), new, storages(parked), self.caches[name].nbytes()))
        return out

    monkeypatch.setattr(Stream, "_call", watched)
    s = Stream(experts, seed=0, options=StreamOptions(window=7, sink=1, cache_dtype=opts.get("cache_dtype")))
    s.set_prompt(torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(9)))
    s.prime(torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(5)))
    for _ in s.chunks(3):
        pass
    assert s.cache_bytes() == 2 * one  # both experts hold a full window
    assert max(checks) == one and checks[-1] == one  # one cache on the device at every call
    reused = 0
    for name, then, before, after, new, parked, size in seen:
        if then is None or then == name or not after:
            continue  # no switch, or nothing to bring in yet
        assert after == before  # the incoming cache sits in the very storages the outgoing one had
        assert not after & new.keys()  # ... so nothing was allocated on the device for it
        kept = sum(live_bytes for ref, live_bytes in new.items() if ref in parked)
        assert kept == size  # what the call keeps of its allocations on the host: the outgoing cache's copy
        reused += 1
    assert reused >= 6


def test_a_cache_that_does_not_fit_the_leaving_buffers_comes_in_at_its_own_call(monkeypatch):
    """A window-less cache grows; the expert that grew first leaves buffers the other's cannot use, so that
    switch only parks and the other cache is copied in when its expert runs (never two caches at once)."""
    reference = run(pair())
    experts = pair()
    apply_offload(experts, "swap", "cpu")
    log, _ = recording(experts, monkeypatch)
    assert torch.equal(run(experts), reference)
    late = [i for i, m in enumerate(log) if m == ("in", "low")]  # high grows its cache first: low's is smaller
    assert late and all(log[i - 2:i] == [("layer", "high", "low", LAYERS - 1), ("end", "high")] for i in late)
    assert all(log[i + 1:i + 3] == [("wait", "low"), ("start", "low")] for i in late)  # when low runs


def test_resident_mode_moves_no_cache(monkeypatch):
    reference = run(pair(), window=7)
    experts = pair()
    apply_offload(experts, "resident", "cpu")
    log, _ = recording(experts, monkeypatch)
    assert torch.equal(run(experts, window=7), reference)
    assert not [e for e, *_ in log if e in ("in", "out", "wait", "layer")] and len(log) > 20


def test_a_failed_call_still_leaves_both_caches_whole(monkeypatch):
    """An error (or Cancel) in the middle of the switching call: the hand-over finishes the layers left, so the
    stream stays consistent (one cache on the device, the other parked with every layer)."""
    experts = pair()
    apply_offload(experts, "swap", "cpu")
    s = Stream(experts, seed=0, options=cache_copier_options())
    s.set_prompt(torch.randn(1, 6, 32))
    s.prime(torch.randn(1, 16, 1, 4, 6))
    s.next_chunk()
    name = [n for n, c in s.caches.items() if not c.parked][0]
    other = next(n for n in s.caches if n != name)
    blk = experts.get(name).blocks[1]
    hook = blk.register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("cancelled")))
    with pytest.raises(RuntimeError, match="cancelled"):
        s._call(name, torch.randn(1, 16, 3, 4, 6), 500.0, s.next_frame, then=other)
    hook.remove()
    assert s.caches[name].parked and not s.caches[other].parked
    assert s.caches[name].layer_done is None
    assert s.caches[name].nbytes() == s.caches[other].nbytes()


def cache_copier_options():
    from causalwan.causal.sampling.stream import StreamOptions

    return StreamOptions(window=7, sink=1)
