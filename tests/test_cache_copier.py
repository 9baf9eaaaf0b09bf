"""Swap/blocks offload: the order in which a stream moves its KV caches between device and host (what the CUDA
side-stream copies rely on), checked on the CPU with a recording copier that keeps every brought-back cache "in
flight" until the stream waits for it, as the CUDA copier's event does."""
import pytest
import torch

from causalwan.causal.memory.offload import apply_offload
from causalwan.causal.sampling.cache_copier import CacheCopier
from causalwan.causal.sampling.stream import Stream
from test_offload_modes import pair, run


class RecordingCopier(CacheCopier):
    """Logs ("in"|"out"|"wait", expert); copies for real (synchronously, on the CPU)."""

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

    def ready(self, cache):
        if cache.event is not None:
            self.log.append(("wait", self.owner(cache)))
            cache.event = None


def recording(experts, monkeypatch):
    """Every Stream gets a RecordingCopier; every forward logs ("start"/"end", expert) and checks, at its start,
    that its expert's cache is on the device and no copy of it is in flight."""
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
    return log


@pytest.mark.parametrize("mode", ["swap", "blocks"])
def test_next_experts_cache_is_copied_in_during_the_last_call_of_the_other(mode, monkeypatch):
    reference = run(pair(), window=7)
    experts = pair()
    apply_offload(experts, mode, "cpu")
    log = recording(experts, monkeypatch)
    assert torch.equal(run(experts, window=7), reference)  # bit for bit, moves and all
    calls = [(i, log.index(("end", n), i), n) for i, (e, n) in enumerate(log) if e == "start"]
    switches, prev_end = 0, -1
    for (s_a, e_a, a), (s_b, _, b) in zip(calls, calls[1:]):
        before, after = log[prev_end + 1:s_a], log[e_a + 1:s_b]  # around A's call, up to B's
        prev_end = e_a
        if a == b:  # no switch: nothing comes in for A's call, nothing leaves after it
            assert not [m for m in before if m[0] == "in"] and not [m for m in after if m[0] == "out"]
            continue
        switches += 1
        assert [m for m in before if m[0] == "in"] == [("in", b)]  # B's copy in issued before A's call finished
        assert [m for m in after if m[0] in ("out", "wait")] == [("out", a), ("wait", b)]  # A leaves, B is waited for
    assert switches >= 8  # high -> low in the steps, low -> high in the context writes, and the recache
    assert ("in", "high") not in log[:log.index(("start", "high"))]  # the first call finds its cache in place


def test_resident_mode_moves_no_cache(monkeypatch):
    reference = run(pair(), window=7)
    experts = pair()
    apply_offload(experts, "resident", "cpu")
    log = recording(experts, monkeypatch)
    assert torch.equal(run(experts, window=7), reference)
    assert not [e for e, _ in log if e in ("in", "out", "wait")] and len(log) > 20
