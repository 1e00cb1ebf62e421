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
