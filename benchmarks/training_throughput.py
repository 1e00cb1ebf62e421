"""Training throughput (images/s) of our default model in our training loop and of the diffusers peer in a typical
diffusers training loop, fp32 and bf16 autocast, at batch 128 on Fashion-MNIST, in one run.

Usage: python benchmarks/training_throughput.py [--steps 30]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, peer_unet, write_result  # noqa: E402
from diffusion.data import load_dataset, to_model_range  # noqa: E402
from diffusion.training import TrainConfig, Trainer  # noqa: E402


def ours(precision: str, steps: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(TrainConfig(precision=precision, batch_size=batch, max_steps=10_000, output_dir=out,
                                      progress=False))
        trainer.model.train()
        for s in range(3):
            trainer.train_step(s)
        t0 = time.perf_counter()
        for s in range(3, 3 + steps):
            trainer.train_step(s)
        return steps * batch / (time.perf_counter() - t0)


def peer(precision: str, steps: int, batch: int) -> float:
    """diffusers' recipe: DDPMScheduler.add_noise, epsilon MSE, AdamW, EMA of the weights."""
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", "train")
    unet = peer_unet().train()
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)

    def step(i: int) -> None:
        idx = torch.randint(0, len(data), (batch,))
        x = to_model_range(data.images[idx])
        noise, t = torch.randn_like(x), torch.randint(0, 1000, (batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = unet(scheduler.add_noise(x, noise, t), t, class_labels=data.labels[idx]).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 0.001)

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    result = {}
    for name, fn in (("ours", ours), ("peer", peer)):
        for precision in ("fp32", "bf16"):
            img_s = fn(precision, args.steps, args.batch_size)
            result[f"{name}_{precision}_img_s"] = img_s
            print(f"{name} {precision}: {img_s:.0f} img/s (batch {args.batch_size}, {args.steps} steps)")
    ratio = result["ours_bf16_img_s"] / result["peer_fp32_img_s"]
    print(f"ours (default: bf16) / peer fp32 = {ratio:.2f}x; ours bf16 / peer bf16 = "
          f"{result['ours_bf16_img_s'] / result['peer_bf16_img_s']:.2f}x")
    write_result("training_throughput", {**result, "batch_size": args.batch_size, "steps": args.steps,
                                         "ours_over_peer_fp32": ratio})


if __name__ == "__main__":
    main()
