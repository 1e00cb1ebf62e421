"""Samplers: timestep spacings, plans, determinism, and agreement with diffusers' schedulers as a reference."""

import math

import pytest
import torch

from diffusion.samplers import (ddim, ddim_plan, ddpm, ddpm_plan, dpm_solver_pp, dpm_solver_pp_plan, make_plan,
                               time_pairs, timesteps)
from diffusion.schedules import NoiseSchedule


def dummy_denoiser(schedule, prediction_type="epsilon"):
    """A fixed 'network' x * t / (t + 1) (no training needed), read as epsilon or v."""
    def denoise(x_t, t):
        out = 0.5 * x_t * (t / (t + 1.0))[:, None, None, None]
        return schedule.split_prediction(x_t, t, out, prediction_type)
    return denoise


def test_spacings_visit_the_right_timesteps():
    assert timesteps(1000, 10, "leading") == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert timesteps(1000, 10, "trailing") == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert timesteps(1000, 10, "linspace") == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert timesteps(1000, 1, "trailing") == [999]  # one step starts from pure noise
    assert timesteps(1000, 5, "quadratic") == [39, 159, 359, 639, 999]  # round(1000 (i/5)^2) - 1
    assert timesteps(1000, 1, "quadratic") == [999]
    for spacing in ("leading", "trailing", "linspace", "quadratic"):
        assert timesteps(50, 50, spacing) == list(range(50))
        for steps in (1, 3, 7, 20, 333, 999):
            ts = timesteps(1000, steps, spacing)
            assert len(ts) == steps and len(set(ts)) == steps and 0 <= ts[0] and ts[-1] <= 999
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        timesteps(1000, 0)
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        timesteps(1000, 10**9)
    with pytest.raises(ValueError, match="spacing"):
        timesteps(1000, 10, "uniform")


def test_quadratic_spacing_crowds_low_noise_and_stays_distinct():
    for T in (10, 100, 1000):
        for steps in range(1, T + 1):  # collisions near t = 0 must not repeat or overflow a timestep
            ts = timesteps(T, steps, "quadratic")
            assert len(set(ts)) == steps and ts == sorted(ts) and ts[0] >= 0 and ts[-1] == T - 1
    ts = timesteps(1000, 20, "quadratic")
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert gaps == sorted(gaps) and gaps[0] < 10 < 90 < gaps[-1]  # fine steps at low noise, coarse at high


def test_previous_timestep_is_read_from_the_sequence():
    ts = timesteps(1000, 7, "linspace")  # non-uniform gaps: a fixed stride would be wrong
    pairs = time_pairs(ts)
    assert pairs[0][0] == 999 and pairs[-1] == (0, -1)
    assert [p for p, _ in pairs[1:]] == [prev for _, prev in pairs[:-1]]
    assert time_pairs(timesteps(1000, 10, "trailing"))[-1] == (99, -1)  # then straight to clean data


def test_ddim_coefficients_follow_eq_12():
    s = NoiseSchedule.from_name("cosine", 1000)
    plan = ddim_plan(s, 7, "linspace", eta=0.3)
    ab = s.alphas_cumprod.double()
    for (t, t_prev), cx, ce, sg in zip(plan.pairs, plan.coef_x0, plan.coef_eps, plan.sigma):
        ab_prev = float(ab[t_prev]) if t_prev >= 0 else 1.0
        sigma = 0.3 * math.sqrt((1 - ab_prev) / (1 - ab[t]) * (1 - ab[t] / ab_prev))
        assert cx == pytest.approx(math.sqrt(ab_prev)) and sg == pytest.approx(sigma)
        assert ce == pytest.approx(math.sqrt(1 - ab_prev - sigma ** 2))
    assert plan.sigma[-1] == 0.0  # no noise is added on the final step to clean data


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_respaced_ddpm_equals_ddim_eta_1(spacing):
    # DDPM on the respaced schedule and DDIM with eta = 1 share the posterior q(x_prev | x_t, x0) (Song et al. sec 4.1).
    s = NoiseSchedule.from_name("linear", 1000)
    a, b = ddpm_plan(s, 50, spacing), ddim_plan(s, 50, spacing, eta=1.0)
    assert a.pairs == b.pairs
    for field in ("coef_x0", "coef_eps", "sigma"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-4, abs=1e-6)


