"""Which precision the network runs in, for sampling and for training: fp32, or bf16 autocast where it is
measurably faster.

An instruction set does not settle it on a CPU. Timed by `benchmarks/precision.py` (one call of the shipped
64/128-channel model): on AMD EPYC Zen 4 / Zen 5 (AVX512-BF16) bf16 autocast samples about 1.5x faster than fp32; on
a 2-core Intel Xeon with AMX 2x faster at batch 32 but 1.35x slower at batch 1; and on a 2-core Xeon VM that exposes
AVX512-BF16 but not AMX it is slower at every batch (165.1 against 133.9 ms per call at batch 32, 21.9 against 14.9
at batch 1; benchmarks/results/precision-xeon-vm.json): oneDNN's bf16 kernels run there, at a lower rate than its
fp32 ones (a 2048^2 matmul: 80-152 against 204-270 GFLOP/s over several runs). Training behaves alike (that VM: fp32
101 img/s, bf16 autocast 73, benchmarks/results/training_throughput-xeon-vm.json; the AMD machines: bf16 1.5-1.6x
faster).

So precision "auto" on a CPU with native bf16 times the network in both precisions at batch 32 (one untimed call
each, then the fastest of three alternating calls each; for training, forward and backward passes on a copy of the
model) and takes bf16 autocast only if its time is at most 90% of fp32's. On CUDA, bf16 is taken where the GPU has it
natively. The choice is made once per process for each (device, architecture, use): the weights do not change the
speed, and one choice keeps a seed's images the same across the pipelines of a process.

Usage: dtype, reason = resolve("auto", model, config.unet, device)   # dtype: torch.bfloat16 or None (fp32)
"""

from __future__ import annotations

import copy
import json
import os
import platform
import threading
import time
from pathlib import Path

import torch
from torch import nn

from .unet import UNetConfig

PRECISIONS = ("auto", "fp32", "bf16")
MEASURE_BATCH = 32  # network passes per call: a guided request of 16 images, the app's largest
MEASURE_REPEATS = 3  # timed calls per precision, alternating; the fastest of each counts
BF16_MARGIN = 0.9  # bf16 is taken only if its call takes at most 90% of fp32's: near-ties go to exact fp32

_choices: dict[tuple[str, str, bool], tuple[torch.dtype | None, str]] = {}  # (device, architecture, training)
_lock = threading.Lock()  # one measurement at a time: two at once would slow each other and could disagree


def bf16_is_native(device: torch.device) -> bool:
    """The hardware computes in bf16: a CUDA GPU with native bf16 (not emulated), or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def measure(model: nn.Module, config: UNetConfig, device: torch.device, batch: int = MEASURE_BATCH,
            repeats: int = MEASURE_REPEATS, training: bool = False) -> tuple[float, float]:
    """On a CPU device: (fp32, bf16 autocast) seconds per call of model on a (batch, C, H, W) input, or with
    training=True per forward and backward pass (on a copy of the model: its gradients are not touched): the fastest
    of `repeats` calls each, timed alternately so that a drifting machine slows both alike, after one untimed call
    each (oneDNN builds its kernels at the first). The global random state is left as it was (dropout draws from
    it)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=generator).to(device)
    t = torch.full((batch,), 500, device=device)
    context = torch.zeros(batch, config.num_classes, device=device) if config.num_classes else None
    if training:
        model = copy.deepcopy(model).train()

    def seconds(dtype: torch.dtype | None) -> float:  # a CPU's calls return when done: no synchronising
        start = time.perf_counter()
        with torch.inference_mode(not training), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x, t, context)
        if training:
            out.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    with torch.random.fork_rng(devices=[]):
        seconds(None), seconds(torch.bfloat16)
        times = [(seconds(None), seconds(torch.bfloat16)) for _ in range(repeats)]
    return min(f for f, _ in times), min(b for _, b in times)


def choose_autocast(model: nn.Module, config: UNetConfig, device: torch.device,
                    training: bool = False) -> tuple[torch.dtype | None, str]:
    """Precision "auto": (torch.bfloat16 or None for fp32, a sentence saying why), for sampling or, with training=True,
    for training steps. Measured on CPUs with native bf16 (8 calls at batch 32: about 1.3 s for the default model on
    2 cores, 0.4 s for the fast one, about 3 s for the default model's training passes); no bf16 hardware means
    fp32; a CUDA GPU with native bf16 means bf16."""
    if not bf16_is_native(device):
        return None, f"fp32: no native bf16 on {device.type}"
    if device.type != "cpu":
        return torch.bfloat16, f"bf16 autocast: native on {device.type}"
    key = (str(device), json.dumps(config.to_dict(), sort_keys=True), training)
    with _lock:
        if key not in _choices:
            was_training = model.training
            model.eval()
            try:
                fp32, bf16 = measure(model, config, device, training=training)
            finally:
                model.train(was_training)
            what = "training step (forward and backward)" if training else "call"
            timing = (f"{1000 * bf16:.1f} ms per {what} in bf16 autocast against {1000 * fp32:.1f} in fp32 at "
                      f"batch {MEASURE_BATCH}")
            _choices[key] = ((torch.bfloat16, f"bf16 autocast: {timing}") if bf16 <= BF16_MARGIN * fp32 else
                             (None, f"fp32: {timing}"))
        return _choices[key]


def resolve(precision: str, model: nn.Module, config: UNetConfig, device: torch.device, training: bool = False,
            kept: str | None = None) -> tuple[torch.dtype | None, str]:
    """(torch.bfloat16 or None for fp32, why) for a precision setting: "fp32" and "bf16" as asked; "auto" keeps
    `kept` ("fp32" or "bf16": what a resumed run trained in, so that it goes on in the same precision), else
    choose_autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto" and kept in ("fp32", "bf16"):
        return (torch.bfloat16 if kept == "bf16" else None), f"{kept}: kept from the run being resumed"
    if precision == "auto":
        return choose_autocast(model, config, device, training)
    return (torch.bfloat16 if precision == "bf16" else None), f"{precision}: asked for"


def name(dtype: torch.dtype | None) -> str:
    """"bf16" for bf16 autocast, "fp32" for none: how a resolved precision is saved and shown."""
    return "bf16" if dtype is not None else "fp32"


def hardware_name(device: torch.device) -> str:
    """What runs the work, for records: the GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "CPU"
    return f"{name}, {os.cpu_count()} CPU cores"
