"""The training rollout runs through the inference Stream: same samples, grad only at the exit step."""
import pytest
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.schedule import CAUSALWAN_A14B_STEPS, SELF_FORCING_STEPS
from causalwan.causal.sampling.stream import Stream, StreamOptions
from causalwan.causal.training.activation_checkpointing import checkpoint_blocks
from causalwan.causal.training.rollout import plan_of, rollout
from tiny_models import tiny_model

HW = (4, 4)


def pair(shared=False):
    return ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0, share_cross_cache=shared)


def text():
    return torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(9))


def inference(experts, seeds, steps, frames, start=None):
    """The inference Stream with the step list cut at the exit step."""
    s = Stream(experts, seed=seeds, options=StreamOptions(steps=steps), latent_hw=HW, batch=len(seeds))
    s.set_prompt(text()[:len(seeds)])
    parts = []
    if start is not None:
        s.prime(start)
        parts.append(start)
    while s.next_frame < frames:
        parts.append(s.next_chunk(None if (s.next_frame == 0 and start is None and experts.high is not None)
                                  else min(3, frames - s.next_frame)))
    return torch.cat(parts, 2)


@pytest.mark.parametrize("shared", [False, True])  # True: the loader's default, which training uses
@pytest.mark.parametrize("exit_step", range(8))
def test_pair_rollout_equals_inference_and_only_the_exit_expert_gets_gradient(exit_step, shared):
    gen = pair(shared)
    plan = plan_of(gen, CAUSALWAN_A14B_STEPS)
    ro = rollout(gen, text(), [11, 12], 7, HW, exit_step, steps=CAUSALWAN_A14B_STEPS, grad=True)
    with torch.no_grad():
        ref = inference(gen, [11, 12], CAUSALWAN_A14B_STEPS[:exit_step + 1], 7)
    assert ro.video.shape == (2, 16, 7, 4, 4)
    assert (ro.video.detach() - ref).abs().max() <= 1e-6
    expert = plan[exit_step].expert
    assert ro.expert == expert
    assert ro.grad_calls == [(expert, plan[exit_step].t)] * 3  # one grad call per chunk (frame 0, 3, 3)
    ro.video.square().sum().backward()
    other = "low" if expert == "high" else "high"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.get(expert).parameters())
    assert all(p.grad is None for p in gen.get(other).parameters())


def test_dense_image_to_video_rollout_equals_inference():
    gen = ExpertPair(low=tiny_model(3))
    start = torch.randn(1, 16, 1, *HW, generator=torch.Generator().manual_seed(4))
    for k in range(4):
        ro = rollout(gen, text()[:1], [5], 7, HW, k, steps=SELF_FORCING_STEPS, start_latent=start, grad=True)
        with torch.no_grad():
            ref = inference(gen, [5], SELF_FORCING_STEPS[:k + 1], 7, start)
        assert (ro.video.detach() - ref).abs().max() <= 1e-6
        assert torch.equal(ro.video[:, :, :1].detach(), start)  # the start frame is the primed latent


def test_gradient_never_reaches_the_kv_cache_and_earlier_steps():
    gen = ExpertPair(low=tiny_model(3))
    s = Stream(gen, seed=1, options=StreamOptions(steps=SELF_FORCING_STEPS), latent_hw=HW)
    s.set_prompt(text()[:1])
    with torch.enable_grad():
        a = s.next_chunk(exit_step=2)
        b = s.next_chunk(exit_step=2)
    assert a.requires_grad and b.requires_grad
    cache = s.caches["low"]
    assert all(not t.requires_grad for t in cache.k + cache.v)
    assert [t for _, t in s.grad_calls] == [s.plan[2].t] * 2
    # the second chunk's gradient does not flow into the first chunk's output (its context is detached)
    grad_a, = torch.autograd.grad(b.sum(), [a], allow_unused=True)
    assert grad_a is None


def test_rollout_gradient_with_checkpointed_blocks_is_the_same():
    def grads(ckpt):
        gen = ExpertPair(low=tiny_model(3))
        if ckpt:
            checkpoint_blocks(gen.low)
        ro = rollout(gen, text()[:1], [2], 7, HW, 1, steps=SELF_FORCING_STEPS, grad=True)
        ro.video.square().mean().backward()
        return ro.video.detach(), [p.grad.clone() for p in gen.low.parameters()]

    v0, g0 = grads(False)
    v1, g1 = grads(True)
    assert torch.equal(v0, v1)
    assert max((a - b).abs().max().item() for a, b in zip(g0, g1)) <= 1e-6


def test_the_live_rows_are_built_once_per_chunk_for_every_layer(monkeypatch):
    """Under grad each layer writes this chunk's live keys into the rows read from the cache; the row index is
    built once per chunk (the plan keeps it), not once per layer, and the outputs are those of inference."""
    import sys

    from causalwan.causal.model import kv_cache
    from causalwan.causal.model.kv_cache import KVCache

    m = tiny_model(3)
    assert m.config.num_layers >= 2
    g = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(1, 16, 3, *HW, generator=g), torch.randn(1, 7, m.config.text_dim, generator=g)
    t = torch.full((1, 3), 500.0)
    built, arange = [], torch.arange
    monkeypatch.setattr(torch, "arange", lambda *a, **k: (
        built.append(1) if sys._getframe(1).f_code.co_filename == kv_cache.__file__ else None) or arange(*a, **k))
    plans, plan = [], KVCache.plan
    monkeypatch.setattr(KVCache, "plan", lambda self, *a, **k: plans.append(plan(self, *a, **k)) or plans[-1])
    live, still = KVCache(m.config.num_layers), KVCache(m.config.num_layers)
    with torch.no_grad():
        m(x[:, :, :1], t[:, :1], ctx, cache=live, start_frame=0)
        m(x[:, :, :1], t[:, :1], ctx, cache=still, start_frame=0)
        want = m(x[:, :, 1:], t[:, 1:], ctx, cache=still, start_frame=1)
    built.clear()
    m.requires_grad_(True)
    with torch.enable_grad():
        got = m(x[:, :, 1:], t[:, 1:], ctx, cache=live, start_frame=1)
    assert got.requires_grad and len(built) == 1  # one index for the chunk, shared by the layers
    rows = torch.arange(2)[:, None] * plans[-1].tokens_per_frame + torch.arange(plans[-1].tokens_per_frame)
    assert torch.equal(plans[-1].live_rows, rows.flatten() + plans[-1].tokens_per_frame)
    assert torch.equal(got.detach(), want)