def test_full_ddpm_uses_the_original_posterior():
    s = NoiseSchedule.from_name("linear", 1000)
    plan = ddpm_plan(s)
    assert len(plan) == 1000 and plan.pairs[0] == (999, 998)
    assert plan.sigma[0] ** 2 == pytest.approx(float(s.posterior_variance[999]), rel=1e-5)
    assert plan.sigma[-1] == 0.0


def test_respaced_ddpm_uses_respaced_betas():
    s = NoiseSchedule.from_name("linear", 1000)
    plan = ddpm_plan(s, 10, "trailing")
    ab = s.alphas_cumprod.double()
    t, t_prev = plan.pairs[0]
    beta = 1 - ab[t] / ab[t_prev]  # beta'_i = 1 - alpha_bar_t / alpha_bar_prev, not beta_t
    assert plan.sigma[0] ** 2 == pytest.approx(float(beta * (1 - ab[t_prev]) / (1 - ab[t])), rel=1e-5)
    assert float(beta) > 40 * float(s.betas[t])  # far larger than the skipped-step beta_t


def test_shapes_determinism_and_callback():
    s = NoiseSchedule.from_name("cosine", 100)
    denoise = dummy_denoiser(s, "v")
    x_T = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    seen = []
    out = ddpm(denoise, x_T, s, steps=10, generator=torch.Generator().manual_seed(1), callback=seen.append)
    again = ddpm(denoise, x_T, s, steps=10, generator=torch.Generator().manual_seed(1))
    other = ddpm(denoise, x_T, s, steps=10, generator=torch.Generator().manual_seed(2))
    assert out.shape == x_T.shape and torch.equal(out, again) and not torch.allclose(out, other)
    assert [i.index for i in seen] == list(range(10)) and seen[-1].t_prev == -1
    assert seen[0].t == 99 and torch.equal(seen[0].x_t, x_T) and seen[-1].x0.shape == x_T.shape
    # DDIM with eta = 0 never draws noise: the generator does not matter.
    d1 = ddim(denoise, x_T, s, steps=10, eta=0.0, generator=torch.Generator().manual_seed(1))
    d2 = ddim(denoise, x_T, s, steps=10, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(d1, d2)
    with pytest.raises(ValueError, match="eta"):
        make_plan("ddim", s, 10, eta=1.5)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_plan("euler", s, 10)


def test_dpm_solver_pp_is_ddim_plus_a_second_order_term():
    s = NoiseSchedule.from_name("cosine", 1000)
    dpm, ddim_ = dpm_solver_pp_plan(s, 20), ddim_plan(s, 20)
    assert dpm.pairs == ddim_.pairs and dpm.sigma == [0.0] * 20
    # first step (no previous prediction) and last step (to clean data) are DDIM steps
    assert dpm.coef_x0_last[0] == dpm.coef_x0_last[-1] == 0.0 and all(c < 0 for c in dpm.coef_x0_last[1:-1])
    for i in range(20):  # the correction is c (x0 - x0_last): it vanishes when the two predictions agree
        assert dpm.coef_x0[i] + dpm.coef_x0_last[i] == pytest.approx(ddim_.coef_x0[i], abs=1e-12)
        assert dpm.coef_eps[i] == pytest.approx(ddim_.coef_eps[i], abs=1e-12)
    assert make_plan("dpm++", s, 1).coef_x0_last == [0.0]


def test_dpm_solver_pp_converges_faster_than_ddim():
    """Both integrate the same probability-flow ODE; against a 1000-step solution, the second-order method's error
    is smaller than DDIM's at every step count and falls faster as steps grow."""
    s = NoiseSchedule.from_name("cosine", 1000)
    denoise = dummy_denoiser(s, "v")
    x_T = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0)).double()
    exact = ddim(denoise, x_T, s, steps=1000)
    err = {name: [float((f(denoise, x_T, s, steps=n) - exact).abs().max()) for n in (10, 20, 40)]
           for name, f in (("ddim", ddim), ("dpm++", dpm_solver_pp))}
    assert all(d < e for d, e in zip(err["dpm++"], err["ddim"])), err
    assert err["dpm++"][0] / err["dpm++"][2] > 1.5 * err["ddim"][0] / err["ddim"][2], err


