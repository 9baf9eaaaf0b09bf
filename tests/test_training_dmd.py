"""DMD against a teacher whose score is exact (Gaussian data), and the MoE rules per iteration."""
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.schedule import CAUSALWAN_A14B_STEPS
from causalwan.causal.training.conditioning import PromptSet
from causalwan.causal.training.config import TrainConfig
from causalwan.causal.training.dmd_loss import dmd_gradient, dmd_loss
from causalwan.causal.training.rollout import plan_of
from causalwan.causal.training.trainer import DMDTrainer
from gaussian_score import AffineGenerator, GaussianDenoiser
from tiny_models import tiny_model

MEAN, STD = [0.5, -1.0, 2.0, 0.0], [1.0, 0.5, 1.5, 0.8]


def gaussian_run(a, b, steps):
    gen = ExpertPair(low=AffineGenerator(a, b))
    teacher = ExpertPair(low=GaussianDenoiser(MEAN, STD))
    cfg = TrainConfig(steps=steps, batch_size=4, latent_frames=3, latent_height=4, latent_width=4,
                      denoise_steps=(1000,), guidance=0.0, lr_generator=0.05, lr_critic=0.05, weight_decay=0.0)
    DMDTrainer(cfg, gen, teacher, PromptSet([torch.zeros(2, 8)], torch.zeros(2, 8))).train()
    return gen.low.a.detach(), gen.low.b.detach().abs()


def test_dmd_gradient_is_normalised_and_is_the_loss_gradient():
    x0 = torch.randn(2, 4, 3, 4, 4, requires_grad=True)
    real, fake = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    g = dmd_gradient(x0, real, fake)
    norm = (x0 - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    assert torch.allclose(g, (fake - real) / norm)
    dmd_loss(x0, real, fake).backward()
    assert torch.allclose(x0.grad, g / x0.numel(), atol=1e-9)


def test_dmd_moves_a_far_generator_to_the_data_statistics():
    """Starting 3 away in mean and twice the std, 1500 iterations (300 generator updates) bring every channel's
    mean and std within 0.1 of the data's."""
    a, b = gaussian_run([m + 3 for m in MEAN], [2 * s for s in STD], 1500)
    assert (a - torch.tensor(MEAN)).abs().max() < 0.1
    assert (b - torch.tensor(STD)).abs().max() < 0.1


def test_dmd_leaves_a_generator_that_matches_the_data_in_place():
    a, b = gaussian_run(MEAN, STD, 500)
    assert (a - torch.tensor(MEAN)).abs().max() < 0.1
    assert (b - torch.tensor(STD)).abs().max() < 0.1


def record_calls(role: str, pair: ExpertPair, calls: list) -> None:
    """Append (role, expert name, t, frames) for every forward of the pair's modules: what really ran."""
    for name, m in pair.modules().items():
        m.register_forward_hook(lambda mod, args, out, role=role, name=name: calls.append(
            (role, name, float(torch.as_tensor(args[1]).flatten()[0]), args[0].shape[2])))


def test_moe_expert_and_timestep_range_per_iteration():
    gen = ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0)
    teacher = ExpertPair(low=tiny_model(3), high=tiny_model(4), boundary=875.0)
    plan = plan_of(gen, CAUSALWAN_A14B_STEPS)
    cfg = TrainConfig(steps=16, batch_size=1, latent_frames=4, latent_height=4, latent_width=4, gen_update_every=1,
                      seed=3)
    tr = DMDTrainer(cfg, gen, teacher, PromptSet([torch.randn(5, 32)], torch.zeros(2, 32)))
    calls, seen = [], []
    record_calls("teacher", teacher, calls)
    record_calls("critic", tr.critic, calls)
    tr.train(callback=lambda info: (seen.append((info, list(calls))), calls.clear()))
    assert len(seen) == 16
    for info, ran in seen:
        step = plan[info["exit_step"]]
        assert info["expert"] == step.expert
        assert info["grad_calls"] == [(step.expert, step.t)] * 2  # frame 0 alone, then one chunk of 3
        assert info["gen_grad_experts"] == [step.expert]  # only the expert that produced the sample learns
        lo = 875.0 if step.expert == "high" else 20.0
        assert info["t_range"] == (lo, 980.0)
        assert lo <= info["t_gen"] <= 980.0
        c_lo = 875.0 if plan[info["critic_exit_step"]].expert == "high" else 20.0  # the critic's own rollout
        assert info["critic_t_range"] == (c_lo, 980.0) and c_lo <= info["t_critic"] <= 980.0
        # the modules that really ran: teacher cond + uncond and the critic's fake score at t_gen, then the
        # critic's training call at t_critic, each through the expert that owns that t
        owner = lambda t: "high" if t >= 875.0 else "low"  # noqa: E731
        t_g, t_c = (float(torch.tensor(info[k], dtype=torch.float32)) for k in ("t_gen", "t_critic"))
        assert [c[:3] for c in ran] == [("teacher", owner(t_g), t_g)] * 2 + [("critic", owner(t_g), t_g),
                                                                         ("critic", owner(t_c), t_c)]
        assert (info["teacher_expert"], info["critic_expert"]) == (owner(t_g), owner(t_c))
    experts = {i["expert"] for i, _ in seen}
    assert experts == {"high", "low"}  # both kinds of rollout occurred in this run
    assert min(i["t_gen"] for i, _ in seen if i["expert"] == "low") < 875.0  # full range really drawn
    assert {i["critic_expert"] for i, _ in seen} == {"high", "low"}
