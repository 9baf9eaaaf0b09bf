"""The trainer's timestep draws: nominal t uniform over [0, 1000), shifted, clamped (Self-Forcing / FastVideo)."""
import pytest

from causalwan.causal.sampling.schedule import warp
from causalwan.causal.training import draws


def test_timestep_is_the_shifted_nominal_draw_clamped():
    assert draws.timestep(0.0, 5.0, 20, 980) == 20.0  # warp(0) = 0, clamped up to min_t
    assert draws.timestep(0.01, 5.0, 20, 980) == pytest.approx(warp(10.0, 5.0))  # 48.1: below warp(20) = 92.6
    assert draws.timestep(0.5, 5.0, 20, 980) == pytest.approx(warp(500.0, 5.0))  # 833.3
    assert draws.timestep(0.95, 5.0, 20, 980) == 980.0  # warp(950) = 989.6, clamped down to max_t


def test_timestep_distribution_reaches_min_t_and_holds_the_clamped_mass_at_max_t():
    ts = [draws.timestep(draws.uniform(0, i, "t"), 5.0, 20, 980) for i in range(4000)]
    assert all(20 <= t <= 980 for t in ts)
    assert sum(t < warp(20, 5.0) for t in ts) / len(ts) == pytest.approx(0.02, abs=0.01)  # nominal [0, 20)
    # nominal t above unwarp(980) = 907.4 is clamped to 980: about 9.3% of the draws
    assert sum(t == 980 for t in ts) / len(ts) == pytest.approx(1 - draws.unwarp(980, 5.0) / 1000, abs=0.015)


def test_high_noise_rollouts_draw_from_the_high_region_only():
    assert draws.timestep(0.0, 5.0, 20, 980, boundary=875) == pytest.approx(875)
    ts = [draws.timestep(draws.uniform(1, i, "t"), 5.0, 20, 980, boundary=875) for i in range(500)]
    assert all(875 - 1e-9 <= t <= 980 for t in ts) and min(ts) < 880
