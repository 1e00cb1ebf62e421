"""Shared helpers of the benchmarks: timing, machine description, result files, the diffusers peer model.

Usage: from common import timeit, machine, write_result
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
ARCHITECTURE_FIELDS = ("base_channels", "channel_mult", "num_res_blocks", "attention_levels", "patch_size",
                       "upsample", "norm_groups")


def shipped_architecture(name: str) -> dict:
    """The U-Net of checkpoints/NAME as TrainConfig arguments, so that benchmarks train what the repo ships."""
    unet = json.loads((CHECKPOINTS / name / "config.json").read_text())["unet"]
    return {k: unet[k] for k in ARCHITECTURE_FIELDS if k in unet}  # a key missing: the architecture's default


FAST = shipped_architecture("fashion-mnist-fast")
DEFAULT = shipped_architecture("fashion-mnist")


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    name = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"bf16 native: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


def peer_unet(image_size: int = 28, num_class_embeds: int = 10):
    """The peer a user would otherwise take: diffusers' UNet2DModel, widths 32/64/64, 2 layers per block, no
    attention in the down/up blocks, class embeddings, native 28x28."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=image_size, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                       layers_per_block=2, down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                       num_class_embeds=num_class_embeds, norm_num_groups=8)


class PeerTrainer:
    """The peer's training recipe as a diffusers user runs it: DDPMScheduler.add_noise (linear betas), epsilon MSE,
    AdamW 1e-3 with 500 warm-up steps and cosine decay over `total_steps`, gradient clipping at 1, EMA 0.999 with
    warm-up, bf16 autocast or fp32. No flips, as in our loop and by default in diffusers' training example
    (`--random_flip` is opt-in): Fashion-MNIST's shoes all face one way."""

    def __init__(self, precision: str = "bf16", batch: int = 128, total_steps: int = 10_000, seed: int = 0):
        import copy

        from diffusers import DDPMScheduler

        from diffusion.data import load_dataset

        torch.manual_seed(seed)
        self.data = load_dataset("fashion-mnist", "train")
        self.unet = peer_unet().train()
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=1e-3)
        self.precision, self.batch, self.total_steps = precision, batch, total_steps

    def lr(self, i: int, peak: float = 1e-3, warmup: int = 500) -> float:
        import math

        if i < warmup:
            return peak * (i + 1) / warmup
        return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (i - warmup) / max(1, self.total_steps - warmup))))

    def step(self, i: int) -> None:
        import torch.nn.functional as F

        from diffusion.data import to_model_range

        for group in self.opt.param_groups:
            group["lr"] = self.lr(i)
        idx = torch.randint(0, len(self.data), (self.batch,))
        x = to_model_range(self.data.images[idx])
        noise, t = torch.randn_like(x), torch.randint(0, 1000, (self.batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            pred = self.unet(self.scheduler.add_noise(x, noise, t), t, class_labels=self.data.labels[idx]).sample
        loss = F.mse_loss(pred.float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + i) / (10 + i))
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.unet.parameters()), 1 - decay)
