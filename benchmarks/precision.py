"""One network call of each shipped model in fp32, bf16 autocast and bf16 autocast with channels_last, at batch 1
and 32: which precision and layout wins depends on the batch and on the CPU (AVX-512 bf16 or AMX). Then what
precision="auto" picks here (diffusion.precision: one timed call each at batch 32) and what that is worth for a
whole request: DDIM 20 steps for 16 images with the model's default guidance, in each precision, alternating rounds.

Usage: python benchmarks/precision.py [--models checkpoints/fashion-mnist ...] [--batches 1 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, timeit, write_result  # noqa: E402
from diffusion import Pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["checkpoints/fashion-mnist", "checkpoints/fashion-mnist-fast"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the DDIM 20 x 16 timing")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    result = {}
    for model_dir in args.models:
        pipe = Pipeline.from_pretrained(model_dir, precision="fp32")
        net = pipe.model.eval()
        channels_last = copy.deepcopy(net).to(memory_format=torch.channels_last)
        num_classes = len(pipe.class_names)
        for batch in args.batches:
            x = torch.randn(batch, *pipe.image_shape, generator=torch.Generator().manual_seed(0))  # (B, C, H, W)
            t = torch.full((batch,), 500)
            context = torch.eye(num_classes)[torch.arange(batch) % num_classes]  # (B, classes) one-hot
            bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
            modes = {"fp32": (net, x, nullcontext), "bf16 autocast": (net, x, bf16),
                     "bf16 autocast, channels_last": (channels_last, x.contiguous(memory_format=torch.channels_last),
                                                      bf16)}
            with torch.inference_mode():
                reference = net(x, t, context)
                for mode, (model, inp, amp) in modes.items():
                    def call():
                        with amp():
                            return model(inp, t, context)
                    ms = 1000 * timeit(call, repeats=30, warmup=5)
                    diff = float((call().float() - reference).abs().max())
                    result[f"{model_dir} batch {batch} {mode}"] = {"ms_per_call": ms, "max_abs_diff_vs_fp32": diff}
                    print(f"{model_dir} batch {batch:3d} {mode:30s} {ms:8.2f} ms per call  (max |diff| vs fp32 "
                          f"{diff:.3f})", flush=True)
        result[f"{model_dir} request"] = request = whole_request(model_dir, args.rounds)
        print(f"{model_dir} precision='auto' picks {request['auto']}; DDIM 20 x 16 images: fp32 "
              f"{request['fp32_s']:.3f} s, bf16 autocast {request['bf16_s']:.3f} s (medians of {args.rounds})",
              flush=True)
    write_result("precision", result)


def whole_request(model_dir: str, rounds: int) -> dict:
    """What auto picks (and why), and DDIM 20 x 16 images in fp32 and bf16 autocast: medians of `rounds` rounds."""
    pipes = {p: Pipeline.from_pretrained(model_dir, precision=p) for p in ("fp32", "bf16")}
    labels = [i % len(pipes["fp32"].class_names) for i in range(16)]
    times: dict[str, list[float]] = {p: [] for p in pipes}
    for p, pipe in pipes.items():  # untimed: oneDNN builds its kernels at the first calls
        pipe.generate(labels, sampler="ddim", steps=2, seed=0)
    for _ in range(rounds):
        for p, pipe in pipes.items():
            times[p].append(timeit(lambda: pipe.generate(labels, sampler="ddim", steps=20, seed=0), 1, 0))
    auto = Pipeline.from_pretrained(model_dir)
    return {"auto": auto.precision_reason, "fp32_s": statistics.median(times["fp32"]),
            "bf16_s": statistics.median(times["bf16"]), "rounds": rounds}


if __name__ == "__main__":
    main()
