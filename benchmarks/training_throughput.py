"""Training throughput (images/s) of our default and fast models in our training loop and of the diffusers peer in
a typical diffusers training loop, fp32 and bf16 autocast, at batch 128 on Fashion-MNIST, in one run: --rounds
rounds that each time every loop once, in turn, so that the shared machine's drifting speed hits all of them alike;
each figure is the median over the rounds and each ratio the median of the per-round ratios. Our loop's default
precision is auto (bf16 autocast only where a timed step shows it faster, diffusion.precision): the headline ratio
takes what it picks here.

Each loop's FLOPs per image (forward and backward, counted over one real training step with
torch.utils.flop_counter) turn its img/s into achieved GFLOP/s, reported as a share of the fp32 or bf16 matmul
ceiling measured in the same run (benchmarks/ceiling.py): a loop near its ceiling can only get faster by doing fewer
FLOPs per image.

With --compile, our two models are also timed with torch.compile (bf16; the first steps compile, untimed); with
--channels-last, our default model's bf16 step is also timed with its weights (and so its activations) in the
channels_last layout that oneDNN's convolutions prefer.

Usage: python benchmarks/training_throughput.py [--steps 30] [--rounds 3] [--compile] [--channels-last]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ceiling  # noqa: E402
from common import DEFAULT, FAST, PeerTrainer, machine, write_result  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from diffusion.precision import name as precision_name  # noqa: E402
from diffusion.training import TrainConfig, Trainer  # noqa: E402


def images_per_second(step_fn, steps: int, batch: int, warmup: int = 3) -> float:
    """Throughput of `steps` calls of step_fn(i) after `warmup` untimed ones."""
    for i in range(warmup):
        step_fn(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step_fn(i)
    return steps * batch / (time.perf_counter() - t0)


def flops_per_image(step_fn, batch: int) -> float:
    """FLOPs of one training step (forward, backward; the optimiser's elementwise updates are not counted) / batch."""
    with FlopCounterMode(display=False) as counter:
        step_fn(0)
    return counter.get_total_flops() / batch


def ours_trainer(precision: str, batch: int, architecture: dict, out: str, compile: bool = False,
                 channels_last: bool = False) -> Trainer:
    """Our loop (Trainer.train_step: loss, backward, clipping, AdamW, EMA) on a shipped model's architecture."""
    trainer = Trainer(TrainConfig(precision=precision, batch_size=batch, max_steps=10_000, output_dir=out,
                                  progress=False, compile=compile, **architecture))
    if channels_last:  # in place: the optimiser keeps the same parameters; convolutions then output channels_last
        trainer.model.to(memory_format=torch.channels_last)
    trainer.model.train()
    return trainer


def ours(precision: str, steps: int, batch: int, architecture: dict, compile: bool = False,
         channels_last: bool = False) -> float:
    with tempfile.TemporaryDirectory() as out:
        trainer = ours_trainer(precision, batch, architecture, out, compile, channels_last)
        return images_per_second(trainer.train_step, steps, batch)


def peer(precision: str, steps: int, batch: int) -> float:
    return images_per_second(PeerTrainer(precision, batch).step, steps, batch)


def training_flops(batch: int) -> dict[str, float]:
    """FLOPs per trained image of each loop (counted eagerly in fp32; autocast and compiling do not change them)."""
    with tempfile.TemporaryDirectory() as out:
        flops = {name: flops_per_image(ours_trainer("fp32", batch, arch, out).train_step, batch)
                 for name, arch in (("ours", DEFAULT), ("ours_fast", FAST))}
    flops["peer"] = flops_per_image(PeerTrainer("fp32", batch).step, batch)
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each times every configuration once, in turn, so that a drift of the shared "
                             "machine's speed hits all of them; figures are medians over the rounds")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size")
    parser.add_argument("--compile", action="store_true", help="also time our models with torch.compile (bf16)")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time our default model's bf16 step in the channels_last layout")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    ceilings = ceiling.measure()
    print(f"matmul ceiling: fp32 {ceilings['fp32_gflops']:.0f} GFLOP/s, bf16 {ceilings['bf16_gflops']:.0f} GFLOP/s")
    flops = training_flops(args.batch_size)
    print("training FLOPs per image: " + ", ".join(f"{k} {v / 1e9:.3f} G" for k, v in flops.items()))
    result = {**ceilings, **{f"{k}_train_flops_per_image": v for k, v in flops.items()}}

    # (label, model whose FLOPs count, precision, timing function)
    runs = [(f"{name}_{precision}", name, precision, fn)
            for name, fn in (("ours", lambda p: ours(p, args.steps, args.batch_size, DEFAULT)),
                             ("ours_fast", lambda p: ours(p, args.steps, args.batch_size, FAST)),
                             ("peer", lambda p: peer(p, args.steps, args.batch_size)))
            for precision in ("fp32", "bf16")]
    if args.compile:
        runs += [(f"{name}_bf16_compiled", name, "bf16",
                  lambda p, a=architecture: ours(p, args.steps, args.batch_size, a, compile=True))
                 for name, architecture in (("ours", DEFAULT), ("ours_fast", FAST))]
    if args.channels_last:
        runs.append(("ours_bf16_channels_last", "ours", "bf16",
                     lambda p: ours(p, args.steps, args.batch_size, DEFAULT, channels_last=True)))
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        rounds.append({label: fn(precision) for label, _, precision, fn in runs})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.0f}" for k, v in rounds[-1].items()), flush=True)
    for label, name, precision, _ in runs:
        img_s = statistics.median(r[label] for r in rounds)
        gflops = img_s * flops[name] / 1e9
        share = gflops / ceilings[f"{precision}_gflops"]
        result[f"{label}_img_s"], result[f"{label}_ceiling_share"] = img_s, share
        print(f"{label.replace('_', ' ')}: {img_s:.0f} img/s (median of {args.rounds} rounds of {args.steps} steps, "
              f"batch {args.batch_size}), {gflops:.0f} GFLOP/s = {100 * share:.0f}% of the {precision} matmul "
              f"ceiling")

    def ratio(a: str, b: str) -> float:
        """Median over rounds of a / b: both timed in the same round, minutes apart at most."""
        return statistics.median(r[a] / r[b] for r in rounds)

    # what the loop's default, --precision auto, trains in on this machine (one timed pass each, diffusion.precision)
    picked = {}
    for name, architecture in (("ours", DEFAULT), ("ours_fast", FAST)):
        with tempfile.TemporaryDirectory() as out:
            trainer = ours_trainer("auto", args.batch_size, architecture, out)
        picked[name] = f"{name}_{precision_name(trainer.autocast_dtype)}"
        result[f"{name}_auto_precision"] = trainer.precision_reason
        print(f"{name.replace('_', ' ')}: --precision auto picks {trainer.precision_reason}")
    result["ours_over_peer_fp32"] = ratio(picked["ours"], "peer_fp32")
    result["ours_fast_over_peer_fp32"] = ratio(picked["ours_fast"], "peer_fp32")
    default, fast = picked["ours"].removeprefix("ours_"), picked["ours_fast"].removeprefix("ours_fast_")
    per_round = ", ".join(f"{r[picked['ours']] / r['peer_fp32']:.2f}" for r in rounds)
    print(f"ours (auto: {default}) / peer fp32 = {result['ours_over_peer_fp32']:.2f}x; ours fp32 / peer fp32 = "
          f"{ratio('ours_fp32', 'peer_fp32'):.2f}x; ours bf16 / peer bf16 = {ratio('ours_bf16', 'peer_bf16'):.2f}x; "
          f"ours-fast (auto: {fast}) / peer fp32 = {result['ours_fast_over_peer_fp32']:.2f}x (per round, ours auto "
          f"/ peer fp32: {per_round})")
    # The most a loop with the default model's FLOPs could reach: every FLOP at the higher matmul ceiling.
    best = max(ceilings["fp32_gflops"], ceilings["bf16_gflops"])
    bound = best * 1e9 / flops["ours"] / result["peer_fp32_img_s"]
    print(f"upper bound for the default model, all its FLOPs at the higher matmul ceiling ({best:.0f} GFLOP/s): "
          f"{bound:.2f}x peer fp32")
    result["ours_bound_over_peer_fp32"] = bound
    write_result("training_throughput", {**result, "batch_size": args.batch_size, "steps": args.steps,
                                         "rounds": rounds})


if __name__ == "__main__":
    main()
