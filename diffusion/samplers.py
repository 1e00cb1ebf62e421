"""Reverse-process samplers: DDPM ancestral sampling (Ho et al. 2020) with optional respacing to fewer steps
(Nichol & Dhariwal 2021, sec. 4), DDIM (Song et al. 2021, arXiv:2010.02502) with any eta and step count, and the
second-order multistep DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Algorithm 2), as an ODE solver or,
with eta > 0, as the SDE solver SDE-DPM-Solver++(2M).

Every sampler is the same loop over a precomputed ReversePlan. Each step maps the denoiser's prediction
(x0_hat, eps_hat) at timestep t, and the previous step's x0_hat_last, to the previous timestep t_prev:

    x_{t_prev} = coef_x0 * x0_hat + coef_eps * eps_hat + coef_x0_last * x0_hat_last + sigma * z,   z ~ N(0, I)

The samplers differ only in their coefficients, which are computed once, before the loop (coef_x0_last is 0 for
the one-step samplers DDPM and DDIM). The timesteps come from `timesteps()` (or an explicit grid, such as a model's
tuned one or a run started at an intermediate timestep), and each step's t_prev is read from
that list (never derived from a stride); after the last model call the chain reaches t_prev = -1, clean data, with
alpha_bar_{-1} = 1.

`ddim_inversion_plan` runs the same loop the other way, from data towards noise.

Usage: x0 = ddim(denoise, torch.randn(16, 1, 28, 28, generator=g), schedule, steps=50, eta=0.0, generator=g)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, get_args

import torch
from torch import Tensor

from .config import SAMPLER_NAMES, SPACINGS, Spacing, check_grid
from .schedules import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""(x_t (B, C, H, W), t (B,) long) -> (x0_hat, eps_hat), each (B, C, H, W); guidance and clipping live in here."""


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports after each step (the app streams these; GIFs are built from them)."""

    index: int  # 0-based step number
    num_steps: int
    t: int  # timestep the model was evaluated at
    t_prev: int  # timestep reached by this step (-1 = clean data; at or above t in a DDIM inversion)
    x_t: Tensor  # (B, C, H, W) the input of this step
    x0: Tensor  # (B, C, H, W) the model's prediction of the clean image at this step
    x_prev: Tensor  # (B, C, H, W) the output of this step


Callback = Callable[[StepInfo], None]


def timesteps(T: int, steps: int, spacing: Spacing = "trailing") -> list[int]:
    """The `steps` timesteps, increasing, a sampler evaluates the model at (Lin et al. 2024, arXiv:2305.08891, Table 2):

    leading:  0, T/S, 2T/S, ...                  (DDIM paper; ends at 0, never reaches T-1 for S < T)
    trailing: ..., T - 2T/S - 1, T - T/S - 1, T-1 (starts at pure noise T-1; its smallest is round(T/S) - 1)
    linspace: round(linspace(0, T-1, S))         (both ends; improved-diffusion's "even" respacing)
    quadratic: round(T (i/S)^2) - 1, i = 1..S     (DDIM paper, App. D.2, aligned to end at T-1 like trailing:
                                                   steps crowd at low noise, where fine detail is settled)

    Every spacing gives 0, 1, ..., T-1 for S = T; the chain always continues from the smallest to t = -1.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}] (the model's number of diffusion steps), got {steps!r}")
    if spacing == "leading":
        ts = [i * (T // steps) for i in range(steps)]
    elif spacing == "trailing":
        ts = [round((steps - i) * T / steps) - 1 for i in range(steps)][::-1]
    elif spacing == "linspace":
        ts = [0] if steps == 1 else [round(i * (T - 1) / (steps - 1)) for i in range(steps)]
    elif spacing == "quadratic":
        ts = []
        for i in range(1, steps + 1):  # near t = 0 the squares are closer than 1 apart: keep them distinct
            ts.append(max(round(T * (i / steps) ** 2) - 1, ts[-1] + 1 if ts else 0))
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
    assert all(b > a for a, b in zip(ts, ts[1:])) and 0 <= ts[0] and ts[-1] <= T - 1, ts
    return ts


def plan_timesteps(schedule: NoiseSchedule, steps: int, spacing: Spacing, grid: list[int] | None) -> list[int]:
    """The increasing timesteps a plan visits: `grid` if given (checked: `steps` increasing integers in [0, T-1]),
    else `steps` of them by `spacing`."""
    T = schedule.num_timesteps
    return timesteps(T, steps, spacing) if grid is None else check_grid(grid, T, steps)


def time_pairs(ts: list[int]) -> list[tuple[int, int]]:
    """Increasing timesteps -> the (t, t_prev) pairs in sampling order, the last one (ts[0], -1)."""
    return [(ts[i], ts[i - 1] if i > 0 else -1) for i in reversed(range(len(ts)))]


@dataclass(frozen=True)
class ReversePlan:
    """Per-step constants of a sampler, in sampling order: x_prev = coef_x0 x0 + coef_eps eps + sigma z."""

    name: str
    pairs: list[tuple[int, int]]
    coef_x0: list[float]
    coef_eps: list[float]
    sigma: list[float]
    coef_x0_last: list[float] | None = None  # multistep samplers: weight of the previous step's x0_hat

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def is_multistep(self) -> bool:
        """Does a step use the previous step's x0 prediction (DPM-Solver++(2M))? Then steps cannot run alone."""
        return self.coef_x0_last is not None and any(self.coef_x0_last)

    def step(self, i: int) -> ReversePlan:
        """Step i alone, as a one-step plan (of a one-step sampler: DDPM, DDIM)."""
        if self.is_multistep:
            raise ValueError(f"a step of {self.name} uses the step before it: it cannot run alone")
        return ReversePlan(self.name, [self.pairs[i]], [self.coef_x0[i]], [self.coef_eps[i]], [self.sigma[i]])


def ddpm_plan(schedule: NoiseSchedule, steps: int | None = None, spacing: Spacing = "trailing",
              grid: list[int] | None = None) -> ReversePlan:
    """Ancestral sampling from the posterior q(x_{t_prev} | x_t, x0_hat) of the schedule respaced to the kept
    timesteps (`NoiseSchedule.respace`); steps=None or T is the original DDPM chain.

    Ho et al. eq. 7 with the respaced beta'_i: mean = coef1_i x0 + coef2_i x_t, variance = beta~_i (the "fixed small"
    choice, sigma^2 = beta~). Substituting x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps gives
    coef_x0 = coef1 + coef2 sqrt(alpha_bar_t), coef_eps = coef2 sqrt(1 - alpha_bar_t).
    grid: explicit timesteps (`steps` of them, increasing) instead of `spacing`.
    """
    ts = plan_timesteps(schedule, schedule.num_timesteps if steps is None else steps, spacing, grid)
    respaced = schedule.respace(ts)  # index i of `respaced` is original timestep ts[i]
    coef_x0, coef_eps, sigma = [], [], []
    for i in reversed(range(len(ts))):
        c1 = float(respaced.posterior_mean_coef1[i])
        c2 = float(respaced.posterior_mean_coef2[i])
        coef_x0.append(c1 + c2 * float(respaced.sqrt_alphas_cumprod[i]))
        coef_eps.append(c2 * float(respaced.sqrt_one_minus_alphas_cumprod[i]))
        sigma.append(math.sqrt(float(respaced.posterior_variance[i])))
    return ReversePlan("ddpm", time_pairs(ts), coef_x0, coef_eps, sigma)


def check_eta(eta: float, meaning: str) -> None:
    """The noise level of DDIM and DPM-Solver++ must be a number in [0, 1]; `meaning` says what its ends do."""
    if not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] ({meaning}), got {eta!r}")


def ddim_plan(schedule: NoiseSchedule, steps: int = 50, spacing: Spacing = "trailing", eta: float = 0.0,
              grid: list[int] | None = None) -> ReversePlan:
    """DDIM, Song et al. eq. 12 with sigma from eq. 16:

    x_{t_prev} = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev).

    eta = 0 is deterministic; eta = 1 has the DDPM posterior variance (equal to `ddpm_plan` on the same timesteps).
    grid: explicit timesteps (`steps` of them, increasing) instead of `spacing`, e.g. a model's tuned grid.
    """
    check_eta(eta, "0 = deterministic DDIM, 1 = DDPM-like")
    ts = plan_timesteps(schedule, steps, spacing, grid)
    ab = schedule.alphas_cumprod.to("cpu", torch.float64)
    coef_x0, coef_eps, sigma = [], [], []
    for t, t_prev in time_pairs(ts):
        # 1. alpha_bar at the current and the previous timestep (alpha_bar_{-1} = 1: clean data)
        ab_t, ab_prev = float(ab[t]), (float(ab[t_prev]) if t_prev >= 0 else 1.0)
        # 2. sigma_t, eq. 16
        s = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
        # 3. "predicted x0" and "direction pointing to x_t" weights of eq. 12
        coef_x0.append(math.sqrt(ab_prev))
        coef_eps.append(math.sqrt(max(1 - ab_prev - s * s, 0.0)))
        sigma.append(s)
    return ReversePlan("ddim", time_pairs(ts), coef_x0, coef_eps, sigma)


def dpm_solver_pp_plan(schedule: NoiseSchedule, steps: int = 20, spacing: Spacing = "trailing",
                       eta: float = 0.0, grid: list[int] | None = None) -> ReversePlan:
    """DPM-Solver++(2M), Lu et al. Algorithm 2, in terms of alpha_t = sqrt(alpha_bar_t), sigma_t =
    sqrt(1 - alpha_bar_t) and lambda_t = log(alpha_t / sigma_t). From t (lambda) to t_prev (lambda'), h = lambda' -
    lambda, with D the data prediction:

        x_{t_prev} = (sigma' / sigma) x_t + alpha' (1 - e^-h) D,    D = (1 + 1/2r) x0_hat - 1/2r x0_hat_last,

    r = h_last / h. Substituting x_t = alpha x0_hat + sigma eps_hat gives alpha' x0_hat + sigma' eps_hat (exactly
    DDIM for D = x0_hat) plus alpha' (1 - e^-h) / 2r (x0_hat - x0_hat_last). The first step (no previous
    prediction) and the last step to clean data (lambda' = inf, where r -> 0) are first order, i.e. DDIM steps, as
    in the reference implementation.

    eta > 0 integrates the reverse SDE instead: eta = 1 is SDE-DPM-Solver++(2M) (the SDE variant of Lu et al.'s
    solver, diffusers' "sde-dpmsolver++" with the midpoint correction), eta in between the family of k-diffusion's
    sample_dpmpp_2m_sde: with h_eta = (1 + eta) h,

        x_{t_prev} = (sigma' / sigma) e^(-eta h) x_t + alpha' (1 - e^-h_eta) D + sigma' sqrt(1 - e^(-2 eta h)) z,

    i.e. coef_x0 = alpha', coef_eps = sigma' e^(-eta h), noise sigma' sqrt(1 - e^(-2 eta h)) (so coef_eps^2 +
    noise^2 = sigma'^2: each step keeps the marginal's variance) and the correction alpha' (1 - e^-h_eta) / 2r
    (x0_hat - x0_hat_last). Its first-order step at eta = 1 is the DDPM posterior step (DDIM eta 1).
    grid: explicit timesteps (`steps` of them, increasing) instead of `spacing`.
    """
    check_eta(eta, "0 = the ODE solver, 1 = the SDE solver")
    ts = plan_timesteps(schedule, steps, spacing, grid)
    ab = schedule.alphas_cumprod.to("cpu", torch.float64)
    pairs = time_pairs(ts)
    coef_x0, coef_eps, noise, coef_last = [], [], [], []
    h_last = None
    for t, t_prev in pairs:
        ab_prev = float(ab[t_prev]) if t_prev >= 0 else 1.0
        alpha_prev, sigma_prev = math.sqrt(ab_prev), math.sqrt(1.0 - ab_prev)
        coef_x0.append(alpha_prev)
        coef_last.append(0.0)
        if t_prev < 0:  # last step: first order, lambda' = inf, straight to x0_hat
            coef_eps.append(0.0)
            noise.append(0.0)
            break
        lam = 0.5 * math.log(float(ab[t]) / (1.0 - float(ab[t])))
        h = 0.5 * math.log(ab_prev / (1.0 - ab_prev)) - lam
        coef_eps.append(sigma_prev * math.exp(-eta * h))  # 1. the first-order part (DDIM for eta = 0)
        noise.append(sigma_prev * math.sqrt(-math.expm1(-2.0 * eta * h)))
        if h_last is not None:  # 2. the second-order correction from the previous data prediction
            c = alpha_prev * -math.expm1(-(1.0 + eta) * h) / (2.0 * h_last / h)
            coef_x0[-1] += c
            coef_last[-1] = -c
        h_last = h
    return ReversePlan("dpm++", pairs, coef_x0, coef_eps, noise, coef_last)


def ddim_inversion_plan(schedule: NoiseSchedule, ts: list[int]) -> ReversePlan:
    """DDIM inversion: the deterministic DDIM path (eq. 12, eta = 0; the ODE of eq. 13) run from data towards noise,
    which a stochastic sampler cannot do (Song et al. 2021, sec. 5.4, "reconstruction from latent space"). Solving
    the DDIM step t -> s (s < t) for the noisier state needs the prediction at x_t, which is not known yet; the
    standard approximation takes the prediction at the current state instead:

        x_t = sqrt(alpha_bar_t) x0_hat(x_s, s) + sqrt(1 - alpha_bar_t) eps_hat(x_s, s).

    ts: the increasing timesteps of the DDIM run to invert. The first step starts from the clean image (s = -1,
    alpha_bar = 1, where x0_hat is the image itself) and takes eps_hat from the network at ts[0]: x_{ts[0]} =
    sqrt(ab_0) x + sqrt(1 - ab_0) eps_hat. In the loop's terms, with x = sqrt(ab_0) x0_hat + sqrt(1 - ab_0) eps_hat
    (which the denoiser's outputs satisfy for its input), that is coef_x0 = ab_0 and coef_eps = (sqrt(ab_0) + 1)
    sqrt(1 - ab_0). The plan makes len(ts) network calls, one per step of the DDIM run it inverts, and ends at
    ts[-1], where `ddim_plan` on the same timesteps starts. Its (t, t_prev) pairs hold the timestep the network is
    evaluated at and the one reached: (ts[0], ts[0]), (ts[0], ts[1]), ..., (ts[-2], ts[-1]).
    """
    ts = check_grid(ts, schedule.num_timesteps)
    ab = schedule.alphas_cumprod.to("cpu", torch.float64)
    ab0 = float(ab[ts[0]])
    pairs = [(ts[0], ts[0]), *zip(ts[:-1], ts[1:])]
    coef_x0 = [ab0] + [math.sqrt(float(ab[t_next])) for _, t_next in pairs[1:]]
    coef_eps = [(math.sqrt(ab0) + 1.0) * math.sqrt(1.0 - ab0)] + [math.sqrt(1.0 - float(ab[t_next]))
                                                                  for _, t_next in pairs[1:]]
    return ReversePlan("ddim-inversion", pairs, coef_x0, coef_eps, [0.0] * len(pairs))


def iter_sample(denoise: Denoiser, x_T: Tensor, plan: ReversePlan, *,
                generator: torch.Generator | None = None) -> Iterator[StepInfo]:
    """The one sampling loop, one StepInfo per step (so callers can interleave or stream samplers).
    x_T: (B, C, H, W) starting noise; the last StepInfo's x_prev is the sample, in model range."""
    B = x_T.shape[0]
    x = x_T
    t_batches = [torch.full((B,), t, dtype=torch.long, device=x.device) for t, _ in plan.pairs]
    noise_device = generator.device if generator is not None else x.device
    x0_last = None
    for i, (t, t_prev) in enumerate(plan.pairs):
        x0, eps = denoise(x, t_batches[i])
        x_prev = plan.coef_x0[i] * x0 + plan.coef_eps[i] * eps
        if plan.coef_x0_last is not None and plan.coef_x0_last[i]:
            x_prev = x_prev + plan.coef_x0_last[i] * x0_last
        x0_last = x0
        if plan.sigma[i] > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=noise_device)
            x_prev = x_prev + plan.sigma[i] * z.to(x.device)
        yield StepInfo(i, len(plan), t, t_prev, x, x0, x_prev)
        x = x_prev


def sample(denoise: Denoiser, x_T: Tensor, plan: ReversePlan, *, generator: torch.Generator | None = None,
           callback: Callback | None = None) -> Tensor:
    """Run `iter_sample` to the end, calling callback(StepInfo) after each step; returns x (B, C, H, W)."""
    x = x_T
    for info in iter_sample(denoise, x_T, plan, generator=generator):
        if callback is not None:
            callback(info)
        x = info.x_prev
    return x


def ddpm(denoise: Denoiser, x_T: Tensor, schedule: NoiseSchedule, *, steps: int | None = None,
         spacing: Spacing = "trailing", generator: torch.Generator | None = None,
         callback: Callback | None = None) -> Tensor:
    """DDPM ancestral sampling over all T steps, or `steps` respaced ones."""
    return sample(denoise, x_T, ddpm_plan(schedule, steps, spacing), generator=generator, callback=callback)


def ddim(denoise: Denoiser, x_T: Tensor, schedule: NoiseSchedule, *, steps: int = 50, eta: float = 0.0,
         spacing: Spacing = "trailing", generator: torch.Generator | None = None,
         callback: Callback | None = None) -> Tensor:
    """DDIM with `steps` steps and stochasticity `eta`."""
    return sample(denoise, x_T, ddim_plan(schedule, steps, spacing, eta), generator=generator, callback=callback)


def dpm_solver_pp(denoise: Denoiser, x_T: Tensor, schedule: NoiseSchedule, *, steps: int = 20, eta: float = 0.0,
                  spacing: Spacing = "trailing", generator: torch.Generator | None = None,
                  callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M) with `steps` steps: deterministic for eta = 0, the SDE solver for eta = 1."""
    return sample(denoise, x_T, dpm_solver_pp_plan(schedule, steps, spacing, eta), generator=generator,
                  callback=callback)


def make_plan(sampler: str, schedule: NoiseSchedule, steps: int, spacing: Spacing = "trailing",
              eta: float = 0.0, grid: list[int] | None = None) -> ReversePlan:
    """The plan of a named sampler (eta applies to DDIM and DPM-Solver++; an explicit timestep grid, `steps` of them,
    replaces the spacing)."""
    if sampler == "ddpm":
        return ddpm_plan(schedule, steps, spacing, grid)
    if sampler == "ddim":
        return ddim_plan(schedule, steps, spacing, eta, grid)
    if sampler == "dpm++":
        return dpm_solver_pp_plan(schedule, steps, spacing, eta, grid)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLER_NAMES}")


assert set(get_args(Spacing)) == set(SPACINGS)
