"""Noise schedules and the forward process q(x_t | x_0) of DDPM (Ho et al. 2020, arXiv:2006.11239).

Timestep convention, used everywhere in this package: an integer t in [0, T-1]; t = 0 is one noising step
(alpha_bar_0 = 1 - beta_0), t = T-1 is the noisiest. Samplers use t = -1 for "clean data", with alpha_bar_{-1} = 1.

Usage: schedule = NoiseSchedule.from_name("cosine", 1000); x_t = schedule.q_sample(x0, t, noise)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

import torch
from torch import Tensor

ScheduleName = Literal["linear", "cosine", "sigmoid"]
PredictionType = Literal["epsilon", "v"]
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear schedule, beta_start..beta_end for T = 1000, rescaled so that other T give the same
    total noise (improved-diffusion `get_named_beta_schedule`), clipped at 0.999 (reached only for T < 50).
    Returns (T,) float64."""
    scale = 1000.0 / T
    return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021 (arXiv:2102.09672) eq. 17: alpha_bar(t) = f(t)/f(0),
    f(t) = cos^2(((t/T + s)/(1 + s)) pi/2); beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped at max_beta to avoid
    the singularity at t = T. (T,) float64."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def sigmoid_betas(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999) -> Tensor:
    """Sigmoid schedule of Jabri et al. 2022 (RIN, arXiv:2212.11972, Alg. 1): alpha_bar(t) follows a scaled,
    shifted sigmoid of t/T between `start` and `end` with temperature `tau`. (T,) float64."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    alpha_bar = (-torch.sigmoid((steps * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=0.0, max=max_beta)


def make_betas(name: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """The named beta schedule as (T,) float64. `beta_start`/`beta_end` apply to "linear" only."""
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T (number of diffusion steps) must be a positive integer, got {T!r}")
    if name == "linear":
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
        return linear_betas(T, beta_start, beta_end)
    if name == "cosine":
        return cosine_betas(T)
    if name == "sigmoid":
        return sigmoid_betas(T)
    raise ValueError(f"unknown beta schedule {name!r}; choose one of {SCHEDULE_NAMES}")


def broadcast(values: Tensor, t: Tensor, ndim: int) -> Tensor:
    """values[t] for a (B,) index tensor t, shaped (B, 1, ..., 1) with `ndim` dims to broadcast against x."""
    out = values[t] if values.device == t.device else values.to(t.device)[t]
    return out.reshape(t.shape[0], *([1] * (ndim - 1)))


@dataclass(frozen=True)
class NoiseSchedule:
    """All per-timestep quantities of a schedule, computed once in float64 and stored float32, each (T,).

    Names follow Ho et al. 2020: alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s; the posterior
    q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, posterior_variance_t) (eq. 6-7).
    """

    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or len(betas) == 0 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a non-empty 1-D tensor with values in (0, 1]")
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        f32 = lambda a: a.to(torch.float32)  # noqa: E731
        return cls(
            betas=f32(betas),
            alphas_cumprod=f32(alphas_cumprod),
            alphas_cumprod_prev=f32(alphas_cumprod_prev),
            sqrt_alphas_cumprod=f32(alphas_cumprod.sqrt()),
            sqrt_one_minus_alphas_cumprod=f32((1.0 - alphas_cumprod).sqrt()),
            posterior_variance=f32(betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)),
            posterior_mean_coef1=f32(betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod)),
            posterior_mean_coef2=f32((1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod)),
        )

    @classmethod
    def from_name(cls, name: str, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        return cls.from_betas(make_betas(name, T, beta_start, beta_end))

    def to(self, device: str | torch.device) -> NoiseSchedule:
        """The same schedule with every tensor on `device` (so nothing is copied per sampling step)."""
        return NoiseSchedule(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def respace(self, timesteps: list[int]) -> NoiseSchedule:
        """The schedule restricted to the kept, increasing `timesteps` (improved-diffusion's respace.py):
        alpha_bar'_i = alpha_bar_{s_i}, beta'_i = 1 - alpha_bar_{s_i} / alpha_bar_{s_{i-1}} (alpha_bar_{s_{-1}} = 1),
        so the respaced chain has exactly the marginals q(x_{s_i} | x_0) of the original one. Recomputed in float64
        from the original betas."""
        T = self.num_timesteps
        increasing = all(a < b for a, b in zip(timesteps, timesteps[1:]))
        if not timesteps or not increasing or timesteps[0] < 0 or timesteps[-1] >= T:
            raise ValueError(f"timesteps must be strictly increasing integers in [0, {T - 1}]")
        alphas_cumprod = self.alphas_cumprod.to("cpu", torch.float64)[timesteps]  # the alpha_bar every sampler uses
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        return NoiseSchedule.from_betas(1.0 - alphas_cumprod / prev)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. eq. 4).
        x0, noise: (B, C, H, W); t: (B,) long in [0, T-1]."""
        return (broadcast(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
                + broadcast(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022, arXiv:2202.00512, sec. 4)."""
        return (broadcast(self.sqrt_alphas_cumprod, t, x0.ndim) * noise
                - broadcast(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)

    def split_prediction(self, x_t: Tensor, t: Tensor, model_output: Tensor,
                         prediction_type: PredictionType) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) from the network's output. With a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t):
        epsilon: x0 = (x_t - b eps) / a;   v: x0 = a x_t - b v, eps = b x_t + a v."""
        a = broadcast(self.sqrt_alphas_cumprod, t, x_t.ndim)
        b = broadcast(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
        if prediction_type == "epsilon":
            return (x_t - b * model_output) / a, model_output
        if prediction_type == "v":
            return a * x_t - b * model_output, b * x_t + a * model_output
        raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}")

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t), the noise implied by x_t and x0."""
        return ((x_t - broadcast(self.sqrt_alphas_cumprod, t, x_t.ndim) * x0)
                / broadcast(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim))

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), (B,)."""
        ab = broadcast(self.alphas_cumprod, t, 1)
        return ab / (1.0 - ab)
