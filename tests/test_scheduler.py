"""Flow-matching schedule: properties, and the Euler step recomputed independently."""

from __future__ import annotations

import pytest
import torch

from hyvideo.pipeline.scheduler import FlowMatchSchedule, flow_sigmas


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (4, 1.0), (50, 7.0), (30, 17.0)])
def test_reverse_schedule_runs_from_one_to_zero(steps, shift):
    s = flow_sigmas(steps, shift, reverse=True)
    assert s.dtype == torch.float32 and s.shape == (steps + 1,)
    assert s[0] == 1 and s[-1] == 0
    assert bool((s[1:] < s[:-1]).all())


def test_forward_schedule_is_one_minus_reverse():
    torch.testing.assert_close(flow_sigmas(10, 5.0, reverse=False), 1 - flow_sigmas(10, 5.0, True))


def test_shift_one_is_linear_and_shift_pushes_sigmas_up():
    torch.testing.assert_close(flow_sigmas(8, 1.0), torch.linspace(1, 0, 9))
    assert bool((flow_sigmas(8, 7.0)[1:-1] > flow_sigmas(8, 1.0)[1:-1]).all())


def test_time_shift_formula():
    s = 0.25
    shift = 7.0
    assert float(flow_sigmas(4, shift)[3]) == pytest.approx(shift * s / (1 + (shift - 1) * s))


def test_timesteps_are_sigma_times_1000():
    sched = FlowMatchSchedule.create(50, 7.0)
    torch.testing.assert_close(sched.timesteps, sched.sigmas[:-1] * 1000)
    assert sched.timesteps.dtype == torch.float32 and sched.steps == 50


@pytest.mark.smoke
def test_euler_step_matches_independent_arithmetic():
    sched = FlowMatchSchedule.create(6, 3.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, 4, 3, 4, 4, generator=g, dtype=torch.bfloat16)
    for k in range(6):
        s = [3.0 * u / (1 + 2.0 * u) for u in (1 - k / 6, 1 - (k + 1) / 6)]
        expected = x.float() + v.float() * (s[1] - s[0])
        got = sched.step(k, x, v)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.smoke
def test_full_run_of_constant_velocity_lands_on_target():
    # x_sigma = (1 - sigma) * x0 + sigma * noise has velocity noise - x0 for every sigma.
    sched = FlowMatchSchedule.create(12, 7.0)
    x0, noise = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    x = noise.clone()
    for k in range(sched.steps):
        x = sched.step(k, x, noise - x0)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=1e-5)


def test_index_of_takes_value_and_rejects_unknown():
    sched = FlowMatchSchedule.create(10)
    assert sched.index_of(sched.timesteps[7]) == 7
    with pytest.raises(ValueError, match="not in this schedule"):
        sched.index_of(1234.5)


@pytest.mark.parametrize("steps,shift,match", [(0, 7.0, "steps must be >= 1"), (5, 0.0, "shift must be > 0")])
def test_bad_arguments(steps, shift, match):
    with pytest.raises(ValueError, match=match):
        flow_sigmas(steps, shift)
