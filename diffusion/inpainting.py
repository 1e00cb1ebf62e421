"""Filling in part of an image (inpainting) with any sampler and no training: the known pixels replace their part of
the denoiser's x0 prediction at every step, and the noise prediction is made consistent with it. This is the
range-null-space step of DDNM (Wang et al. 2023, arXiv:2212.00490, eq. 13 with A the mask), in x0 and eps form:

    x0' = keep * x0_known + (1 - keep) * x0_hat,        eps' = (x_t - sqrt(ab_t) x0') / sqrt(1 - ab_t)

Every sampler step is x_prev = a x0 + b eps (+ c x0_last + sigma z) computed from (x0', eps'), so in the known pixels
the chain runs the forward process of the known image backwards: deterministic DDIM keeps them at
sqrt(ab_t) x0_known + sqrt(1 - ab_t) eps_0, with eps_0 = (x_T - sqrt(ab_T) x0_known) / sqrt(1 - ab_T) the noise x_T
implies at the first timestep (x_T itself, nearly, when ab_T is tiny), DDPM draws them from q(x_prev | x_t, x0_known),
and every sampler ends on x0_known exactly. The network sees, at every step, a state whose known part is the noised
image, and fills the rest to match it.

That alone leaves seams: once the noise is low, the network trusts the state it is given, and generated pixels
that disagree with their kept neighbours stay as they are (speckles, with a scattered mask). RePaint's resampling
(Lugmayr et al. 2022, arXiv:2201.09865, Algorithm 1, here with a jump of one step) takes every step `resample` times,
going back up through the forward process in between, so the two parts get that many chances at each noise level to
agree (`resampled`; resample x the network calls).

Usage: fill = region_mask("top half", 28, 28); images = pipe.inpaint(images, fill, labels, steps=50, resample=5)
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from .samplers import Callback, Denoiser, ReversePlan, sample
from .schedules import NoiseSchedule

NOT_MULTISTEP = ("resampling takes each step again on its own, which DPM-Solver++(2M) cannot (each of its steps uses "
                 "the one before): use DDIM or DDPM, or resample 1")
REGIONS = ("top half", "bottom half", "left half", "right half", "centre", "3 in 4 pixels")


def region_mask(name: str, height: int, width: int, seed: int = 0) -> Tensor:
    """A preset region to fill, (1, 1, H, W) bool, True where the image is to be generated: a half, the centre
    square of half the side, or 3 in 4 pixels drawn at random from `seed` (the kept quarter scattered over the
    image, as a sparse observation)."""
    fill = torch.zeros(1, 1, height, width, dtype=torch.bool)
    if name == "top half":
        fill[..., :height // 2, :] = True
    elif name == "bottom half":
        fill[..., height // 2:, :] = True
    elif name == "left half":
        fill[..., :, :width // 2] = True
    elif name == "right half":
        fill[..., :, width // 2:] = True
    elif name == "centre":
        fill[..., height // 4:height - height // 4, width // 4:width - width // 4] = True
    elif name == "3 in 4 pixels":
        fill = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(seed)) < 0.75
    else:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {name!r}")
    return fill


def check_mask(mask: object, shape: tuple[int, ...]) -> Tensor:
    """A fill mask for images of `shape` (N, C, H, W): (H, W), (1, 1, H, W) or (N, 1, H, W), bool or 0/1 numbers,
    True / 1 where to generate -> (N or 1, 1, H, W) bool."""
    N, _, H, W = shape
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor (True where to fill), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        if not torch.isin(mask, torch.tensor([0, 1], dtype=mask.dtype, device=mask.device)).all():
            raise ValueError("mask must be bool, or hold only 0 and 1 (1 where to fill)")
        mask = mask.bool()
    if mask.ndim == 2:
        mask = mask[None, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (H, W) or mask.shape[0] not in (1, N):
        raise ValueError(f"mask must have shape ({H}, {W}), (1, 1, {H}, {W}) or ({N}, 1, {H}, {W}), "
                         f"got {tuple(mask.shape)}")
    return mask


def masked_denoiser(denoise: Denoiser, schedule: NoiseSchedule, known: Tensor, fill: Tensor) -> Denoiser:
    """`denoise` with its x0 prediction replaced by `known` (B, C, H, W), in model range, outside `fill`
    ((B or 1, 1, H, W) bool, True where to generate), and its eps prediction recomputed from x_t and that x0."""
    keep = (~fill).to(known.device, known.dtype)

    def inpainting(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        x0, _ = denoise(x_t, t)
        x0 = keep * known + (1 - keep) * x0
        return x0, schedule.eps_from_x0(x_t, t, x0)

    return inpainting


def check_resample(resample: object, plan: ReversePlan) -> int:
    """A number of takes per step: an integer of at least 1, and 1 for a multistep plan."""
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be an integer of at least 1, got {resample!r}")
    if resample > 1 and plan.is_multistep:
        raise ValueError(NOT_MULTISTEP)
    return resample


def resampled(denoise: Denoiser, x_T: Tensor, plan: ReversePlan, schedule: NoiseSchedule, resample: int, *,
              generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Run a one-step sampler's `plan` from x_T (B, C, H, W), taking every step t -> t_prev `resample` times: after
    each take but the last, the state at t_prev goes back to t by the forward process, q(x_t | x_t_prev) =
    N(sqrt(ab_t / ab_t_prev) x_t_prev, (1 - ab_t / ab_t_prev) I), with fresh noise from `generator`. The last step,
    to clean data, is taken once. resample 1 is plain sampling. callback(StepInfo) after each step's last take (its
    x_t is that take's input: the re-noised state, not the previous step's output). Returns the sample (B, C, H, W)
    in model range."""
    if check_resample(resample, plan) == 1:
        return sample(denoise, x_T, plan, generator=generator, callback=callback)
    ab = schedule.alphas_cumprod.to("cpu", torch.float64)
    noise_device = generator.device if generator is not None else x_T.device
    x = x_T
    for i, (t, t_prev) in enumerate(plan.pairs):
        step, x_t = plan.step(i), x
        for take in range(resample if t_prev >= 0 else 1):
            if take:
                a = float(ab[t] / ab[t_prev])
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=noise_device).to(x.device)
                x_t = math.sqrt(a) * x + math.sqrt(1.0 - a) * z
            infos = []
            x = sample(denoise, x_t, step, generator=generator, callback=infos.append)
        if callback is not None:
            callback(replace(infos[-1], index=i, num_steps=len(plan)))
    return x
