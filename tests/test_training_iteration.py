"""One DMD iteration's structure: which rollout each loss sees, which frames are scored, when the EMA starts."""
import torch

import causalwan.causal.training.trainer as trainer_module
from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.training import draws
from causalwan.causal.training.conditioning import PromptSet
from causalwan.causal.training.config import TrainConfig
from causalwan.causal.training.scores import noised
from causalwan.causal.training.trainer import DMDTrainer
from test_training_dmd import record_calls
from tiny_models import tiny_model


def make(starts=None, **kw):
    gen, teacher = ExpertPair(low=tiny_model(1)), ExpertPair(low=tiny_model(3))
    cfg = TrainConfig(**{**dict(steps=4, batch_size=2, latent_frames=4, latent_height=4, latent_width=4,
                                gen_update_every=2, lr_generator=1e-2, lr_critic=1e-3, seed=2), **kw})
    prompts = PromptSet([torch.randn(5, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)],
                        torch.zeros(2, 32), starts)
    return DMDTrainer(cfg, gen, teacher, prompts)


def test_image_to_video_start_frame_is_not_scored():
    starts = [torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    tr = make(starts, latent_frames=7)
    calls = []
    record_calls("teacher", tr.teacher, calls)
    record_calls("critic", tr.critic, calls)
    tr.train(steps=2)  # a generator turn and a critic-only turn
    assert len(calls) == 2 + 1 + 1 + 1  # teacher cond/uncond, critic fake score, critic update x2
    assert {frames for *_, frames in calls} == {6}  # the 6 generated frames, never the primed start frame


def weights(tr):
    return {k: v.detach().clone() for k, v in tr.generator.low.named_parameters()}


def test_ema_starts_at_the_iteration_count_critic_steps_included():
    tr = make(ema_start=3)  # generator turns at steps 0, 2, 4: the EMA copies at 0 and 2, averages from step 4
    tr.train(steps=3)
    before = weights(tr)
    assert all(torch.equal(tr.ema.weights("low")[k], v) for k, v in before.items())  # still a copy
    tr.train(steps=5)
    after = weights(tr)
    assert any(not torch.equal(before[k], after[k]) for k in after)
    ema = tr.ema.weights("low")
    for k in after:
        assert torch.allclose(ema[k], 0.99 * before[k] + 0.01 * after[k], atol=1e-6)


def test_critic_trains_on_a_fresh_rollout_made_after_the_generator_update(monkeypatch):
    tr = make()
    made = []

    def recording_rollout(generator, *args, grad=False, **kw):
        ro = real_rollout(generator, *args, grad=grad, **kw)
        made.append((grad, weights(tr), ro.video.detach().clone()))
        return ro

    real_rollout = trainer_module.rollout
    monkeypatch.setattr(trainer_module, "rollout", recording_rollout)
    critic_inputs = []
    tr.critic.low.register_forward_hook(lambda m, args, out: critic_inputs.append(args[0].detach().clone()))
    info = tr.step_once()  # step 0: a generator turn
    assert [g for g, _, _ in made] == [True, False]
    (_, w_gen, _), (_, w_critic, video) = made
    assert any(not torch.equal(w_gen[k], w_critic[k]) for k in w_gen)  # made by the updated generator
    seeds, *_ = tr.conditioning(0, "critic")
    x_t = noised(video, draws.noise_like(video.shape, seeds, "critic"), info["t_critic"])
    assert torch.allclose(critic_inputs[-1], x_t, atol=1e-6)  # the critic learned on that fresh video
    made.clear()
    tr.step_once()  # step 1: the critic alone, on one rollout without grad
    assert [g for g, _, _ in made] == [False]


def test_start_images_are_drawn_apart_from_the_prompts():
    starts = [torch.full((1, 16, 1, 4, 4), float(i)) for i in range(3)]
    tr = make(starts, batch_size=1)  # 2 prompts, 3 start images
    pairs = set()
    for s in range(40):
        _, ctx, _, start = tr.conditioning(s)
        prompt = next(i for i, c in enumerate(tr.prompts.contexts) if torch.equal(ctx[0, :5], c))
        pairs.add((prompt, int(start[0, 0, 0, 0, 0])))
    assert pairs == {(p, i) for p in range(2) for i in range(3)}  # every image with every prompt
