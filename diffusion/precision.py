"""Which precision the network samples in: fp32, or bf16 autocast where it is measurably faster.

An instruction set does not settle it on a CPU. Timed by `benchmarks/precision.py` (one call of the shipped
64/128-channel model): on AMD EPYC Zen 4 / Zen 5 (AVX512-BF16) bf16 autocast samples about 1.5x faster than fp32; on
a 2-core Intel Xeon with AMX 2x faster at batch 32 but 1.35x slower at batch 1; and on a 2-core Xeon VM that exposes
AVX512-BF16 but not AMX it is slower at every batch (21.9 against 12.3 ms per call at batch 1, 147.6 against 109.9 at
batch 32): oneDNN's bf16 kernels run there, at a lower rate than its fp32 ones (a 2048^2 matmul: 152 against 230
GFLOP/s). So `precision="auto"` on a CPU with native bf16 times one network call in each precision at a typical
request's batch and keeps bf16 only if it is clearly faster. On CUDA, bf16 is used where the GPU supports it.

The choice is made once per process for each (device, architecture): the weights do not change the speed, and one
choice per architecture keeps a seed's images the same across the pipelines of a process.

Training steps (`train.py --precision auto`) are timed the same way, forward and backward: on that Xeon VM fp32
trains 1.5x faster than bf16 autocast (benchmarks/training_throughput.py), on the AMD machines bf16 1.5-1.7x faster.

Usage: dtype, reason = choose_autocast(model, config.unet, device)   # dtype: torch.bfloat16 or None (fp32)
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import nullcontext

import torch
from torch import nn

from .unet import UNetConfig

MEASURE_BATCH = 32  # network passes per call: a guided request of 16 images, the app's largest
MEASURE_REPEATS = 3  # timed calls per precision, alternating; the fastest of each counts
BF16_MARGIN = 0.9  # bf16 is kept only if its call takes at most 90% of fp32's: near-ties go to exact fp32

_choices: dict[tuple[str, str], tuple[torch.dtype | None, str]] = {}


def bf16_is_native(device: torch.device) -> bool:
    """The hardware has bf16 arithmetic: a CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def measure(model: nn.Module, config: UNetConfig, device: torch.device, batch: int = MEASURE_BATCH,
            repeats: int = MEASURE_REPEATS, training: bool = False) -> tuple[float, float]:
    """(fp32, bf16 autocast) seconds per call of model on a (batch, C, H, W) input, or with training=True per
    forward and backward pass (on a copy of the model: its gradients are not touched): the fastest of `repeats`
    calls each, timed alternately so that a drifting machine slows both alike, after one untimed call each (oneDNN
    builds its kernels at the first)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=generator).to(device)
    t = torch.full((batch,), 500, device=device)
    context = torch.zeros(batch, config.num_classes, device=device) if config.num_classes else None
    if training:
        model = copy.deepcopy(model).train()

    def seconds(dtype: torch.dtype | None) -> float:
        amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode(not training), amp:
            out = model(x, t, context)
        if training:
            out.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    seconds(None), seconds(torch.bfloat16)
    times = [(seconds(None), seconds(torch.bfloat16)) for _ in range(repeats)]
    return min(f for f, _ in times), min(b for _, b in times)


def choose_autocast(model: nn.Module, config: UNetConfig, device: torch.device,
                    training: bool = False) -> tuple[torch.dtype | None, str]:
    """precision="auto": (torch.bfloat16 or None for fp32, a sentence saying why), for sampling or, with
    training=True, for training steps. Measured on CPUs with native bf16 (8 calls at batch 32: 0.4-1.5 s for the
    default model on 2 cores, 2-4 s for training passes; once per process, architecture and use); no bf16 hardware
    means fp32; a CUDA GPU with bf16 means bf16."""
    if not bf16_is_native(device):
        return None, f"fp32: no native bf16 on {device.type}"
    if device.type != "cpu":
        return torch.bfloat16, f"bf16 autocast: native on {device.type}"
    key = (str(device), json.dumps(config.to_dict(), sort_keys=True), training)
    if key not in _choices:
        was_training = model.training
        model.eval()
        try:
            fp32, bf16 = measure(model, config, device, training=training)
        finally:
            model.train(was_training)
        what = "training step (forward and backward)" if training else "call"
        timing = (f"{1000 * bf16:.1f} ms per {what} in bf16 autocast against {1000 * fp32:.1f} in fp32 at batch "
                  f"{MEASURE_BATCH}")
        _choices[key] = ((torch.bfloat16, f"bf16 autocast: {timing}") if bf16 <= BF16_MARGIN * fp32 else
                         (None, f"fp32: {timing}"))
    return _choices[key]
