"""Causal initialisation: the teacher's ODE passes through the student's step timesteps, and regressing the
causal student onto the ODE end points lowers its error."""
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.sampling.schedule import SELF_FORCING_STEPS
from causalwan.causal.training.causal_init import chunk_sizes, ode_grid, ode_trajectory
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
