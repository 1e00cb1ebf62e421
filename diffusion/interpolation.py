"""Paths between two starting noises, and between two class contexts, for interpolation (Song et al. 2021,
arXiv:2010.02502, sec. 5.3 and App. D.5): deterministic DDIM maps each x_T to one image, so a smooth path of x_T's
is a smooth path of images, a morph from one sample to the other; DDPM adds fresh noise at every step, so its images
along the same path are not tied to their x_T and jump.

The path between noises is spherical (slerp, Shoemake 1985), as in the DDIM paper. Two draws a, b ~ N(0, I) in
d = C H W dimensions are nearly orthogonal with norms near sqrt(d); the straight line (lerp) between them passes
through (a + b) / 2, of norm near sqrt(d / 2): its middle frames start from noise with a standard deviation of about
0.71, which the network never saw at the top timestep. Slerp keeps the norm on its arc (exactly, when the two norms
are equal), so every frame starts from noise that looks like a draw from N(0, I).

Usage:
    w = torch.linspace(0, 1, 8)
    x_T = slerp(pipe.noise(1, seed=0)[0], pipe.noise(1, seed=1)[0], w)           # (8, C, H, W)
    frames = pipe.generate(mix(context_a, context_b, w), sampler="ddim", eta=0, x_T=x_T)
(`Pipeline.interpolate` does this; `Pipeline.interpolation_noise` gives its starting noises.)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Path = Literal["slerp", "lerp"]
PATHS: tuple[str, ...] = ("slerp", "lerp")


def check_weights(weights: Tensor) -> Tensor:
    """Interpolation weights: a 1-D float tensor of finite values in [0, 1] (0 = start, 1 = end)."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim != 1 or len(weights) == 0:
        raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {tuple(weights.shape)}")
    if not torch.isfinite(weights).all() or (weights < 0).any() or (weights > 1).any():
        raise ValueError("weights must be finite numbers in [0, 1]")
    return weights


def check_ends(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"the two ends must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def lerp(a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
    """Straight line: (1 - w) a + w b for each weight. a, b: the same shape S; weights (K,) -> (K, *S)."""
    check_ends(a, b)
    w = check_weights(weights).to(a.device).view(-1, *[1] * a.ndim)
    return ((1 - w) * a.double() + w * b.double()).to(a.dtype)


def slerp(a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
    """Spherical linear interpolation: sin((1 - w) theta) / sin(theta) a + sin(w theta) / sin(theta) b, theta the
    angle between a and b (flattened). a, b: the same shape S; weights (K,) -> (K, *S). Nearly parallel ends
    (sin theta below 1e-6) fall back to lerp, the limit of slerp as theta -> 0; opposite ends are an error."""
    check_ends(a, b)
    w = check_weights(weights).to(a.device)
    a64, b64 = a.double().flatten(), b.double().flatten()
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        raise ValueError("slerp needs two non-zero ends (the angle to a zero vector is undefined); use lerp")
    cos = (a64 @ b64 / (na * nb)).clamp(-1, 1)
    theta = torch.arccos(cos)
    if torch.sin(theta) < 1e-6:
        if cos < 0:
            raise ValueError("slerp between opposite ends is undefined: every half circle joins them")
        return lerp(a, b, w)
    wa = torch.sin((1 - w) * theta) / torch.sin(theta)
    wb = torch.sin(w * theta) / torch.sin(theta)
    out = wa[:, None] * a64 + wb[:, None] * b64  # (K, d)
    return out.view(len(w), *a.shape).to(a.dtype)


def interpolate_noise(a: Tensor, b: Tensor, weights: Tensor, path: str = "slerp") -> Tensor:
    """The starting noises of a path's frames: `path` "slerp" or "lerp" from a to b; (K, *S)."""
    if path == "slerp":
        return slerp(a, b, weights)
    if path == "lerp":
        return lerp(a, b, weights)
    raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")


# ---------------------------------------------------------------------------------------------------------------
# what a path of images looks like, in grey levels of 255


def frame_changes(frames: Tensor) -> Tensor:
    """(K, C, H, W) images in [0, 1] -> (K - 1,): the mean absolute change from each frame to the next."""
    y = frames.detach().double() * 255
    return (y[1:] - y[:-1]).abs().flatten(1).mean(1)


def path_ratio(frames: Tensor) -> float:
    """The path's length through its frames (the sum of `frame_changes`) over the direct change from its first frame
    to its last: near 1 for a steady morph, near K - 1 when every frame is as far from its neighbours as the ends
    are from each other. inf if the ends are equal and the frames are not."""
    direct = float((frames[-1].double() - frames[0].double()).abs().mean()) * 255
    length = float(frame_changes(frames).sum())
    if direct == 0:
        return 1.0 if length == 0 else math.inf
    return length / direct


def detail(images: Tensor) -> Tensor:
    """(N, C, H, W) images in [0, 1] -> (N,): the mean absolute difference between neighbouring pixels (vertical and
    horizontal, averaged), a measure of edges and texture. Images from lerp's middle noises have less of it."""
    y = images.detach().double() * 255
    dv = (y[..., 1:, :] - y[..., :-1, :]).abs().flatten(1).mean(1)
    dh = (y[..., :, 1:] - y[..., :, :-1]).abs().flatten(1).mean(1)
    return (dv + dh) / 2
