"""Image utilities: tensors in [0, 1] to uint8 arrays, PIL grids, PNG and GIF files (all writes atomic).

Usage: save_png(make_grid(images, nrow=10), "grid.png"); save_gif([grid0, grid1, ...], "reverse.gif")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .checkpoint import atomic_write


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) float in [0, 1] -> (N, H, W, C) uint8."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_pil(image: np.ndarray, scale: int = 1) -> Image.Image:
    """(H, W, C) uint8 with C in {1, 3} -> PIL image ("L" or "RGB"), upscaled by `scale` with nearest neighbours."""
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    return pil


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, scale: int = 1,
              pad_value: float = 1.0) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one PIL image with `nrow` images per row (default: about square)."""
    N, C, H, W = images.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(N))))
    rows = int(np.ceil(N / nrow))
    grid = torch.full((C, rows * (H + padding) + padding, nrow * (W + padding) + padding), pad_value)
    for i in range(N):
        r, c = divmod(i, nrow)
        top, left = padding + r * (H + padding), padding + c * (W + padding)
        grid[:, top:top + H, left:left + W] = images[i].detach().float().cpu()
    return to_pil(to_uint8(grid[None])[0], scale)


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: image.save(p, format="PNG"))
    return path


def save_gif(frames: list[Image.Image], path: str | Path, duration_ms: int = 80, final_hold_ms: int = 1200) -> Path:
    """An animated, looping GIF; the last frame is held longer so the result can be seen."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    path = Path(path)
    durations = [duration_ms] * (len(frames) - 1) + [final_hold_ms]
    frames = [f.convert("RGB") for f in frames]
    atomic_write(path, lambda p: frames[0].save(p, format="GIF", save_all=True, append_images=frames[1:],
                                                 duration=durations, loop=0))
    return path
