"""The denoiser the samplers call: network + schedule + class context -> (x0_hat, eps_hat), with classifier-free
guidance (Ho & Salimans 2022, arXiv:2207.12598) and optional clipping of x0_hat to the data range.

Guidance mixes the conditional and unconditional ("no context" = zero context vector) predictions,
    out = out_uncond + w (out_cond - out_uncond),
with w = 1 plain conditional, w = 0 unconditional, w > 1 stronger class. Both passes run as one batch of 2B.
Since x0 and eps are linear in the network output for a fixed x_t, mixing epsilon- or v-outputs is the same.

A guidance interval [t_lo, t_hi] (Kynkaenniemi et al. 2024, arXiv:2404.07724) guides only the steps with t inside
it and runs a single conditional pass elsewhere: guidance at the highest noise levels mostly costs diversity (it
pulls every sample of a class towards the same few shapes), so leaving it out there lowers the Frechet distance at
the same class accuracy, and saves the unconditional pass of those steps.

A context that is all zero (no class in any row: "no class" in the app, or `Pipeline.generate(n=...)`) has nothing
to guide toward: the conditional and unconditional passes would be the same pass, so it runs once, at any w. (A
guidance-distilled network still gets w: its prediction for no class depends on it, and a row's image must not
depend on what else is in its batch.)

A guidance-distilled network (Meng et al. 2023, arXiv:2210.03142, sec. 4.1; `UNetConfig.guidance_range`,
diffusion.distill --guidance) takes w as an input and predicts the mix itself: for w in its range a guided step is
one pass of B images, not 2B. Outside the range it is guided as above, from its own conditional and unconditional
predictions (w input 1).

Usage: denoise = make_denoiser(model, schedule, context, guidance_scale=2.0, prediction_type="v")
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from .samplers import Denoiser, ReversePlan
from .schedules import NoiseSchedule, PredictionType


def is_guided(guidance_scale: float, conditional: bool = True) -> bool:
    """w = 1 (conditional) and w = 0 (unconditional) need one network pass; any other w mixes two. An unconditional
    model, or a context with no class in it (`has_class`), has nothing to guide towards: one pass at any w."""
    return conditional and guidance_scale not in (0.0, 1.0)


def has_class(context: Tensor | None) -> bool:
    """Does a (B, K) context hold any class weight? None (an unconditional model) and all-zero rows do not."""
    return context is not None and bool(context.ne(0).any())


def distilled_for(guidance_scale: float, guidance_range: list[float] | tuple[float, float] | None) -> bool:
    """Does a guidance-distilled network (trained for w in guidance_range; None = not distilled) predict the
    guided output at this w in one pass?"""
    return guidance_range is not None and guidance_range[0] <= guidance_scale <= guidance_range[1]


def describe_range(guidance_range: list[float] | tuple[float, float]) -> str:
    """How the app and the benchmarks name a guidance-distilled network's one-pass range."""
    return f"guidance-distilled: one pass per guided step for w in [{guidance_range[0]:g}, {guidance_range[1]:g}]"


def passes_per_guided_step(guidance_scale: float, conditional: bool = True,
                           guidance_range: list[float] | tuple[float, float] | None = None) -> int:
    """Network passes over one image at a step inside the guidance interval: 2 when guidance mixes two
    predictions, 1 for w = 0 or 1, an unconditional model, or a guidance-distilled network inside its range."""
    return 2 if is_guided(guidance_scale, conditional) and not distilled_for(guidance_scale, guidance_range) else 1


def passes_per_image(plan: ReversePlan, guidance_scale: float, guidance_interval: tuple[int, int] | None,
                     guidance_range: list[float] | tuple[float, float] | None = None, conditional: bool = True) -> int:
    """Network passes over one image in a run of `plan`: two at each guided step (batched into one call), one at the
    others. conditional: a class-conditional model and a context with a class in it (`has_class`)."""
    if passes_per_guided_step(guidance_scale, conditional, guidance_range) == 1:
        return len(plan)
    lo, hi = guidance_interval if guidance_interval is not None else (0, max(t for t, _ in plan.pairs))
    return sum(2 if lo <= t <= hi else 1 for t, _ in plan.pairs)


def make_denoiser(model: nn.Module, schedule: NoiseSchedule, context: Tensor | None, *, guidance_scale: float = 1.0,
                  prediction_type: PredictionType = "v", clip_x0: bool = True,
                  autocast_dtype: torch.dtype | None = None,
                  guidance_interval: tuple[int, int] | None = None,
                  guidance_range: list[float] | tuple[float, float] | None = None) -> Denoiser:
    """context: (B, K) class weights (zero row = no class) or None for an unconditional model.
    autocast_dtype: e.g. torch.bfloat16 to run the network under autocast; outputs are float32 either way.
    guidance_interval: (t_lo, t_hi), guide only where t_lo <= t <= t_hi (None = everywhere).
    guidance_range: the model's `UNetConfig.guidance_range` (a guidance-distilled network) or None."""
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    t_lo, t_hi = guidance_interval if guidance_interval is not None else (0, schedule.num_timesteps - 1)
    guided = is_guided(guidance_scale, conditional=context is not None)
    if context is not None and guidance_scale == 0.0:
        context, guided = torch.zeros_like(context), False  # purely unconditional: one pass
    one_pass = guided and distilled_for(guidance_scale, guidance_range)
    # no class in any row: the conditional pass would be the unconditional one, and their mix the same again
    two_passes = guided and not one_pass and has_class(context)
    if two_passes:
        both_contexts = torch.cat([context, torch.zeros_like(context)])  # (2B, K): conditional, then unconditional
    device_type = next(model.parameters()).device.type

    def network(x_t: Tensor, t: Tensor) -> Tensor:
        amp = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
        inside = (t >= t_lo) & (t <= t_hi) if guided else None  # (B,) bool
        with amp:
            if one_pass:  # the distilled network mixes itself: w inside the interval, 1 (conditional) outside it
                w = torch.where(inside, guidance_scale, 1.0).to(x_t.dtype)  # (B,)
                return model(x_t, t, context, guidance=w).float()
            # one host sync per step (samplers pass one t for the whole batch): skip the unconditional pass
            if not two_passes or not bool(inside.any()):
                return model(x_t, t, context).float()
            out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), both_contexts).float()  # (2B, C, H, W)
        cond, uncond = out.chunk(2)
        mixed = uncond + guidance_scale * (cond - uncond)
        return mixed if bool(inside.all()) else torch.where(inside[:, None, None, None], mixed, cond)

    def denoise(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        x0, eps = schedule.split_prediction(x_t, t, network(x_t, t), prediction_type)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = schedule.eps_from_x0(x_t, t, x0)
        return x0, eps

    return denoise