def test_dpm_solver_pp_sde_keeps_the_marginal_variance_and_is_ddpm_at_first_order():
    """eta > 0: each step's eps weight and noise add up to sigma'^2 (coef_eps^2 + noise^2 = 1 - alpha_bar'), the
    first step (no previous prediction) at eta = 1 is exactly the DDPM posterior step (DDIM eta 1), eta = 0 is the
    ODE solver, and the correction grows with eta as (1 - e^-(1 + eta) h)."""
    s = NoiseSchedule.from_name("cosine", 1000)
    ab = s.alphas_cumprod.double()
    ode, half, sde = (dpm_solver_pp_plan(s, 20, "quadratic", eta) for eta in (0.0, 0.5, 1.0))
    assert ode == dpm_solver_pp_plan(s, 20, "quadratic")
    for plan in (half, sde):
        assert plan.pairs == ode.pairs and plan.sigma[-1] == 0.0 and all(n > 0 for n in plan.sigma[:-1])
        for (t, t_prev), ce, n in zip(plan.pairs, plan.coef_eps, plan.sigma):
            ab_prev = float(ab[t_prev]) if t_prev >= 0 else 1.0
            assert ce ** 2 + n ** 2 == pytest.approx(1 - ab_prev, abs=1e-12)
    first = ddim_plan(s, 20, "quadratic", eta=1.0)
    assert sde.coef_x0[0] == pytest.approx(first.coef_x0[0]) and sde.coef_eps[0] == pytest.approx(first.coef_eps[0])
    assert sde.sigma[0] == pytest.approx(first.sigma[0])
    for i in range(1, 19):
        assert abs(ode.coef_x0_last[i]) < abs(half.coef_x0_last[i]) < abs(sde.coef_x0_last[i])
    with pytest.raises(ValueError, match="eta"):
        make_plan("dpm++", s, 10, eta=1.5)


def test_dpm_solver_pp_sde_converges_to_the_fine_sde_in_distribution():
    """For Gaussian data N(0, c^2) the exact denoiser is known, and the SDE's samples must have variance c^2; with
    eta = 1 the second-order solver's sample variance at 20 steps is closer to c^2 than DDPM's respaced to 20, and
    a fixed generator makes it reproducible."""
    s = NoiseSchedule.from_name("cosine", 1000)
    c2 = 0.25
    ab = s.alphas_cumprod.double()

    def denoise(x_t, t):  # E[x0 | x_t] for x0 ~ N(0, c2): x0_hat = sqrt(ab) c2 / (ab c2 + 1 - ab) x_t
        a = ab[t][:, None, None, None]
        x0 = a.sqrt() * c2 / (a * c2 + 1 - a) * x_t
        return x0, (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    x_T = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0)).double()
    run = lambda f, seed: f(denoise, x_T, s, steps=20, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    out = run(lambda *a, **k: dpm_solver_pp(*a, eta=1.0, **k), 1)
    assert torch.equal(out, run(lambda *a, **k: dpm_solver_pp(*a, eta=1.0, **k), 1))
    ddpm_out = run(ddpm, 1)
    err_sde, err_ddpm = abs(float(out.var()) - c2), abs(float(ddpm_out.var()) - c2)
    assert err_sde < 0.02 and err_sde < err_ddpm, (float(out.var()), float(ddpm_out.var()))
