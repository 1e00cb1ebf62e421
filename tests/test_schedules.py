"""Noise schedules and the forward process."""

import math

import pytest
import torch

from diffusion.schedules import NoiseSchedule, cosine_betas, linear_betas, make_betas


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("T", [1, 7, 1000])
def test_schedule_properties(name, T):
    s = NoiseSchedule.from_name(name, T)
    assert s.num_timesteps == T and s.betas.dtype == torch.float32
    assert bool(((s.betas > 0) & (s.betas <= 0.999 + 1e-7)).all())
    ab = s.alphas_cumprod
    assert bool((ab[1:] < ab[:-1]).all()), "alpha_bar must decrease strictly"
    assert 0 < float(ab[0]) < 1 and float(s.alphas_cumprod_prev[0]) == 1.0
    torch.testing.assert_close(s.sqrt_alphas_cumprod ** 2 + s.sqrt_one_minus_alphas_cumprod ** 2, torch.ones(T))


def test_linear_matches_ddpm_and_rescales_with_T():
    b = linear_betas(1000)
    assert b.dtype == torch.float64 and math.isclose(b[0], 1e-4) and math.isclose(b[-1], 0.02)
    # T = 500 doubles each beta so the total noise stays comparable (improved-diffusion).
    assert math.isclose(linear_betas(500)[-1], 0.04)


def test_cosine_follows_nichol_dhariwal():
    T = 1000
    ab = torch.cumprod(1 - cosine_betas(T), 0)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert math.isclose(float(ab[t]), f(t + 1) / f(0), rel_tol=1e-9)
    assert float(cosine_betas(T).max()) == pytest.approx(0.999)


def test_sigmoid_follows_rin():
    """Jabri et al. 2022, Alg. 1:
    alpha_bar(t) = (-sigmoid((t (end - start) + start) / tau) + v_end) / (v_end - v_start)."""
    T, start, end, tau = 1000, -3.0, 3.0, 1.0
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    ab = torch.cumprod(1 - make_betas("sigmoid", T), 0)
    for t in (0, 250, 500, 900):
        u = (t + 1) / T
        expected = (-sig((u * (end - start) + start) / tau) + sig(end / tau)) / (sig(end / tau) - sig(start / tau))
        assert math.isclose(float(ab[t]), expected, rel_tol=1e-9)


def test_float64_computation_is_kept():
    # alpha_bar is computed in float64 and only stored as float32: relative error at float32 rounding level.
    s = NoiseSchedule.from_name("linear", 1000)
    exact = torch.cumprod(1 - linear_betas(1000), 0)
    assert float(((s.alphas_cumprod.double() - exact) / exact).abs().max()) < 1e-6


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown beta schedule 'quadratic'.*linear"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="positive integer"):
        make_betas("linear", 0)


def test_q_sample_endpoints():
    torch.manual_seed(0)
    s = NoiseSchedule.from_name("cosine", 1000)
    x0 = torch.rand(256, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t0 = torch.zeros(256, dtype=torch.long)
    assert float((s.q_sample(x0, t0, noise) - x0).abs().max()) < 0.05  # one small noising step
    tT = torch.full((256,), 999, dtype=torch.long)
    xT = s.q_sample(x0, tT, noise)
    assert abs(float(xT.mean())) < 0.02 and abs(float(xT.std()) - 1) < 0.02  # N(0, I) in distribution
    corr = torch.corrcoef(torch.stack([xT.flatten(), x0.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.02


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_split_prediction_inverts_the_targets(prediction_type):
    s = NoiseSchedule.from_name("linear", 100)
    x0, eps = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    t = torch.tensor([0, 10, 50, 99])
    x_t = s.q_sample(x0, t, eps)
    out = eps if prediction_type == "epsilon" else s.v_target(x0, t, eps)
    x0_hat, eps_hat = s.split_prediction(x_t, t, out, prediction_type)
    torch.testing.assert_close(x0_hat, x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.eps_from_x0(x_t, t, x0), eps, atol=2e-4, rtol=1e-4)


def test_respacing_keeps_the_marginals():
    s = NoiseSchedule.from_name("linear", 1000)
    full = s.respace(list(range(1000)))
    torch.testing.assert_close(full.betas, s.betas)
    kept = [0, 249, 499, 749, 999]
    r = s.respace(kept)
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[kept])
    ab = s.alphas_cumprod.double()
    expected = [1 - ab[0]] + [1 - ab[b] / ab[a] for a, b in zip(kept, kept[1:])]
    torch.testing.assert_close(r.betas.double(), torch.stack(expected), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="strictly increasing"):
        s.respace([5, 5])
