"""Image utilities: tensors in [0, 1] to uint8 arrays, PIL grids, display grids, PNG and GIF files (all writes
atomic), and a bounded folder for result files.

Usage: save_png(make_grid(images, nrow=10), "grid.png"); save_gif([grid0, grid1, ...], "reverse.gif")
"""

from __future__ import annotations

import math
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .checkpoint import atomic_write


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) float in [0, 1] -> (N, H, W, C) uint8."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_8bit(image: Image.Image) -> Image.Image:
    """A greyscale image of more than 8 bits (16-bit PNG/TIFF "I;16", 32-bit "I", float "F") -> "L", scaled to
    0..255 (PIL's own convert("L") clips such values at 255: a 16-bit image would come out nearly white). 16-bit
    modes divide by 257; "I" and "F" go by their largest value: up to 1 (a float image in [0, 1]) times 255, up to
    255 as it is, up to 65535 as 16-bit, beyond that scaled to it. Other modes pass through."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return image
    a = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    top = float(a.max()) if a.size else 0.0
    if image.mode.startswith("I;16") or 255 < top <= 65535:
        scale = 1 / 257
    elif image.mode == "F" and top <= 1:
        scale = 255.0
    else:
        scale = 1.0 if top <= 255 else 255 / top
    return Image.fromarray((a * scale).round().clip(0, 255).astype(np.uint8), "L")


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


def grid_array(images: Tensor, display_size: int, cols: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (h, w, 3) uint8 grid of `cols` columns (default: about square) with 1-pixel white
    lines, nearest-upscaled by the largest integer factor that keeps its longer side within display_size."""
    N, C, H, W = images.shape
    cols = max(1, math.ceil(math.sqrt(N))) if cols is None else cols
    rows = math.ceil(N / cols)
    scale = max(1, display_size // max(rows * (H + 1) + 1, cols * (W + 1) + 1))
    return np.asarray(make_grid(images, nrow=cols, padding=1, scale=scale).convert("RGB"))


def side_by_side(*arrays: np.ndarray, gap: int = 8) -> np.ndarray:
    """(h_i, w_i, 3) uint8 arrays left to right, bottom-padded to one height, separated by white gaps."""
    H = max(a.shape[0] for a in arrays)
    parts = []
    for i, a in enumerate(arrays):
        if i:
            parts.append(np.full((H, gap, 3), 255, np.uint8))
        parts.append(np.pad(a, ((0, H - a.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


class OutputFiles:
    """Result files (PNG, GIF) in a private temporary folder of this process, pruned to the newest `keep`."""

    def __init__(self, folder: str | Path | None = None, keep: int = 400):
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="diffusion-lab-"))
        self.keep = keep
        self._lock = threading.Lock()

    def path(self, stem: str, suffix: str) -> Path:
        """A fresh path for a new file; the oldest finished files beyond `keep` are deleted."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            finished = []
            for p in self.folder.iterdir():
                if p.name.startswith("."):  # a write under way (atomic_write's temp file)
                    continue
                try:
                    finished.append((p.stat().st_mtime, p))
                except FileNotFoundError:
                    continue
            finished.sort()
            for _, old in finished[:max(0, len(finished) - self.keep + 1)]:
                old.unlink(missing_ok=True)
            return self.folder / f"{stem}-{uuid.uuid4().hex[:10]}{suffix}"


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
