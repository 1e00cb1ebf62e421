"""The denoising objective (Ho et al. 2020, Alg. 1) with epsilon- or v-prediction targets and optional Min-SNR-gamma
weighting (Hang et al. 2023, arXiv:2303.09556) and optional input perturbation (Ning et al. 2023, arXiv:2301.11706).

Usage: loss = diffusion_loss(model, schedule, x0, context, t, noise, "v", "min_snr", 5.0)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .schedules import NoiseSchedule


def diffusion_loss(model: nn.Module, schedule: NoiseSchedule, x0: Tensor, context: Tensor | None, t: Tensor,
                   noise: Tensor, prediction_type: str, loss_weighting: str = "none", snr_gamma: float = 5.0,
                   input_noise: Tensor | None = None) -> Tensor:
    """Ho et al. Alg. 1: x_t = q_sample(x0, t, eps); regress the network onto eps (or v). Min-SNR-gamma weights
    each timestep's MSE by min(SNR, gamma) / SNR (epsilon) or min(SNR, gamma) / (SNR + 1) (v), which equals
    min(SNR, gamma) in x0-space (Hang et al. 2023, eq. 6-7). x0, noise: (B, C, H, W); t: (B,); returns a scalar.

    input_noise: input perturbation (DDPM-IP, Ning et al. 2023): the network sees
    y_t = sqrt(ab) x0 + sqrt(1 - ab) input_noise, with input_noise = noise + gamma xi, while the target stays the one
    of (x0, noise). It trains the network on inputs a little off the forward process, like the ones its own
    sampling errors produce (exposure bias). None: input_noise = noise, the plain objective."""
    x_t = schedule.q_sample(x0, t, noise if input_noise is None else input_noise)
    target = noise if prediction_type == "epsilon" else schedule.v_target(x0, t, noise)
    out = model(x_t, t, context).float()
    per_image = F.mse_loss(out, target, reduction="none").mean(dim=(1, 2, 3))  # (B,)
    if loss_weighting == "min_snr":
        snr = schedule.snr(t)
        clipped = snr.clamp(max=snr_gamma)
        per_image = per_image * (clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1))
    return per_image.mean()
