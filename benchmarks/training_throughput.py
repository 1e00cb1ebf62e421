"""Training throughput (images/s) of our default and fast models in our training loop and of the diffusers peer in
a typical diffusers training loop, fp32 and bf16 autocast, at batch 128 on Fashion-MNIST, in one run.

With --compile, our two models are also timed with torch.compile (bf16; the first steps compile, untimed).

Usage: python benchmarks/training_throughput.py [--steps 30] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import DEFAULT, FAST, PeerTrainer, machine, write_result  # noqa: E402
from diffusion.training import TrainConfig, Trainer  # noqa: E402


def images_per_second(step_fn, steps: int, batch: int, warmup: int = 3) -> float:
    """Throughput of `steps` calls of step_fn(i) after `warmup` untimed ones."""
    for i in range(warmup):
        step_fn(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step_fn(i)
    return steps * batch / (time.perf_counter() - t0)


def ours(precision: str, steps: int, batch: int, architecture: dict, compile: bool = False) -> float:
    """Our loop (Trainer.train_step: loss, backward, clipping, AdamW, EMA) on a shipped model's architecture."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(TrainConfig(precision=precision, batch_size=batch, max_steps=10_000, output_dir=out,
                                      progress=False, compile=compile, **architecture))
        trainer.model.train()
        return images_per_second(trainer.train_step, steps, batch)


def peer(precision: str, steps: int, batch: int) -> float:
    return images_per_second(PeerTrainer(precision, batch).step, steps, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size")
    parser.add_argument("--compile", action="store_true", help="also time our models with torch.compile (bf16)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    result = {}
    runs = (("ours", lambda p: ours(p, args.steps, args.batch_size, DEFAULT)),
            ("ours_fast", lambda p: ours(p, args.steps, args.batch_size, FAST)),
            ("peer", lambda p: peer(p, args.steps, args.batch_size)))
    for name, fn in runs:
        for precision in ("fp32", "bf16"):
            img_s = fn(precision)
            result[f"{name}_{precision}_img_s"] = img_s
            print(f"{name} {precision}: {img_s:.0f} img/s (batch {args.batch_size}, {args.steps} steps)")
    if args.compile:
        for name, architecture in (("ours", DEFAULT), ("ours_fast", FAST)):
            img_s = ours("bf16", args.steps, args.batch_size, architecture, compile=True)
            result[f"{name}_bf16_compiled_img_s"] = img_s
            print(f"{name} bf16, torch.compile: {img_s:.0f} img/s (batch {args.batch_size}, {args.steps} steps)")
    ratio = result["ours_bf16_img_s"] / result["peer_fp32_img_s"]
    print(f"ours (default: bf16) / peer fp32 = {ratio:.2f}x; ours bf16 / peer bf16 = "
          f"{result['ours_bf16_img_s'] / result['peer_bf16_img_s']:.2f}x; ours-fast bf16 / peer fp32 = "
          f"{result['ours_fast_bf16_img_s'] / result['peer_fp32_img_s']:.2f}x")
    write_result("training_throughput", {**result, "batch_size": args.batch_size, "steps": args.steps,
                                         "ours_over_peer_fp32": ratio})


if __name__ == "__main__":
    main()
