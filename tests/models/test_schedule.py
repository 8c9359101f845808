"""Flow-matching schedule: warps, the noise algebra, the samplers, the CFG convention."""

import math

import pytest
import torch

from models.config import ScheduleConfig
from models.schedule import FlowMatchSchedule, nearest_grid_indices, shift_sigma


@pytest.fixture
def sched() -> FlowMatchSchedule:
    return FlowMatchSchedule(ScheduleConfig(shift=5.0, student_timesteps=(1000, 750, 500, 250)))


def test_student_sigmas_follow_the_shift_formula(sched):
    expected = [5 * s / (1 + 4 * s) for s in (1.0, 0.75, 0.5, 0.25)]  # 1, 0.9375, 0.8333, 0.625
    assert sched.student_sigmas().tolist() == pytest.approx(expected, abs=1e-6)
    assert sched.student_timesteps().tolist() == pytest.approx([1000 * s for s in expected], abs=1e-3)
    assert shift_sigma(0.5, 1.0) == 0.5


def test_teacher_sigmas_run_from_one_to_zero(sched):
    sig = sched.teacher_sigmas(steps=10, shift=3.0)
    assert sig.shape == (11,)
    assert sig[0].item() == pytest.approx(1.0) and sig[-1].item() == 0.0
    assert torch.all(sig[:-1] > sig[1:])
    assert sig[5].item() == pytest.approx(3 * 0.5 / (1 + 2 * 0.5), abs=1e-6)


@pytest.mark.parametrize("sigma_shape", ["batch", "frame"])
def test_add_noise_round_trips_through_the_flow(sched, sigma_shape):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 5, 5, generator=g)
    eps = torch.randn(2, 4, 3, 5, 5, generator=g)
    sigma = torch.rand(2, generator=g) if sigma_shape == "batch" else torch.rand(2, 3, generator=g)
    x_t = sched.add_noise(x0, eps, sigma)
    flow = sched.flow_target(x0, eps)
    torch.testing.assert_close(sched.x0_from_flow(x_t, flow, sigma), x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(sched.eps_from_flow(x_t, flow, sigma), eps, atol=1e-6, rtol=0)
    if sigma_shape == "frame":  # frame j of sample b is noised at sigma[b, j]
        s = sigma[1, 2].item()
        torch.testing.assert_close(x_t[1, :, 2], (1 - s) * x0[1, :, 2] + s * eps[1, :, 2])


def test_bad_sigma_shape_is_a_clear_error(sched):
    x = torch.zeros(2, 4, 3, 5, 5)
    with pytest.raises(ValueError, match=r"\[B, F\]"):
        sched.add_noise(x, x, torch.zeros(2, 4))


def test_euler_with_exact_flow_reaches_the_data(sched):
    # A fixed target x0: the exact flow at x_t is (x_t - x0) / sigma; Euler is exact on straight paths.
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 2, 2, 3, 3, generator=g)
    noise = torch.randn(1, 2, 2, 3, 3, generator=g)

    def model_fn(x, t):
        return (x - x0) / (t.view(-1, 1, 1, 1, 1) / 1000)

    out = sched.sample(model_fn, noise, sched.teacher_sigmas(steps=4, shift=3.0))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_heun_beats_euler_on_a_curved_ode(sched):
    # dx/dsigma = x (exponential): x(0) = x(1) * e^-1; both solvers err, Heun much less.
    noise = torch.ones(1, 1, 1, 1, 1)
    sigmas = sched.teacher_sigmas(steps=6, shift=1.0)

    def model_fn(x, t):
        return x

    exact = math.exp(-1.0)
    err = {s: abs(sched.sample(model_fn, noise, sigmas, solver=s).item() - exact) for s in ("euler", "heun")}
    assert err["heun"] < err["euler"] / 3, err


def test_heun_skips_the_correction_on_the_last_step(sched):
    calls = []

    def model_fn(x, t):
        calls.append(t[0].item())
        return torch.zeros_like(x)

    sched.sample(model_fn, torch.zeros(1, 1, 1, 1, 1), sched.teacher_sigmas(steps=3, shift=1.0), solver="heun")
    assert len(calls) == 2 * 3 - 1 and 0.0 not in calls


def test_cfg_convention_is_uncond_plus_g_times_difference(sched):
    # constant flows: cond = 1, uncond = 0.25 -> guided flow = 0.25 + g * 0.75; one Euler step of size -1
    def model_fn(x, t):
        return torch.ones_like(x), torch.full_like(x, 0.25)

    out = sched.sample(model_fn, torch.zeros(1, 1, 1, 1, 1), torch.tensor([1.0, 0.0]), guidance=4.0)
    assert out.item() == pytest.approx(-(0.25 + 4 * 0.75))  # = -(cond + 3 * (cond - uncond))
    with pytest.raises(ValueError, match="guidance"):
        sched.sample(model_fn, torch.zeros(1, 1, 1, 1, 1), torch.tensor([1.0, 0.0]))


def test_keep_sigmas_returns_states_at_the_nearest_grid_points(sched):
    sigmas = sched.teacher_sigmas(steps=8, shift=8.0)
    seen = {}

    def model_fn(x, t):
        seen[round(t[0].item() / 1000, 6)] = x.clone()
        return torch.randn_like(x)

    torch.manual_seed(0)
    noise = torch.randn(1, 2, 1, 2, 2)
    final, kept = sched.sample(model_fn, noise, sigmas, keep_sigmas=sched.student_sigmas(), per_frame_timesteps=True)
    idx = nearest_grid_indices(sigmas, sched.student_sigmas())
    assert kept.shape == (4, 1, 2, 1, 2, 2) and idx[0] == 0
    torch.testing.assert_close(kept[0], noise)
    for k, i in enumerate(idx):
        torch.testing.assert_close(kept[k], seen[round(sigmas[i].item(), 6)])


def test_student_step_renoises_then_returns_x0(sched):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 2, 2, 3, 3, generator=g)
    eps, fresh = torch.randn(2, 1, 2, 2, 3, 3, generator=g)
    sig = sched.student_sigmas()
    x_t = sched.add_noise(x0, eps, sig[1].item())
    flow = sched.flow_target(x0, eps)
    nxt = sched.student_step(x_t, flow, 1, noise=fresh)
    torch.testing.assert_close(nxt, (1 - sig[2]) * x0 + sig[2] * fresh, atol=1e-6, rtol=0)
    x_last = sched.add_noise(x0, eps, sig[3].item())
    torch.testing.assert_close(sched.student_step(x_last, flow, 3), x0, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="noise"):
        sched.student_step(x_t, flow, 0)
