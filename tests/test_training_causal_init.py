"""Causal initialisation: the teacher's ODE passes through the student's step timesteps, and regressing the
causal student onto the ODE end points lowers its error."""
import pytest
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.schedule import SELF_FORCING_STEPS
from causalwan.causal.sampling.stream import chunk_sizes
from causalwan.causal.training.causal_init import ode_grid, ode_trajectory
from causalwan.causal.training.conditioning import PromptSet
from causalwan.causal.training.config import TrainConfig
from causalwan.causal.training.rollout import plan_of
from causalwan.causal.training.trainer import DMDTrainer
from gaussian_score import GaussianDenoiser
from tiny_models import tiny_model


def test_ode_grid_holds_the_student_steps_and_reaches_the_data():
    plan = plan_of(ExpertPair(low=tiny_model(1)), SELF_FORCING_STEPS)
    grid = ode_grid(8, 5.0, plan)
    assert grid[0] == 1000 and grid[-1] == 0 and grid == sorted(grid, reverse=True)
    assert {s.t for s in plan} <= set(grid)
    teacher = ExpertPair(low=GaussianDenoiser([2.0, -1.0], [0.5, 1.5]))
    noise = torch.randn(64, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    states, x0 = ode_trajectory(teacher, noise, None, None, 0.0, ode_grid(200, 5.0, plan), {plan[1].t})
    assert list(states) == [plan[1].t]
    # the exact probability-flow ODE of a Gaussian maps N(0, 1) onto the data's N(mean, std^2)
    assert torch.allclose(x0.mean(dim=(0, 2, 3, 4)), torch.tensor([2.0, -1.0]), atol=0.05)
    assert torch.allclose(x0.std(dim=(0, 2, 3, 4)), torch.tensor([0.5, 1.5]), atol=0.05)
    assert chunk_sizes(7, 3, True) == [1, 3, 3] and chunk_sizes(7, 3, False) == [3, 3, 1]


def test_regression_onto_teacher_trajectories_lowers_the_loss():
    teacher = ExpertPair(low=tiny_model(3))
    student = ExpertPair(low=tiny_model(5))
    cfg = TrainConfig(latent_frames=6, latent_height=4, latent_width=4, init_lr=3e-3, teacher_steps=6, guidance=1.0)
    tr = DMDTrainer(cfg, student, teacher, PromptSet([torch.randn(4, 32)], torch.zeros(2, 32)))
    before = [p.detach().clone() for p in student.low.parameters()]
    losses = tr.causal_init(40)
    assert len(losses) == 40 and tr.init_steps_done == 40
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8
    assert any((a - b).abs().max() > 0 for a, b in zip(before, student.low.parameters()))
    ema = tr.ema.weights("low")  # the EMA starts from the initialised student
    assert all(torch.equal(ema[k], v.float()) for k, v in student.low.state_dict().items() if k in ema)


def test_each_chunk_draws_its_own_step_and_is_scored_by_the_expert_of_that_step():
    student = ExpertPair(low=tiny_model(1), high=tiny_model(2), boundary=875.0)
    teacher = ExpertPair(low=tiny_model(3), high=tiny_model(4), boundary=875.0)
    cfg = TrainConfig(latent_frames=7, latent_height=4, latent_width=4, teacher_steps=3, guidance=0.0, seed=1)
    tr = DMDTrainer(cfg, student, teacher, PromptSet([torch.randn(4, 32)], torch.zeros(2, 32)))
    calls, seen = [], []
    for name, m in student.modules().items():
        m.register_forward_hook(lambda mod, args, out, name=name: calls.append((name, args[1][0].tolist())))
    tr.causal_init(8, callback=lambda info: (seen.append((info, list(calls))), calls.clear()))
    owner = {s.t: s.expert for s in tr.plan}
    for info, ran in seen:
        assert len(info["t"]) == 3 and all(t in owner for t in info["t"])  # chunks of 1, 3, 3 frames
        assert info["experts"] == [owner[t] for t in info["t"]]
        frame_t = [info["t"][0]] + [info["t"][1]] * 3 + [info["t"][2]] * 3
        assert [name for name, _ in ran] == list(dict.fromkeys(info["experts"]))  # each owning expert runs once
        assert all(t == pytest.approx(frame_t) for _, t in ran)  # per-frame t: each chunk at its own step
    assert any(len(set(info["t"])) > 1 for info, _ in seen)
    assert {e for info, _ in seen for e in info["experts"]} == {"high", "low"}
